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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
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
        "machine": machine,
    }
    machine["load_average_end"] = list(os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, ms in rows.items():
        print(f"{name:36s} {ms:6.2f} ms  {result['read_gb_per_s'][name]:5.1f} GB/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
