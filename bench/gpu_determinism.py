"""Does the compiled CUDA path give the same pixels on every call? A probe for the next GPU run.

In session 14 ``test_cuda_fp16_matches_reference[compile]`` failed on an H100: within the
reference tolerance, but the engine's second call (through the 8-bit interface) did not give the
same pixels as its first, at batch 2 and 96x128 (session 5 saw the same on an H200; session 12's
H100 did not). This script calls each variant five times on one input, as the test does (a real
crop from ``samples/pairs`` and uniform noise), and reports for every call after the first how
many pixels differ from the first call's 8-bit output and by how much:

- ``engine``: the compile engine as shipped (``create_fuser``), then its 8-bit interface once;
- ``engine-no-cudnn-benchmark``: the same with cuDNN's per-shape algorithm search off;
- ``no-tuning`` and ``no-taps``: ``bench/gpu_ab.py`` builds without Inductor's coordinate-descent
  tuning, and without the tap rewrites of conv1 and conv7.

A difference that appears only between call 1 and the rest points at the CUDA-graph warm-up (the
first call runs outside the graph); one that comes and goes at random, at a race.
On an H200 in session 18 (bench/results/gpu-h200-determinism-s18.json) only the variant with
cuDNN's search off differed, at its fifth call, 3 pixels by 1 level: a race.

    python bench/gpu_determinism.py [--device cuda] [--size 128x96] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.gpu_ab import Variant, build  # noqa: E402
from streamfuse.bench import parse_resolutions  # noqa: E402
from streamfuse.commands.bench import load_model  # noqa: E402
from streamfuse.engines import create_fuser  # noqa: E402
from streamfuse.fuser import to_uint8  # noqa: E402
from streamfuse.images import read_image  # noqa: E402

CALLS = 5
SAMPLE = REPO_ROOT / "samples" / "pairs"


def probe_input(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(2, H, W) uint8 IR and visible stacks: a crop of a shipped sample pair, and uniform noise."""
    ir, vis = (read_image(SAMPLE / side / "tno_005.png", gray=True)[:height, :width] for side in ("ir", "vis"))
    noise = np.random.default_rng(11).integers(0, 256, size=(2, height, width), dtype=np.uint8)
    return np.stack([ir, noise[0]]), np.stack([vis, noise[1]])


def differences(outputs: list[np.ndarray]) -> list[dict]:
    """Each output after the first against the first: pixels differing and the largest gap."""
    first = outputs[0].astype(int)
    return [{"pixels_differing": int((out != first).sum()), "max_levels": int(np.abs(out - first).max())}
            for out in (o.astype(int) for o in outputs[1:])]


def run_engine(ir: np.ndarray, vis: np.ndarray, device: str, cudnn_benchmark: bool) -> dict:
    fuser = create_fuser(None, "saliency+cam", "compile", "fp16" if device == "cuda" else "fp32", device)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    ir_tensor, vis_tensor = (torch.from_numpy(x)[:, None].float() / 255 for x in (ir, vis))
    outputs = [to_uint8(fuser.fuse_tensors(ir_tensor, vis_tensor).cpu())[:, 0].numpy() for _ in range(CALLS)]
    outputs.append(np.stack(fuser.fuse_batch(list(ir), list(vis))))
    return {"calls": differences(outputs), "last_is_8bit_interface": True}


def run_variant(variant: Variant, ir: np.ndarray, vis: np.ndarray, device: torch.device) -> dict:
    torch.backends.cudnn.benchmark = True
    model, _ = load_model(None)
    ir_tensor, vis_tensor = (
        (torch.from_numpy(x)[:, None].float() / 255).to(device).contiguous(memory_format=torch.channels_last)
        for x in (ir, vis))
    call = build(variant, model, device, ir_tensor, vis_tensor)
    outputs = [to_uint8(call().cpu())[:, 0].numpy() for _ in range(CALLS)]
    return {"calls": differences(outputs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="128x96", help="WIDTHxHEIGHT (default: the CUDA test's crop)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gpu-determinism.json")
    args = parser.parse_args()
    (width, height), = parse_resolutions(args.size)
    ir, vis = probe_input(width, height)
    torch._dynamo.config.recompile_limit = 64
    results = {}
    for name, run in (
        ("engine", lambda: run_engine(ir, vis, args.device, True)),
        ("engine-no-cudnn-benchmark", lambda: run_engine(ir, vis, args.device, False)),
        ("no-tuning", lambda: run_variant(Variant("no-tuning", narrow_taps="all"), ir, vis, torch.device(args.device))),
        ("no-taps", lambda: run_variant(Variant("no-taps", inductor={"coordinate_descent_tuning": True}),
                                        ir, vis, torch.device(args.device))),
    ):
        torch._dynamo.reset()  # each variant compiles afresh
        results[name] = run()
        print(name, results[name], flush=True)
    report = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "size": args.size, "torch": torch.__version__, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
