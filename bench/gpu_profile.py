"""Where the time of one fused batch goes on a GPU: the path's stages (encoder, fusion layer,
decoder) timed apart in eager mode, and the costliest kernels of the eager and the compiled path.

    python bench/gpu_profile.py [--device cuda] [--batch 32] [--size 640x512] [--out FILE.json]

Eager and compiled run the engines' network (BatchNorm folded, channels_last) under fp16
autocast (bf16 on a CPU), rule saliency+cam. The compiled path is ``torch.compile`` without CUDA
graphs, so the profiler sees each kernel. Kernel times are device (self) times per call, summed
over the kernels of one name; a kernel's share is over the whole call's time. Stage times come
from CUDA events around each stage; the stages' sum is a little above the whole call, which
overlaps launches.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import (  # noqa: E402
    as_batch, bench_pair, machine_description, parse_resolutions, synchronize, time_calls,
)
from streamfuse.engines import build_fuser  # noqa: E402
from streamfuse.fuser import Features  # noqa: E402
from streamfuse.commands.bench import load_model  # noqa: E402

RULE = "saliency+cam"
CALLS_PROFILED = 5
TOP_KERNELS = 40


def device_time_us(event) -> float:
    """Self device time of a profiler event average (the attribute was renamed in torch 2.4)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def top_kernels(call, device: torch.device, call_ms: float) -> list[dict]:
    """The ``TOP_KERNELS`` kernel names with the most self device time per call of ``call``;
    ``share`` is that time over the whole call's (``call_ms``)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(CALLS_PROFILED):
            call()
        synchronize(device)
    # Kernels only: operator rows (aten::...) repeat their kernels' time, and a compiled graph's
    # Triton kernels come twice (its launch range and the kernel carry one name).
    kernels: dict[str, object] = {}
    for event in profile.key_averages():
        if device_time_us(event) > 0 and not event.key.startswith("aten::"):
            kernels.setdefault(event.key, event)
    ranked = sorted(kernels.values(), key=device_time_us, reverse=True)
    rows = []
    for event in ranked[:TOP_KERNELS]:
        ms = device_time_us(event) / CALLS_PROFILED / 1e3
        rows.append({"name": event.key[:160], "ms_per_call": ms, "share": ms / call_ms,
                     "launches_per_call": event.count / CALLS_PROFILED})
    return rows


def stage_times(fuser, ir, vis, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Median ms of each eager stage over 20 calls (after 5 untimed)."""
    net = fuser.net
    samples: dict[str, list[float]] = {"encoder_ir": [], "encoder_vis": [], "fusion": [], "decoder": []}
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
        for repeat in range(25):
            ir_maps, ms_ir = timed(lambda: net.encoder(ir), device)
            vis_maps, ms_vis = timed(lambda: net.encoder(vis), device)
            fused, ms_fusion = timed(lambda: net.fusion(ir_maps, vis_maps), device)
            _, ms_decoder = timed(lambda: net.decoder(Features(*fused)), device)
            if repeat >= 5:
                for name, ms in zip(samples, (ms_ir, ms_vis, ms_fusion, ms_decoder)):
                    samples[name].append(ms)
    return {name: float(np.median(values)) for name, values in samples.items()}


def timed(call, device: torch.device):
    """``call()``'s result and its milliseconds (device time on CUDA)."""
    if device.type != "cuda":
        tick = time.perf_counter()
        result = call()
        return result, (time.perf_counter() - tick) * 1e3
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    result = call()
    end.record()
    end.synchronize()
    return result, begin.elapsed_time(end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gpu-profile.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    (width, height), = parse_resolutions(args.size)
    precision, dtype = ("fp16", torch.float16) if device.type == "cuda" else ("bf16", torch.bfloat16)
    model, weights = load_model(None)
    fuser = build_fuser(model, RULE, "eager", precision, device)
    ir_image, vis_image = bench_pair(width, height)
    ir = as_batch(ir_image, args.batch, device).contiguous(memory_format=torch.channels_last)
    vis = as_batch(vis_image, args.batch, device).contiguous(memory_format=torch.channels_last)
    report = {"machine": machine_description(device), "size": args.size, "batch": args.batch,
              "precision": precision, "rule": RULE, "weights": weights}

    report["eager_stage_ms"] = stage_times(fuser, ir, vis, device, dtype)
    print(f"eager stages, ms per batch of {args.batch}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in report["eager_stage_ms"].items()), flush=True)
    compiled = torch.compile(fuser.net, fullgraph=True, dynamic=False)
    for name, net in (("eager", fuser.net), ("compiled", compiled)):
        def call(net=net):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                return net(ir, vis)
        whole = time_calls(call, device, warmup=3, min_iterations=10, seconds=1.0)
        report[f"{name}_ms"] = float(np.median(whole) * 1e3)
        report[f"{name}_kernels"] = top_kernels(call, device, report[f"{name}_ms"])
        print(f"\n{name}: {report[f'{name}_ms']:.2f} ms per batch of {args.batch}", flush=True)
        for kernel in report[f"{name}_kernels"]:
            print(f"  {kernel['ms_per_call']:8.3f} ms {100 * kernel['share']:5.1f}% "
                  f"x{kernel['launches_per_call']:<4.0f} {kernel['name'][:110]}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
