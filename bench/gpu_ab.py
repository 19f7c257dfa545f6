"""A/B of candidate changes to the compiled CUDA path, in one process on one input: each variant
is built, compiled (``torch.compile`` with CUDA graphs, fp16 autocast) and timed right after, and
the first variant is timed again at the end to show drift. Rule saliency+cam, and rule sum for
the network alone (the fusion layer's share).

    python bench/gpu_ab.py [--device cuda] [--batch 32] [--size 640x512] [--set next] [--out F.json]

Sets of variants:

- ``session4``: what the session-4 run measured (bench/results/gpu-h200-ab-histogram-tiles-
  channel-padding.json): one histogram per plane vs 16/64/256 pixel tiles
  (``streamfuse.fusion.CUDA_HISTOGRAM_TILES``), with and without conv1's input padded to 8
  channels (``pad_input_channels``; that run widened conv7's output as well, since dropped).
- ``next``: candidates not measured yet: the graph rewrites the OpenVINO engine uses
  (``rewrite_for_graph_compiler``: LeakyReLU, a decoder without concatenations), Inductor's
  coordinate-descent tuning of its Triton kernels, and freezing (weights as constants).
- ``session5``: conv7 as a 1x1 convolution to its tap planes plus a shifted sum
  (``taps_for_narrow_outputs``), and conv1 as a pointwise sum of its taps as well
  (``taps_for_narrow_convs``), alone and with coordinate-descent tuning (measured in session 5:
  bench/results/gpu-h200-ab-session5.json, before the replay columns existed; on an H100 in
  session 12 with them: bench/results/gpu-h100-ab-s12.json, after which the compile engine took
  all three).

Every variant also reports ``replay_diff_max`` and ``replay_pixels_differing``: its first call
(run outside the CUDA graph) against a call after timing (a graph replay).
- ``session14``: the compile engine of session 12 against the same with conv2-conv4's
  activations and the fusion layer's statistics in one Triton kernel
  (bench/activation_stats.py), and the network alone (rule sum) for the share.
- ``session15``: the saliency rule's guided filter on fp16 planes instead of float32
  (:func:`guided_filter_fp16`), against the shipped engine and the network alone; on an H200 in
  session 18, 789 -> 814 pairs/s (bench/results/gpu-h200-ab-s18.json).
- ``deterministic``: the shipped engine against the same with ``torch.backends.cudnn.deterministic``
  (the engine's output changed between calls in sessions 5 and 14, and by 1 level on 3 pixels
  with cuDNN's algorithm search off in session 18's probe, ``bench/gpu_determinism.py``). On an
  H200 in session 18 the second variant failed: cuDNN found no deterministic algorithm for one
  fp16 convolution under CUDA-graph capture (bench/results/gpu-h200-ab-deterministic-s18-log.txt).
- ``autotune``: Inductor's max-autotune (Triton convolutions with fused epilogues), against the
  current path; minutes of compilation, so on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import streamfuse.fusion as fusion  # noqa: E402
from streamfuse.bench import as_batch, bench_pair, parse_resolutions, time_calls  # noqa: E402
from streamfuse.commands.bench import load_model  # noqa: E402
from bench.activation_stats import with_activation_stats  # noqa: E402
from streamfuse.filters import guided_filter  # noqa: E402
from streamfuse.engines.optimize import (  # noqa: E402
    fold_zero_padding, pad_input_channels, rewrite_for_graph_compiler, taps_for_narrow_convs,
    taps_for_narrow_outputs,
)
from streamfuse.fuser import Fuser, to_uint8  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    rule: str = "saliency+cam"
    pad: bool = True  # conv1's input padded to 8 channels
    graph_rewrites: bool = False  # rewrite_for_graph_compiler
    tiles: int = 64  # CUDA_HISTOGRAM_TILES
    narrow_taps: str = "none"  # "outputs": taps_for_narrow_outputs (conv7); "all": and conv1
    inductor: dict = field(default_factory=dict)  # extra torch.compile options
    activation_stats: bool = False  # with_activation_stats: the Triton activation-statistics kernel
    guided_fp16: bool = False  # the saliency rule's guided filter on fp16 planes (see guided_filter_fp16)
    cudnn_deterministic: bool = False  # cuDNN restricted to bitwise-reproducible algorithms


def against_session12(name: str, **candidate) -> list[Variant]:
    """The compile engine as shipped since session 12, the same with ``candidate``'s changes, and
    the network alone (rule sum) for the fusion layer's share."""
    shipped = dict(narrow_taps="all", inductor={"coordinate_descent_tuning": True})
    return [Variant("session12", **shipped), Variant(name, **shipped, **candidate),
            Variant("net-session12", rule="sum", **shipped)]


SETS = {
    "session4": [
        Variant("before", pad=False, tiles=1), Variant("tiles64", pad=False),
        Variant("tiles64+pad"), Variant("tiles256+pad", tiles=256), Variant("tiles16+pad", tiles=16),
        Variant("net-before", rule="sum", pad=False, tiles=1), Variant("net-pad", rule="sum"),
    ],
    "next": [
        Variant("current"), Variant("graph-rewrites", graph_rewrites=True),
        Variant("coordinate-descent", inductor={"coordinate_descent_tuning": True}),
        Variant("freezing", inductor={"freezing": True}),
        Variant("net-current", rule="sum"), Variant("net-graph-rewrites", rule="sum", graph_rewrites=True),
    ],
    "session5": [
        Variant("session4"), Variant("conv7-planes", narrow_taps="outputs"),
        Variant("conv1-taps+conv7-planes", narrow_taps="all"),
        Variant("taps+coordinate-descent", narrow_taps="all", inductor={"coordinate_descent_tuning": True}),
        Variant("net-session4", rule="sum"), Variant("net-taps", rule="sum", narrow_taps="all"),
    ],
    "session14": against_session12("activation-stats", activation_stats=True),
    "session15": against_session12("guided-fp16", guided_fp16=True),
    # Two variants only: made to fit what was left of a lease (about 4 minutes, one cold compile).
    "deterministic": against_session12("cudnn-deterministic", cudnn_deterministic=True)[:2],
    # Triton convolution templates with fused epilogues; compiles for minutes: run on its own.
    "autotune": [Variant("current"), Variant("max-autotune", inductor={"max_autotune": True})],
}


