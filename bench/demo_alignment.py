"""How well the demo clip's IR and visible frames line up, with and without calibration/demo.yaml.

The clip (samples/demo/) is a pan over TNO pair 001, which is not aligned itself. Three views
that share no step with `--auto`'s ECC, then `--check`'s score of the shipped calibration:

- the still at full size: gradient-magnitude correlation (``registration.check``'s score, over
  the image less a 60 px band) with the IR image moved by whole pixels;
- the same still: ``block_matching_fit`` of bench/calibration_accuracy.py (patch NCC + RANSAC);
- the clip: the same correlation, pooled over its frame pairs (as `streamfuse calibrate` pairs
  two videos: each IR frame with the visible frame nearest in time), with the IR frames moved
  down by 0-4 px;
- ``check_scores`` of calibration/demo.yaml and of the identity on the same frame pairs.

    python bench/demo_alignment.py [--data ../shared/data] [--out bench/results/demo-alignment.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from calibration_accuracy import block_matching_fit  # noqa: E402
from streamfuse.calibration import Calibration, load_calibration  # noqa: E402
from streamfuse.registration.check import check_scores, gradient_correlation  # noqa: E402
from streamfuse.registration.frames import read_pairs  # noqa: E402

DEMO = REPO_ROOT / "samples" / "demo"
CALIBRATION = REPO_ROOT / "calibration" / "demo.yaml"
STILL_BAND = 60


def moved(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """(H, W) uint8 image with its content moved by (dx, dy) px (bilinear, edge replicated)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def still_scan(ir: np.ndarray, vis: np.ndarray) -> dict:
    """Correlation of the still with the IR image moved 0..12 px down, and the best whole-pixel
    move within dx -4..4, dy -2..12."""
    mask = np.zeros(ir.shape, bool)
    mask[STILL_BAND:-STILL_BAND, STILL_BAND:-STILL_BAND] = True
    by_dy = {dy: gradient_correlation(moved(ir, 0, dy), vis, mask) for dy in range(-2, 13, 2)}
    best = max((gradient_correlation(moved(ir, dx, dy), vis, mask), dx, dy)
               for dy in range(-2, 13) for dx in range(-4, 5))
    return {"by_dy_px": {str(k): round(v, 4) for k, v in by_dy.items()},
            "best": {"score": round(best[0], 4), "dx_px": best[1], "dy_px": best[2]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "demo-alignment.json"))
    args = parser.parse_args()
    tno = Path(args.data) / "tno"
    ir, vis = (cv2.imread(str(tno / side / "001.png"), cv2.IMREAD_GRAYSCALE) for side in ("ir", "vis"))
    if ir is None or vis is None:
        sys.exit(f"demo_alignment: {tno}/ir/001.png and vis/001.png are needed (--data)")
    homography, matches = block_matching_fit(ir, vis)
    centre = np.array([ir.shape[1] / 2, ir.shape[0] / 2, 1.0])
    moved_centre = homography @ centre
    pairs = read_pairs(DEMO / "ir.mp4", DEMO / "vis.mp4")
    border = np.zeros(pairs[0][1].shape, bool)
    border[8:-8, 8:-8] = True
    clip_by_dy = {float(dy): float(np.mean([gradient_correlation(moved(i, 0, dy), v, border)
                                             for i, v in pairs]))
                  for dy in np.arange(-0.5, 4.01, 0.5)}
    shipped = load_calibration(CALIBRATION)
    height, width = pairs[0][1].shape
    scores = {name: np.mean([check_scores(calibration, i, v)[:2] for i, v in pairs], axis=0)
              for name, calibration in (("demo.yaml", shipped),
                                        ("identity", Calibration.identity(width, height)))}
    clip_centre = shipped.homography @ np.array([width / 2, height / 2, 1.0])
    result = {
        "what": __doc__.split("\n\n")[0],
        "still_tno_001": {
            "size": [ir.shape[1], ir.shape[0]],
            "gradient_correlation_ir_moved": still_scan(ir, vis),
            "block_matching_fit": {"matches": matches,
                                   "homography": np.round(homography, 6).tolist(),
                                   "centre_moves_px": np.round(moved_centre[:2] / moved_centre[2]
                                                               - centre[:2], 2).tolist()},
        },
        "clip": {
            "frame_pairs": len(pairs), "size": [width, height],
            "gradient_correlation_ir_moved_down_px": {str(k): round(v, 4) for k, v in clip_by_dy.items()},
            "demo_yaml_centre_moves_px": np.round(clip_centre[:2] / clip_centre[2]
                                                  - [width / 2, height / 2], 2).tolist(),
            "check_before_after": {name: [round(float(x), 4) for x in value]
                                   for name, value in scores.items()},
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
