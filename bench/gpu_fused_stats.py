"""Would a hand-written kernel for the encoder's activations pay? A CUDA micro-benchmark.

In the compiled graph each encoder map (f1, f2, base, detail; both cameras) is written by an
activation kernel (conv bias + PReLU or tanh) that also sums |x| over the channels at each pixel
(the saliency activity), and then read again in full by a separate split reduction that sums |x|
over the pixels of each channel (the CAM pooling): about 4.5 ms of a 45 ms batch of 32 at
640x512 on an H200 (bench/results/gpu-h200-profile-640x512-b32-s5.json). Inductor cannot fuse
the two reductions, which run over different axes. The Triton kernel here does the activation
and both reductions in one read of the conv output: per block of pixels it writes the activated
map, the per-pixel sums and one partial per-channel sum, and a tiny second step adds the
partials.

    python bench/gpu_fused_stats.py [--batch 32] [--size 640x512] [--out FILE.json]

Both versions get the same fp16 channels_last conv output and bias and are timed with CUDA
events, rounds interleaved; the report has ms per call for PReLU and tanh, the speedup, and the
largest differences between the two versions' outputs (map, activity, channel means). The
kernel's arithmetic can also be checked on a CPU with Triton's interpreter
(``TRITON_INTERPRET=1 python bench/gpu_fused_stats.py --device cpu --batch 2 --size 64x48``).
The kernel is bench/activation_stats.py's; bench/gpu_ab.py (``--set session14``) measures it
inside the whole compiled network, where it does not pay (1.01x on an H100).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import parse_resolutions  # noqa: E402
from bench.activation_stats import (  # noqa: E402
    launch_activation_stats as fused_activation_stats, reference_activation_stats,
)


def time_ms(call, device: torch.device, rounds: int = 20) -> float | None:
    """CUDA-event milliseconds per call; None off CUDA (the interpreter's times mean nothing)."""
    call()
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(rounds):
        call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT")
    parser.add_argument("--blocks", type=lambda text: [int(b) for b in text.split(",")], default=[32, 64, 128],
                        help="pixels per Triton program, comma-separated (default 32,64,128)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gpu-fused-stats.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    (width, height), = parse_resolutions(args.size)
    generator = torch.Generator(device="cpu").manual_seed(0)
    conv = (torch.randn(args.batch, 64, height, width, generator=generator) * 2).half()
    conv = conv.to(device).contiguous(memory_format=torch.channels_last)
    bias = (torch.randn(64, generator=generator) * 0.1).to(device)
    compiled = torch.compile(reference_activation_stats, dynamic=False) if device.type == "cuda" \
        else reference_activation_stats
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "batch": args.batch, "size": args.size, "torch": torch.__version__,
              "triton": triton.__version__, "results": {}}
    for name, tanh, slope in (("prelu", False, 0.2), ("tanh", True, 0.0)):
        reference = reference_activation_stats(conv, bias, slope, tanh)
        inductor_ms = time_ms(lambda: compiled(conv, bias, slope, tanh), device)
        result = {"inductor_ms": inductor_ms, "blocks": {}}
        for block in args.blocks:
            fused = fused_activation_stats(conv, bias, slope, tanh, block)
            differences = {key: float((a.float() - b.float()).abs().max())
                           for key, a, b in zip(("map", "activity", "channel_mean"), fused, reference)}
            fused_ms = time_ms(lambda: fused_activation_stats(conv, bias, slope, tanh, block), device)
            result["blocks"][block] = {
                "fused_ms": fused_ms, "speedup": inductor_ms / fused_ms if fused_ms else None,
                "max_difference": differences}
        report["results"][name] = result
        print(name, report["results"][name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
