"""What else might make the CPU default (OpenVINO bf16) faster: rewrites and settings, A/B.

    python bench/openvino_variants.py [--data ../shared/data] [--rounds 10]
                                      [--out bench/results/openvino-variants.json]

The shipped graph against variants of it, all at 640x512 with the shipped weights and rule
``saliency+cam``, compiled with the engine's own settings, and timed interleaved in one process
(each round times every variant once on the same real pair, resized), since this machine's
speed drifts by up to 2x from minute to minute. Each variant reports its median ms per pair, its median
per-round speed against the shipped graph, and its 8-bit output against the fp32 eager
reference on real pairs (mean and max gray levels, as the engine tests judge: bf16 must stay
within mean 0.5 and max 4).

Variants:

- ``base_detail_as_one_conv``: conv3 and conv4 both read f2, so they are one 64 -> 128
  convolution (wider GEMM tiles for AMX), tanh, and a channel split. Same function.
- ``encoder_as_one_batch``: both cameras through the encoder as one batch of 2, split after.
  Same function.
- ``denormals_flushed``, ``tbb_auto_partitioner``: OpenVINO CPU properties
  (``CPU_DENORMALS_OPTIMIZATION``, ``TBB_PARTITIONER``).
- ``int8_convolutions``: the engine's ``int8`` precision (:mod:`streamfuse.engines.int8`):
  the ten convolutions that read and write 64-channel maps in int8 (AMX int8 has twice bf16's
  rate), their input ranges calibrated on the repository's sample pairs as the engine does.
  Judged on flir-test and TNO pairs (``--accuracy-sets`` adds flir-train), none of them
  among the samples.
- ``int8_symmetric``: the same, with every input range made symmetric about zero (signed int8,
  ``[-128, 127]`` steps of ``max(|low|, high) / 127``), another way to rid the convolutions of
  zero points (OpenVINO convolves an input with a zero point 1.4-1.9x slower) than the engine's
  shift (:func:`streamfuse.engines.int8.quantize_convolution`); its price is a 1.6-1.8x
  coarser step on the lopsided maps out of PReLU (about -3 to 12).
- ``int8_pad_after_quantize``: int8, each shifted convolution's zero border padded after its
  FakeQuantize (with the shifted zero, ``-low``, a level of ``[0, high - low]``) instead of
  before the shift, so that the shift and FakeQuantize could join the producer's element-wise
  pass and the pad move one byte per value instead of two. Same function.
- ``int8_planes_as_batch``: int8, the fusion layer's activity planes (4 maps x 2 cameras)
  stacked along the batch axis instead of the channels, and the guided filter's window sums
  likewise, so that OpenVINO's concatenations and splits of them are free (in place, outermost
  axis) instead of its reference kernels' strided copies. Same function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.checkpoint import load_checkpoint  # noqa: E402
from streamfuse.engines import build_fuser  # noqa: E402
import streamfuse.engines.int8 as int8  # noqa: E402
import streamfuse.fusion as fusion  # noqa: E402
from streamfuse.engines.int8 import (calibration_pairs, input_ranges,  # noqa: E402
                                     quantize_wide_convolutions)
from streamfuse.filters import box_filter  # noqa: E402
from streamfuse.engines.openvino_engine import export_program  # noqa: E402
from streamfuse.engines.optimize import rewrite_for_graph_compiler  # noqa: E402
from streamfuse.fuser import DEFAULT_WEIGHTS, FusionNet  # noqa: E402
from streamfuse.model import Features, fold_model  # noqa: E402

HEIGHT, WIDTH = 512, 640
RULE = "saliency+cam"
DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))


class BaseDetailAsOneConv(nn.Module):
    """The encoder with conv3 and conv4 (both ``tanh(conv(f2))``) as one 64 -> 128 conv."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.conv1, self.conv2 = encoder.conv1, encoder.conv2
        base, detail = encoder.conv3, encoder.conv4
        self.pad, self.features = base[0], base.conv.out_channels
        self.conv = nn.Conv2d(base.conv.in_channels, 2 * self.features, 3,
                              padding=base.conv.padding, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([base.conv.weight, detail.conv.weight]))
            self.conv.bias.copy_(torch.cat([base.conv.bias, detail.conv.bias]))

    def forward(self, image: torch.Tensor) -> Features:
        f1 = self.conv1(image)
        f2 = self.conv2(f1)
        both = torch.tanh(self.conv(self.pad(f2)))
        return Features(f1, f2, both[:, : self.features], both[:, self.features:])