def guided_filter_fp16(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """The guided filter on half-precision planes (the autocast dtype: fp16 on CUDA), half the
    memory traffic of its float32 box filters, returned in float32. On 20 flir-test and TNO
    pairs, fp32 eager on a CPU, the fused images differ from the float32 filter's by mean 0.001
    gray levels with fp16 planes (0.01 with bf16), and by at most 1 level (session 14)."""
    device = guide.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float16
    return guided_filter(guide.to(dtype), src.to(dtype), radius, eps).float()


def build(variant: Variant, model, device: torch.device, ir: torch.Tensor, vis: torch.Tensor):
    """A call running ``variant`` on (ir, vis); compiled on its first call (so the module
    settings made here hold when it compiles)."""
    fusion.CUDA_HISTOGRAM_TILES = variant.tiles
    fusion.guided_filter = guided_filter_fp16 if variant.guided_fp16 else guided_filter
    # Read when cuDNN picks each convolution's algorithm: at the first calls and the graph capture.
    torch.backends.cudnn.deterministic = variant.cudnn_deterministic
    net = Fuser(model, variant.rule, device, fold_bn=True).net
    if variant.graph_rewrites:
        rewrite_for_graph_compiler(net)
    else:
        fold_zero_padding(net)
    if variant.narrow_taps == "all":
        taps_for_narrow_convs(net)
    elif variant.narrow_taps == "outputs":
        taps_for_narrow_outputs(net)
    if variant.pad:
        pad_input_channels(net)
    net = net.to(memory_format=torch.channels_last)
    if variant.activation_stats:
        net = with_activation_stats(net)
    cuda = device.type == "cuda"
    # mode="reduce-overhead" is triton.cudagraphs; options and mode cannot both be given.
    options = {"triton.cudagraphs": True} if cuda else {}
    compiled = torch.compile(net, fullgraph=True, dynamic=False, options={**options, **variant.inductor})
    dtype = torch.float16 if cuda else torch.bfloat16

    def call():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            return compiled(ir, vis).float().clone()
    return call


def timing(call, device: torch.device, batch: int) -> dict:
    median = float(np.median(time_calls(call, device, warmup=3, min_iterations=20, seconds=1.5)))
    return {"ms": median * 1e3, "pairs_per_s": batch / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT")
    parser.add_argument("--set", default="next", choices=sorted(SETS))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gpu-ab.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    (width, height), = parse_resolutions(args.size)
    # Every variant is one more compiled entry of FusionNet.forward.
    torch._dynamo.config.recompile_limit = 64
    torch.backends.cudnn.benchmark = True
    model, _ = load_model(None)
    ir_image, vis_image = bench_pair(width, height)
    ir, vis = (as_batch(image, args.batch, device).contiguous(memory_format=torch.channels_last)
               for image in (ir_image, vis_image))
    variants = SETS[args.set]
    results, first_output, calls = {}, {}, {}
    for variant in variants:
        started = time.perf_counter()
        call = build(variant, model, device, ir, vis)
        output = call()
        build_s = time.perf_counter() - started
        reference = first_output.setdefault(variant.rule, output)
        levels = (to_uint8(output.cpu()).int() - to_uint8(reference.cpu()).int()).abs()
        results[variant.name] = {**timing(call, device, args.batch), "build_s": build_s,
                                 "diff_mean": float(levels.float().mean()), "diff_max": int(levels.max())}
        # First call (outside the CUDA graph) against a replay after timing.
        replay = (to_uint8(call().cpu()).int() - to_uint8(output.cpu()).int()).abs()
        results[variant.name].update(replay_diff_max=int(replay.max()),
                                     replay_pixels_differing=int((replay > 0).sum()))
        calls[variant.name] = call
        print(variant.name, results[variant.name], flush=True)
    first = variants[0]
    fusion.CUDA_HISTOGRAM_TILES = first.tiles  # its compiled graph's guards: no recompilation
    fusion.guided_filter = guided_filter_fp16 if first.guided_fp16 else guided_filter
    results[f"{first.name}-again"] = timing(calls[first.name], device, args.batch)
    print(f"{first.name}-again", results[f"{first.name}-again"], flush=True)
    networks = [v for v in variants if v.rule == "sum"]
    for variant in variants:
        same_network = [n for n in networks
                        if (n.pad, n.graph_rewrites, n.narrow_taps)
                        == (variant.pad, variant.graph_rewrites, variant.narrow_taps)]
        if variant.rule != "sum" and same_network:
            full, alone = results[variant.name]["ms"], results[same_network[0].name]["ms"]
            share = (full - alone) / alone
            results[variant.name]["fusion_share"] = share
            print(f"{variant.name}: fusion layer {100 * share:.0f}% of the network", flush=True)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report = {"device": gpu,
              "batch": args.batch, "size": args.size, "torch": torch.__version__, "set": args.set,
              "variants": [v.__dict__ for v in variants], "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
