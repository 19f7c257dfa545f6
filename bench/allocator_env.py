"""How much of the PyTorch CPU engines' time is the kernel faulting in fresh memory? A/B, 640x512.

    python bench/allocator_env.py [--rounds 4] [--calls 5]
                                  [--out bench/results/allocator-env.json]

glibc's malloc serves every request above 32 MB with a fresh ``mmap`` and returns it with
``munmap`` when freed, so each full-size map PyTorch allocates at 640x512 (a 64-channel float32
map is 84 MB) has all its pages faulted in again, call after call. With
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295`` the process
takes them from its heap instead and keeps freed memory for the next call.

Each engine is timed in its own child process (``--calls`` calls after two warm-up calls, the
median kept), alternating the default and the tuned environment for ``--rounds`` rounds; the
child also reports its peak resident memory, what keeping freed memory costs. The pair is
flir-test's first, resized to 640x512; the outputs of both environments must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))
TUNED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"
ENGINES = (("eager", "fp32"), ("eager", "bf16"), ("openvino", "int8"))

CHILD = r"""
import glob, hashlib, json, resource, statistics, sys, time
import cv2, torch
from streamfuse.engines import create_fuser
torch.set_num_threads(2)
data, engine, precision, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
frames = [cv2.resize(cv2.imread(sorted(glob.glob(f"{data}/flir-test/{camera}/*"))[0],
                                cv2.IMREAD_GRAYSCALE), (640, 512), interpolation=cv2.INTER_AREA)
          for camera in ("ir", "vis")]
fuser = create_fuser(engine=engine, precision=precision)
fused = fuser.fuse(*frames)
fuser.fuse(*frames)
seconds = []
for _ in range(calls):
    start = time.perf_counter()
    fuser.fuse(*frames)
    seconds.append(time.perf_counter() - start)
print(json.dumps({"ms": statistics.median(seconds) * 1e3,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "output_md5": hashlib.md5(fused.tobytes()).hexdigest()}))
"""


def run_child(data: Path, engine: str, precision: str, calls: int, tuned: bool) -> dict:
    environment = dict(os.environ)
    environment.pop("GLIBC_TUNABLES", None)
    if tuned:
        environment["GLIBC_TUNABLES"] = TUNED
    result = subprocess.run([sys.executable, "-c", CHILD, str(data), engine, precision, str(calls)],
                            env=environment, cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", type=Path,
                        default=REPO_ROOT / "bench" / "results" / "allocator-env.json")
    args = parser.parse_args()
    results = {}
    for engine, precision in ENGINES:
        runs: dict[str, list[dict]] = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            for name in runs:
                runs[name].append(run_child(args.data, engine, precision, args.calls,
                                            name == "tuned"))
        default_ms = [run["ms"] for run in runs["default"]]
        tuned_ms = [run["ms"] for run in runs["tuned"]]
        entry = {
            "default_ms": float(np.median(default_ms)),
            "tuned_ms": float(np.median(tuned_ms)),
            "speedup": float(np.median(np.array(default_ms) / np.array(tuned_ms))),
            "default_peak_rss_mb": float(np.median([r["peak_rss_mb"] for r in runs["default"]])),
            "tuned_peak_rss_mb": float(np.median([r["peak_rss_mb"] for r in runs["tuned"]])),
            "same_output": len({r["output_md5"] for r in runs["default"] + runs["tuned"]}) == 1,
            "rounds": runs,
        }
        results[f"{engine} {precision}"] = entry
        print(f"{engine:9s} {precision:5s} default {entry['default_ms']:7.0f} ms  tuned "
              f"{entry['tuned_ms']:7.0f} ms  {entry['speedup']:.2f}x  peak RSS "
              f"{entry['default_peak_rss_mb']:.0f} -> {entry['tuned_peak_rss_mb']:.0f} MB  "
              f"same output: {entry['same_output']}", flush=True)
    report = {"machine": f"{os.cpu_count()} CPUs", "tuned_environment": TUNED,
              "resolution": "640x512", "threads": 2, "calls": args.calls, "engines": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