class EncoderAsOneBatch(nn.Module):
    """FusionNet with both cameras encoded as one batch of 2B, split after."""

    def __init__(self, net: FusionNet):
        super().__init__()
        self.encoder, self.fusion, self.decoder = net.encoder, net.fusion, net.decoder

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        batch = ir.shape[0]
        features = self.encoder(torch.cat([ir, vis]))
        ir_features = tuple(x[:batch] for x in features)
        vis_features = tuple(x[batch:] for x in features)
        return self.decoder(Features(*self.fusion(ir_features, vis_features)))


def shift_input_padding_after(node, low: float, high: float, weights, rounded: np.ndarray) -> None:
    """``int8._shift_input_to_zero`` with the zero border padded after the FakeQuantize, with
    the shifted zero ``-low`` (on a level of ``[0, high - low]``), not before the shift."""
    import openvino.opset13 as ops

    attributes = node.get_attributes()
    pads_begin, pads_end = list(attributes["pads_begin"]), list(attributes["pads_end"])
    shifted = ops.subtract(node.input(0).get_source_output(), ops.constant(np.float32(low)))
    source = int8.fake_quantize(shifted.output(0), 0.0, high - low, int8.ACTIVATION_LEVELS)
    if any(pads_begin + pads_end):
        source = ops.pad(source, np.array([0, 0, *pads_begin], np.int64),
                         np.array([0, 0, *pads_end], np.int64), "constant",
                         np.float32(-low)).output(0)
    convolution = ops.convolution(source, weights, attributes["strides"], [0, 0], [0, 0],
                                  attributes["dilations"])
    convolution.set_friendly_name(node.get_friendly_name())
    shift_back = low * rounded.reshape(rounded.shape[0], -1).sum(axis=1)
    output = ops.add(convolution, ops.constant(shift_back.astype(np.float32).reshape(1, -1, 1, 1)))
    for target in list(node.output(0).get_target_inputs()):
        target.replace_source_output(output.output(0))


def quantize_padding_after(model, ranges: list[tuple[float, float]]):
    """``quantize_wide_convolutions`` with :func:`shift_input_padding_after`."""
    shipped = int8._shift_input_to_zero
    int8._shift_input_to_zero = shift_input_padding_after
    try:
        return quantize_wide_convolutions(model, ranges)
    finally:
        int8._shift_input_to_zero = shipped


def _guided_filter_planes(guide: torch.Tensor, src: torch.Tensor, radius: int,
                          eps: float) -> torch.Tensor:
    """``guided_filter`` for (N, 1, H, W) planes, its window sums stacked along the batch."""
    planes = guide.shape[0]
    mean_guide, mean_src, mean_guide_sq, mean_guide_src = box_filter(
        torch.cat([guide, src, guide * guide, guide * src]), radius).split(planes)
    var_guide = (mean_guide_sq - mean_guide * mean_guide).clamp_min(0)
    slope = (mean_guide_src - mean_guide * mean_src) / (var_guide + eps)
    offset = mean_src - slope * mean_guide
    mean_slope, mean_offset = box_filter(torch.cat([slope, offset]), radius).split(planes)
    return mean_slope * guide + mean_offset


class PlanesAsBatch(nn.Module):
    """The fusion layer (rule ``saliency+cam`` on all four maps) with its activity planes
    stacked along the batch axis: (K B, 1, H, W), map-major, instead of (B, K, H, W)."""

    def __init__(self, layer: fusion.FusionLayer):
        super().__init__()
        self.config = layer.config

    def forward(self, ir_features, vis_features):
        config, batch = self.config, ir_features[0].shape[0]
        activity = torch.cat([fusion.l1_activity(x) for x in (*ir_features, *vis_features)])
        levels = fusion.quantize_activity(activity)
        saliency_ir, saliency_vis = fusion.saliency_map(levels, activity.dtype).chunk(2)
        raw_ir = fusion._share(saliency_ir, saliency_vis, config.eps)
        guide = levels.to(activity.dtype) / (fusion.SALIENCY_LEVELS - 1)
        refined_ir, refined_vis = _guided_filter_planes(
            guide, torch.cat([raw_ir, 1 - raw_ir]), config.guided_radius,
            config.guided_eps).clamp_min(0).chunk(2)
        weights = fusion._share(refined_ir, refined_vis, config.eps).split(batch)
        return tuple(fusion.fuse_maps(ir, vis, config, weight)
                     for ir, vis, weight in zip(ir_features, vis_features, weights))


