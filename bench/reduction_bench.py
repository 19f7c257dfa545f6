"""Why the fusion layer costs what it does on the CPU: the read rate of its reductions.

    python bench/reduction_bench.py [--threads 2] [--out bench/results/reductions.json]

The fusion layer's largest cost under OpenVINO bf16 is 16 reductions of 64-channel 640x512 maps
(each of the 8 maps: the per-pixel l1 norm over channels for the saliency weights, the per-channel
mean magnitude for CAM). This measures, in one process, on one (1, 64, 512, 640) map:

- OpenVINO (bf16 inference precision) ``ReduceL1`` over the channels and over the pixels, the
  ops the exported fusion layer compiles to;
- a plain PyTorch ``sum`` of the same bf16 bytes: the rate at which this machine can read them.

Each is reported as milliseconds (median of the repeats) and GB/s of map bytes read, so the
question "how far are the reductions from the memory system's limit" has a measured answer.

Then, in the whole network (shipped weights, rule ``saliency+cam``, 640x512, OpenVINO bf16),
the fusion layer's ``sum |x|`` written other ways that OpenVINO might run faster: ``abs`` then
``sum``, the channel sum as a 1x1 convolution with ones, the pixel sum one axis at a time, the
pixel mean as adaptive average pooling. The variants run interleaved in one process (each
round times every variant once) and report their median per-pair time and their largest
difference from the ReduceL1 graph in gray levels.
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

import streamfuse.fusion as fusion  # noqa: E402
from streamfuse.bench import machine_description, time_calls  # noqa: E402

SHAPE = (1, 64, 512, 640)
CPU = torch.device("cpu")


def _openvino_node_ms(axes: list[int], threads: int, repeats: int) -> float:
    """Median time of the ReduceL1 node alone (OpenVINO's own per-node profile), bf16 map."""
    import openvino as ov
    import openvino.opset13 as ops

    parameter = ops.parameter(SHAPE, ov.Type.f32)
    # The map comes out of an op, as in the network, so the reduction reads bf16.
    feature = ops.tanh(parameter)
    reduced = ops.reduce_l1(feature, ops.constant(np.array(axes, np.int64)), True)
    model = ov.Model([reduced], [parameter])
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    data = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    for _ in range(3):
        request.infer([data])
    times = []
    for _ in range(repeats):
        request.infer([data])
        times.append(sum(info.real_time.total_seconds() for info in request.profiling_info
                         if info.node_type == "ReduceL1"))
    return float(np.median(times) * 1000)


# The shipped form, kept before any variant replaces fusion._l1_norm.
SHIPPED_L1_NORM = fusion._l1_norm


def _abs_then_sum(x: torch.Tensor, dim) -> torch.Tensor:
    return x.abs().sum(dim=dim, keepdim=True, dtype=fusion._weight_dtype(x))


def _channels_by_convolution(x: torch.Tensor, dim) -> torch.Tensor:
    if dim != 1:
        return SHIPPED_L1_NORM(x, dim)
    ones = torch.ones(1, x.shape[1], 1, 1, dtype=x.dtype)
    return torch.nn.functional.conv2d(x.abs(), ones).to(fusion._weight_dtype(x))


def _pixels_one_axis_at_a_time(x: torch.Tensor, dim) -> torch.Tensor:
    if dim != (2, 3):
        return SHIPPED_L1_NORM(x, dim)
    rows = torch.linalg.vector_norm(x, 1, dim=3, keepdim=True, dtype=fusion._weight_dtype(x))
    return rows.sum(dim=2, keepdim=True)


def _pixels_by_pooling(x: torch.Tensor, dim) -> torch.Tensor:
    if dim != (2, 3):
        return SHIPPED_L1_NORM(x, dim)
    mean = torch.nn.functional.adaptive_avg_pool2d(x.abs(), 1).to(fusion._weight_dtype(x))
    return mean * (x.shape[2] * x.shape[3])


GRAPH_VARIANTS = {
    "reduce_l1 (shipped)": SHIPPED_L1_NORM,
    "abs_then_sum": _abs_then_sum,
    "channels_by_1x1_convolution": _channels_by_convolution,
    "pixels_one_axis_at_a_time": _pixels_one_axis_at_a_time,
    "pixels_by_adaptive_pooling": _pixels_by_pooling,
}


def _graph_variants(threads: int, rounds: int) -> dict:
    """Median per-pair ms of the whole network with each ``GRAPH_VARIANTS`` form of the fusion
    layer's l1 norms, and its largest difference from the first one (gray levels)."""
    import openvino as ov

    from streamfuse.checkpoint import load_checkpoint
    from streamfuse.engines.openvino_engine import export_program
    from streamfuse.engines.optimize import rewrite_for_graph_compiler
    from streamfuse.fuser import DEFAULT_WEIGHTS, FusionNet
    from streamfuse.model import fold_model

    model, _ = load_checkpoint(DEFAULT_WEIGHTS)
    rng = np.random.default_rng(0)
    pair = [rng.random((1, 1, 512, 640), dtype=np.float32) for _ in range(2)]
    requests, fused = {}, {}
    try:
        for name, l1_norm in GRAPH_VARIANTS.items():
            fusion._l1_norm = l1_norm
            net = rewrite_for_graph_compiler(FusionNet(fold_model(model), "saliency+cam").eval())
            with torch.no_grad():
                converted = ov.convert_model(export_program(net, 1))
            converted.reshape({port: ov.PartialShape([1, 1, 512, 640])
                               for port in converted.inputs})
            compiled = ov.Core().compile_model(converted, "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY"})
            requests[name] = compiled.create_infer_request()
            requests[name].infer(pair)
            fused[name] = requests[name].get_output_tensor(0).data.copy()
    finally:
        fusion._l1_norm = SHIPPED_L1_NORM
    times = {name: [] for name in requests}
    for _ in range(rounds):
        for name, request in requests.items():
            started = time.perf_counter()
            request.infer(pair)
            times[name].append(time.perf_counter() - started)
    first = next(iter(fused.values()))
    return {name: {"median_ms": round(float(np.median(times[name])) * 1000, 1),
                   "max_diff_gray_levels": round(float(np.abs(fused[name] - first).max()) * 255, 2)}
            for name in requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8,
                        help="interleaved rounds of the graph variants")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench/results/reductions.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_description(CPU)
    feature = torch.randn(SHAPE).to(torch.bfloat16)
    gigabytes = feature.numel() * feature.element_size() / 1e9
    rows = {
        # A flat sum: PyTorch's vectorised bf16 reduction, a pure read of the map.
        "torch_sum_bf16": float(np.median(time_calls(
            feature.sum, CPU, warmup=3, min_iterations=args.repeats, seconds=0.0)) * 1000),
        "openvino_reduce_l1_channels_bf16": _openvino_node_ms([1], args.threads, args.repeats),
        "openvino_reduce_l1_pixels_bf16": _openvino_node_ms([2, 3], args.threads, args.repeats),
    }
    result = {
        "what": __doc__.splitlines()[0],
        "map_shape": list(SHAPE),
        "map_megabytes_bf16": round(gigabytes * 1000, 1),
        "threads": args.threads,
        "median_ms": {name: round(ms, 2) for name, ms in rows.items()},
        "read_gb_per_s": {name: round(gigabytes / (ms / 1000), 1) for name, ms in rows.items()},
        "whole_network_640x512_bf16": _graph_variants(args.threads, args.rounds),
        "machine": machine,
    }
    machine["load_average_end"] = list(os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, ms in rows.items():
        print(f"{name:36s} {ms:6.2f} ms  {result['read_gb_per_s'][name]:5.1f} GB/s")
    for name, row in result["whole_network_640x512_bf16"].items():
        print(f"network with {name:30s} {row['median_ms']:6.1f} ms per pair, "
              f"max diff {row['max_diff_gray_levels']:.2f} gray levels")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
