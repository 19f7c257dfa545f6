"""CPU box filter: average pooling against depthwise convolutions with ones. A/B, 640x512.

    python bench/box_filter_cpu.py [--data ../shared/data] [--rounds 10]
                                   [--out bench/results/box-filter-cpu.json]

The saliency rule's guided filter box-filters two stacks of planes per pair (the four window
means of 2x4 planes, 16 channels, then the two model means, 8 channels; radius 7) and the l1
rule one (2x4 planes, radius 1). PyTorch's CPU average pooling sums those windows at a few
GB/s; a depthwise convolution with a row, then a column of ones (oneDNN) computes the same sums
in the same order. ``streamfuse.filters.box_filter`` takes the convolutions for float32 on the
CPU since session 23; this measures both in one process, interleaved (each round times every
variant once), without the process-wide allocator setting of the batch commands:

- ``box filter``: the filter alone on random float32 planes of those shapes, eager and
  ``torch.compile``d; each convolution result is compared with the pooling's, bit for bit, and
  both with a float64 reference.
- ``fusion layer``: :class:`streamfuse.fusion.FusionLayer` with rule ``saliency+cam`` minus the
  same layer with rule ``sum``, on the eight real encoder maps of flir-test's first pair at
  640x512 (fp32 and bf16, channels_last, as the eager and compile engines hand them over);
  the fused maps of both variants must be identical.
- ``pair``: one whole 640x512 pair through ``create_fuser`` (eager fp32 and bf16, compile fp32
  and bf16: the engines whose fusion layer runs in PyTorch), same pair; the fused images of both
  variants must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse import filters  # noqa: E402
from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.engines import create_fuser  # noqa: E402
from streamfuse.fusion import FusionConfig, FusionLayer  # noqa: E402

from fusion_layer_outside_graph import encoder_maps, timing_pair  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))
HEIGHT, WIDTH = 512, 640
PAIR_ENGINES = (("eager", "fp32"), ("eager", "bf16"), ("compile", "fp32"), ("compile", "bf16"))
# (channels, radius) of each box filter a 640x512 pair's fusion layer runs (batch of 2 cameras).
FILTERS = ((16, 7), (8, 7), (4, 1))
SUMS_BY_CONVOLUTION = filters._sums_by_convolution


def by_pooling(_x: torch.Tensor) -> bool:
    return False


class Variant:
    """A call timed with the box filter summing by pooling or by convolution."""

    def __init__(self, call, convolution: bool):
        self.call, self.convolution = call, convolution

    def __call__(self):
        filters._sums_by_convolution = SUMS_BY_CONVOLUTION if self.convolution else by_pooling
        try:
            return self.call()
        finally:
            filters._sums_by_convolution = SUMS_BY_CONVOLUTION


def box_filter_variants() -> tuple[dict, dict]:
    """name -> {pooling, convolution} calls of the box filter alone, and their agreement."""
    variants, agreement = {}, {}
    generator = torch.Generator().manual_seed(0)
    for channels, radius in FILTERS:
        planes = torch.rand(2, channels, HEIGHT, WIDTH, generator=generator)
        exact = filters.box_filter(planes.double(), radius)
        for mode in ("eager", "inductor"):
            box = torch.compile(filters.box_filter) if mode == "inductor" else filters.box_filter
            name = f"box filter {mode} {channels} channels r{radius}"
            variants[name] = {
                kind: Variant(lambda box=box, planes=planes, radius=radius: box(planes, radius),
                              kind == "convolution")
                for kind in ("pooling", "convolution")}
            outputs = {kind: call() for kind, call in variants[name].items()}
            agreement[name] = {
                "identical": bool(torch.equal(outputs["pooling"], outputs["convolution"])),
                **{f"max_abs_vs_float64_{kind}": float((out.double() - exact).abs().max())
                   for kind, out in outputs.items()}}
    return variants, agreement


def fusion_layer_variants(data: Path) -> tuple[dict, dict]:
    """name -> {pooling, convolution} pairs of calls (rule, rule sum) of the fusion layer."""
    ir_maps, vis_maps = encoder_maps(*timing_pair(data))
    variants, agreement = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        maps = [tuple(x.to(dtype).contiguous(memory_format=torch.channels_last) for x in camera)
                for camera in (ir_maps, vis_maps)]
        for mode in ("eager", "inductor"):
            name = f"fusion layer {mode} {str(dtype).split('.')[-1]}"
            variants[name] = {}
            for kind in ("pooling", "convolution"):
                calls = []
                for rule in ("saliency+cam", "sum"):
                    layer = FusionLayer(FusionConfig(rule=rule)).eval()
                    layer = torch.compile(layer) if mode == "inductor" else layer
                    calls.append(Variant(lambda layer=layer, maps=maps: layer(*maps),
                                         kind == "convolution"))
                variants[name][kind] = calls
            fused = {kind: calls[0]() for kind, calls in variants[name].items()}
            agreement[name] = {"identical": all(
                torch.equal(a, b) for a, b in zip(fused["pooling"], fused["convolution"]))}
    return variants, agreement


def pair_variants(data: Path) -> tuple[dict, dict]:
    """name -> {pooling, convolution} calls fusing one whole pair with an engine."""
    ir_frame, vis_frame = timing_pair(data)
    variants, agreement = {}, {}
    for engine, precision in PAIR_ENGINES:
        fuser = create_fuser(engine=engine, precision=precision)
        name = f"pair {engine} {precision}"
        variants[name] = {kind: Variant(lambda fuser=fuser: fuser.fuse(ir_frame, vis_frame),
                                        kind == "convolution")
                          for kind in ("pooling", "convolution")}
        fused = {kind: call() for kind, call in variants[name].items()}
        agreement[name] = {"identical": bool(np.array_equal(fused["pooling"], fused["convolution"]))}
    return variants, agreement


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=REPO_ROOT / "bench" / "results" / "box-filter-cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Each compiled call exists twice (pooling and convolution are separate graphs).
    torch._dynamo.config.cache_size_limit = 64
    with torch.inference_mode():
        boxes, box_agreement = box_filter_variants()
        layers, layer_agreement = fusion_layer_variants(args.data)
        pairs, pair_agreement = pair_variants(args.data)
        for calls in [*boxes.values(), *layers.values(), *pairs.values()]:
            for call in calls.values():
                for one in (call if isinstance(call, list) else [call]):
                    one()  # warm (and compiled) once more
        box_seconds = {name: {kind: [] for kind in calls} for name, calls in boxes.items()}
        layer_seconds = {name: {kind: [] for kind in calls} for name, calls in layers.items()}
        pair_seconds = {name: {kind: [] for kind in calls} for name, calls in pairs.items()}
        for _ in range(args.rounds):
            for name, calls in boxes.items():
                for kind, call in calls.items():
                    box_seconds[name][kind].append(timed(call))
            for name, calls in layers.items():
                for kind, (rule_call, sum_call) in calls.items():
                    layer_seconds[name][kind].append(timed(rule_call) - timed(sum_call))
            for name, calls in pairs.items():
                for kind, call in calls.items():
                    pair_seconds[name][kind].append(timed(call))

    results = {}
    for seconds, agreement in ((box_seconds, box_agreement), (layer_seconds, layer_agreement),
                               (pair_seconds, pair_agreement)):
        for name, kinds in seconds.items():
            ms = {kind: float(np.median(values) * 1e3) for kind, values in kinds.items()}
            results[name] = {"pooling_ms": ms["pooling"], "convolution_ms": ms["convolution"],
                             "speedup": ms["pooling"] / ms["convolution"], **agreement[name]}
            print(f"{name:42s} pooling {ms['pooling']:7.1f} ms  convolution "
                  f"{ms['convolution']:7.1f} ms  {results[name]['speedup']:4.2f}x  "
                  f"identical {agreement[name]['identical']}")
    report = {"machine": machine_description(torch.device("cpu")), "resolution": f"{WIDTH}x{HEIGHT}",
              "rounds": args.rounds, "threads": args.threads,
              "fusion_layer_ms": "rule saliency+cam minus rule sum, median over rounds",
              "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