def symmetric(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Ranges that ``quantize_wide_convolutions`` turns into signed int8 without a zero point:
    ``[-128 s, 127 s]`` with ``s = max(|low|, high) / 127`` (before its margin)."""
    return [(-max(-low, high) * 128 / 127, max(-low, high)) for low, high in ranges]


def load_pairs(folder: Path, count: int) -> list[list[np.ndarray]]:
    """The first ``count`` real pairs of ``folder`` (ir/, vis/) at their own size, as
    ``[ir, vis]`` (1, 1, H, W) float32 in [0, 1]."""
    pairs = []
    for ir_path in sorted((folder / "ir").iterdir())[:count]:
        vis_path = next((folder / "vis").glob(ir_path.stem + ".*"))
        pairs.append([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[None, None].astype(np.float32)
                      / 255 for path in (ir_path, vis_path)])
    return pairs


def converted_model(net: nn.Module, static: bool = True):
    """The OpenVINO model of ``net`` for one pair, as the engine converts it; at 640x512 when
    ``static``, else any height and width."""
    import openvino as ov

    with torch.no_grad():
        model = ov.convert_model(export_program(net, 1))
    if static:
        model.reshape({port: ov.PartialShape([1, 1, HEIGHT, WIDTH]) for port in model.inputs})
    return model


def compiled(model, threads: int, precision: str = "bf16", **properties):
    """``model`` compiled with the engine's settings (and ``properties``)."""
    import openvino as ov

    settings = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads, **properties}
    return ov.Core().compile_model(model, "CPU", settings)


