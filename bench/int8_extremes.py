"""Where int8 (the OpenVINO CPU default) departs from fp32: OpenVINO int8 and bf16 against fp32
on inputs unlike the calibration samples.

    python bench/int8_extremes.py [--data ../shared/data] [--out bench/results/int8-extremes.json]

int8 clips each wide convolution's input to the range calibrated on ``samples/pairs`` (widened
1.25x); bf16 has no such range. On real scenes both stay within the reduced-precision bound
(mean 0.5, max 4 gray levels from fp32; ``bench/openvino_variants.py --accuracy-sets
flir-test,tno,flir-train``). This feeds both engines frames a camera may still produce (sensor
noise, inverted polarity, more contrast) and frames no camera pair should (a checkerboard
against its inverse, black against white, text), compared as 8-bit images with the fp32 eager
network, BatchNorm not folded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.checkpoint import load_checkpoint  # noqa: E402
from streamfuse.engines import create_fuser  # noqa: E402
from streamfuse.fuser import Fuser, resolve_weights, to_uint8  # noqa: E402

RULE = "saliency+cam"
DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))


def real_pair(data: Path, name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    ir_path = sorted((data / name / "ir").iterdir())[index]
    vis_path = next((data / name / "vis").glob(ir_path.stem + ".*"))
    return tuple(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in (ir_path, vis_path))


def cases(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (IR, visible) uint8 frames of one size."""
    rng = np.random.default_rng(5)
    ir, vis = real_pair(data, "flir-test", 20)
    checkerboard = (np.indices((256, 320)).sum(axis=0) // 8 % 2 * 255).astype(np.uint8)
    text = np.zeros((256, 320), np.uint8)
    for line in range(12):
        cv2.putText(text, "STREAMFUSE 0123", (5, 20 + 20 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    255, 1)
    tno_ir, tno_vis = real_pair(data, "tno", 30)
    return {
        "uniform noise, 640x512": tuple(rng.integers(0, 256, (512, 640), dtype=np.uint8)
                                        for _ in range(2)),
        "flir-test 20 + gaussian noise sigma 15": tuple(
            np.clip(x + rng.normal(0, 15, x.shape), 0, 255).astype(np.uint8) for x in (ir, vis)),
        "flir-test 20 inverted": (255 - ir, 255 - vis),
        "tno 30, contrast x1.6": tuple(np.clip((x.astype(float) - 128) * 1.6 + 128, 0, 255)
                                       .astype(np.uint8) for x in (tno_ir, tno_vis)),
        "checkerboard (8 px) against its inverse": (checkerboard, 255 - checkerboard),
        "black against white": (np.zeros((128, 160), np.uint8), np.full((128, 160), 255, np.uint8)),
        "text against tno 31 (visible)": (text, cv2.resize(real_pair(data, "tno", 31)[1], (320, 256))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", default=str(REPO_ROOT / "bench/results/int8-extremes.json"))
    args = parser.parse_args()
    if not (args.data / "flir-test").is_dir() or not (args.data / "tno").is_dir():
        sys.exit(f"int8_extremes: {args.data} lacks flir-test or tno; pass --data")
    torch.set_num_threads(2)
    model = load_checkpoint(resolve_weights(None))[0]
    reference = Fuser(model, RULE, "cpu", fold_bn=False)
    cache = tempfile.mkdtemp()
    engines = {precision: create_fuser(None, RULE, "openvino", precision, "cpu", cache_dir=cache)
               for precision in ("bf16", "int8")}
    rows = {}
    for name, (ir, vis) in cases(args.data).items():
        ir_tensor, vis_tensor = (torch.from_numpy(x)[None, None].float() / 255 for x in (ir, vis))
        expected = to_uint8(reference.fuse_tensors(ir_tensor, vis_tensor)).int()
        rows[name] = {}
        for precision, engine in engines.items():
            levels = (to_uint8(engine.fuse_tensors(ir_tensor, vis_tensor)).int() - expected).abs()
            rows[name][precision] = {"mean": round(float(levels.float().mean()), 3),
                                     "max": int(levels.max()),
                                     "within_0.5_mean_4_max": bool(levels.float().mean() <= 0.5
                                                                   and levels.max() <= 4)}
        print(f"{name:42s} " + "  ".join(f"{p} {r['mean']:.3f}/{r['max']}" for p, r in rows[name].items()))
    result = {"what": __doc__.splitlines()[0], "rule": RULE,
              "gray_levels_vs_fp32_mean_max": rows,
              "machine": machine_description(torch.device("cpu"))}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
