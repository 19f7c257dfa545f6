"""How far may the IR camera be rolled against the visible one for `--auto` to align them?

    python bench/calibration_roll.py [--pairs 10] [--angles 0,6,9,12,15] [--workers 2]
                                     [--out bench/results/calibration-roll.json]

The coarse search tries rotations up to +-6 degrees (`AutoSettings.search_rotation_deg`); the
issue's accuracy bench warps up to 5. From each of the first ``--pairs`` real pairs of
flir-test, TNO and flir-train, the IR image is rotated about its centre by each of ``--angles``
(alternately clockwise and anticlockwise by pair; its valid-pixel mask rotated too) and `--auto`
is run on it against the visible image. The reference is the accuracy bench's: the pair's own
best fit on the unwarped images composed with the rotation. The error is that of
bench/calibration_fov.py (visible pixels, at the corners of the part both cameras see; the
rolled IR frame's own corners, ``error_px``, partly fall outside the visible frame). Right:
written and within 3 px; wrong: written and further off.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import calibration_accuracy as bench  # noqa: E402
from calibration_fov import RIGHT_PX, overlap_error, view_bench_main  # noqa: E402
from streamfuse.registration import auto  # noqa: E402
from streamfuse.registration.geometry import corner_error  # noqa: E402

SEARCHES = {"shipped": bench.NO_RESIDUAL}


def rotation(size: tuple[int, int], degrees: float) -> np.ndarray:
    """(3, 3) rotation by ``degrees`` (anticlockwise on screen) about the centre of a frame of
    ``size``."""
    width, height = size
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    return np.vstack([matrix, [0, 0, 1.0]])


def measure(job: tuple[str, int, tuple[float, ...]]) -> list[dict]:
    """Every roll of one source pair (runs in a worker process)."""
    set_name, index, angles = job
    cv2.setNumThreads(1)
    ir, vis = bench.read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    fit = auto.register_frames([ir], [vis], settings=bench.BEST_FIT).homography
    sign = 1 if index % 2 == 0 else -1
    rows = []
    for angle in angles:
        roll = rotation(size, sign * angle)
        rolled, valid = bench.warp_with_mask(ir, roll)
        reference = fit @ np.linalg.inv(roll)
        started = time.perf_counter()
        result = auto.register_frames([rolled], [vis], ir_valid=[valid],
                                      settings=bench.NO_RESIDUAL)
        seconds = time.perf_counter() - started
        try:
            auto.check_reliable(result, bench.NO_RESIDUAL)
            refusal = None
        except Exception as error:  # noqa: BLE001 - a refusal is a measured outcome here
            refusal = str(error)
        rows.append({"set": set_name, "index": index, "angle": angle, "degrees": sign * angle,
                     "search": "shipped",
                     "overlap_error_px": round(overlap_error(result.homography, reference, size,
                                                             (vis.shape[1], vis.shape[0])), 3),
                     "error_px": round(corner_error(result.homography, reference, size), 3),
                     "refused": refusal is not None, "refusal": refusal,
                     "seconds": round(seconds, 2)})
    return rows


def main() -> None:
    view_bench_main(__doc__, measure, "--angles", "0,6,9,12,15", "rolls in degrees", "angle",
                    SEARCHES, "calibration-roll.json", {"right_px": RIGHT_PX})

if __name__ == "__main__":
    main()