def gray_levels(fused: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(fused, np.float64).squeeze() * 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with flir-test and tno (default ../shared/data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--accuracy-pairs", type=int, default=5, help="per data set")
    parser.add_argument("--accuracy-sets", default="flir-test,tno",
                        help="comma list of data sets under --data to judge accuracy on")
    parser.add_argument("--variants", help="comma list of variants to run besides shipped "
                        "(default all)")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench/results/openvino-variants.json"))
    args = parser.parse_args()
    accuracy_sets = args.accuracy_sets.split(",")
    missing = [name for name in {"flir-test", *accuracy_sets} if not (args.data / name).is_dir()]
    if missing:
        sys.exit(f"openvino_variants: {args.data} lacks {', '.join(missing)}; "
                 "pass --data with the real pairs")
    torch.set_num_threads(args.threads)
    machine = machine_description(torch.device("cpu"))
    model, _ = load_checkpoint(DEFAULT_WEIGHTS)

    def shipped_net() -> FusionNet:
        return rewrite_for_graph_compiler(FusionNet(fold_model(model), RULE).eval())

    def planes_as_batch_net() -> FusionNet:
        net = shipped_net()
        net.fusion = PlanesAsBatch(net.fusion)
        return net

    def one_conv_net() -> FusionNet:
        net = shipped_net()
        net.encoder = BaseDetailAsOneConv(net.encoder)
        return net

    import openvino as ov

    ranges = input_ranges(ov.Core(), converted_model(shipped_net(), static=False),
                          calibration_pairs())
    # name -> (network, int8 ranges or None, extra OpenVINO properties, int8 quantizer)
    recipes = {
        "shipped": (shipped_net, None, {}, None),
        "base_detail_as_one_conv": (one_conv_net, None, {}, None),
        "encoder_as_one_batch": (lambda: EncoderAsOneBatch(shipped_net()), None, {}, None),
        "denormals_flushed": (shipped_net, None, {"CPU_DENORMALS_OPTIMIZATION": True}, None),
        "tbb_auto_partitioner": (shipped_net, None, {"TBB_PARTITIONER": "AUTO"}, None),
        "int8_convolutions": (shipped_net, ranges, {}, None),
        "int8_symmetric": (shipped_net, symmetric(ranges), {}, None),
        "int8_pad_after_quantize": (shipped_net, ranges, {}, quantize_padding_after),
        "int8_planes_as_batch": (planes_as_batch_net, ranges, {}, None),
    }
    if args.variants:
        wanted = {"shipped", *args.variants.split(",")}
        recipes = {name: recipe for name, recipe in recipes.items() if name in wanted}

    def build(name: str, static: bool, **more_properties):
        network, int8_ranges, properties, quantizer = recipes[name]
        properties = {**properties, **more_properties}
        converted = converted_model(network(), static)
        if int8_ranges is not None:
            (quantizer or quantize_wide_convolutions)(converted, int8_ranges)
        return compiled(converted, args.threads, **properties)

    judged = {name: load_pairs(args.data / name, args.accuracy_pairs)
              for name in accuracy_sets}
    reference = build_fuser(model, RULE, engine="eager", precision="fp32", device="cpu")
    accuracy = {name: {} for name in recipes}
    any_size = {name: build(name, static=False) for name in recipes}
    for data_set, pairs in judged.items():
        for index, pair in enumerate(pairs):
            with torch.inference_mode():
                expected = gray_levels(reference.fuse_tensors(
                    *(torch.from_numpy(image) for image in pair)).numpy())
            for name, request in any_size.items():
                difference = np.abs(gray_levels(request(pair)[0]) - expected)
                accuracy[name][f"{data_set}/{index}"] = {
                    "mean": round(float(difference.mean()), 3), "max": int(difference.max()),
                    "pixels_over_4": int((difference > 4).sum())}
    del any_size

    variants = {name: build(name, static=True) for name in recipes}
    pair = [cv2.resize(image[0, 0], (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)[None, None]
            for image in load_pairs(args.data / "flir-test", 1)[0]]
    for request in variants.values():
        request(pair)
    seconds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, request in variants.items():
            started = time.perf_counter()
            request(pair)
            seconds[name].append(time.perf_counter() - started)
    del variants
    # Where the time goes (OpenVINO's per-node counters, a separate compile: counting costs a
    # little): milliseconds per node type and kernel, median of 3 calls after one.
    node_times = {}
    for name in recipes:
        request = build(name, static=True, PERF_COUNT=True).create_infer_request()
        calls = []
        for call in range(4):
            request.infer(pair)
            if call:
                totals: dict[str, float] = {}
                for node in request.profiling_info:
                    key = f"{node.node_type} {node.exec_type}"
                    totals[key] = totals.get(key, 0.0) + node.real_time.total_seconds() * 1000
                calls.append(totals)
        node_times[name] = {key: round(float(np.median([c.get(key, 0.0) for c in calls])), 2)
                            for key in sorted(calls[0], key=lambda k: -calls[0][k])
                            if calls[0][key] >= 0.5}
    shipped = np.asarray(seconds["shipped"])
    rows = {}
    for name in recipes:
        per_pair = accuracy[name].values()
        rows[name] = {
            "median_ms": round(float(np.median(seconds[name])) * 1000, 1),
            "speed_vs_shipped_median_of_rounds": round(float(np.median(
                shipped / np.asarray(seconds[name]))), 3),
            "ms_per_round": [round(value * 1000) for value in seconds[name]],
            "ms_by_node_type": node_times[name],
            **({"speed_vs_int8_convolutions_median_of_rounds": round(float(np.median(
                np.asarray(seconds["int8_convolutions"]) / np.asarray(seconds[name]))), 3)}
               if name.startswith("int8_") and "int8_convolutions" in seconds else {}),
            "gray_levels_vs_fp32_eager": {
                "mean_of_means": round(float(np.mean([row["mean"] for row in per_pair])), 3),
                "worst_mean": max(row["mean"] for row in per_pair),
                "max": max(row["max"] for row in per_pair),
                "within_bf16_tolerance": all(row["mean"] <= 0.5 and row["max"] <= 4
                                             for row in per_pair),
                "per_pair": accuracy[name],
            },
        }
    machine["load_average_end"] = list(os.getloadavg())
    result = {
        "what": __doc__.splitlines()[0],
        "resolution": f"{WIDTH}x{HEIGHT}", "rule": RULE, "threads": args.threads,
        "rounds": args.rounds,
        "int8_calibration": {"pairs": "samples/pairs (as the engine)",
                             "input_ranges": [[round(low, 3), round(high, 3)]
                                              for low, high in ranges]},
        "accuracy_pairs": f"first {args.accuracy_pairs} of {' and of '.join(accuracy_sets)}, own size",
        "variants": rows,
        "machine": machine,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'variant':26s} {'median ms':>9s} {'speed':>6s}  gray levels vs fp32: mean/worst/max")
    for name, row in rows.items():
        gray = row["gray_levels_vs_fp32_eager"]
        print(f"{name:26s} {row['median_ms']:9.1f} {row['speed_vs_shipped_median_of_rounds']:5.2f}x"
              f"  {gray['mean_of_means']:.3f} / {gray['worst_mean']:.3f} / {gray['max']}"
              f"{'' if gray['within_bf16_tolerance'] else '  (outside the bf16 tolerance)'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
