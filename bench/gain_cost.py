"""What the automatic gain of 16-bit thermal frames costs next to fusing them. One process.

    python bench/gain_cost.py [--rounds 20] [--out bench/results/gain-cost.json]

The pipeline gives every deep frame (16-bit images, ``gray16le`` video) the stream gain of
:mod:`streamfuse.gain` before fusing: one histogram of the counts, a 65,536-entry table, one
lookup per pixel. This times that per frame at 640x512 and 1280x1024 on radiometric counts made
from the shipped TNO IR sample (7400 + 3 x level, noise sigma 1 count), interleaved round by
round with one fused pair of the same size through the default CPU engine (``create_fuser``
with ``auto``), and reports the gain's time as a share of the pair's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.engines import create_fuser  # noqa: E402
from streamfuse.gain import GainControl  # noqa: E402

SIZES = ((640, 512), (1280, 1024))
FRAME_INTERVAL_S = 1 / 30


def radiometric_frame(width: int, height: int) -> np.ndarray:
    scene = cv2.imread(str(REPO_ROOT / "samples" / "pairs" / "ir" / "tno_005.png"), cv2.IMREAD_GRAYSCALE)
    scene = cv2.resize(scene, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = np.random.default_rng(0).normal(0, 1, scene.shape)
    return np.round(7400 + 3 * scene.astype(np.float64) + noise).astype(np.uint16)


def measure(width: int, height: int, rounds: int) -> dict:
    counts = radiometric_frame(width, height)
    vis = cv2.resize(cv2.imread(str(REPO_ROOT / "samples" / "pairs" / "vis" / "tno_005.png"),
                                cv2.IMREAD_GRAYSCALE), (width, height))
    fuser = create_fuser(None, "saliency+cam", "auto", "auto", "cpu")
    control = GainControl()
    timestamp = 0.0
    ir = control(counts, timestamp)
    fuser.fuse(ir, vis)  # warm-up: the engine's build for this size
    gain_ms, fuse_ms = [], []
    for _ in range(rounds):
        timestamp += FRAME_INTERVAL_S
        started = time.perf_counter()
        ir = control(counts, timestamp)
        gain_ms.append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        fuser.fuse(ir, vis)
        fuse_ms.append((time.perf_counter() - started) * 1e3)
    gain, fuse = float(np.median(gain_ms)), float(np.median(fuse_ms))
    return {"size": f"{width}x{height}", "engine": type(fuser).__name__,
            "gain_ms_median": round(gain, 3), "fuse_pair_ms_median": round(fuse, 1),
            "gain_share_of_fusing": round(gain / fuse, 4), "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gain-cost.json")
    args = parser.parse_args()
    results = [measure(width, height, args.rounds) for width, height in SIZES]
    for row in results:
        print(f"{row['size']}: gain {row['gain_ms_median']:.2f} ms per frame, fusing "
              f"{row['fuse_pair_ms_median']:.0f} ms per pair ({row['engine']}): "
              f"{100 * row['gain_share_of_fusing']:.2f} %")
    report = {"what": __doc__.splitlines()[0], "machine": machine_description(torch.device("cpu")), "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
