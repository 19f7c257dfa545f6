"""Does `--auto` align a low-resolution thermal camera beside a high-resolution visible one?

    python bench/calibration_resolution.py [--pairs 10] [--widths 320,640,1280] [--workers 2]
                                           [--out bench/results/calibration-resolution.json]

A 160x120-class thermal core beside an HD visible camera is a common rig. From each of the
first ``--pairs`` real pairs of flir-test, TNO and flir-train the views of
bench/calibration_aspect.py are cut (a 16:9 visible view, a 5:4 IR view 0.6 of its width), the
IR view resized to 160x128 and the visible one to each of ``--widths`` (16:9): the same scene
content, seen at 2 to 8 times the IR camera's resolution. The reference is the pair's own fit
carried into the views. The error (``overlap_error_px``) is that of bench/calibration_fov.py
expressed in pixels of a 320x180 visible frame (the full-size error, ``overlap_error_full_px``,
times 320 / width): more visible pixels show the same scene no more precisely than the IR
camera's 160 pixels allow, so one criterion holds at every width. Right: written and within
3 px of that frame (12 px at 1280x720).

Each run is made with the shipped estimator, which reduces the visible frames until the IR
frame stretched over them is upsampled at most 2x (``fit_size``: 382x215 at 640x360 and
1280x720, 320x180 unchanged), and at the visible frames' full size (``full_size``: session 29
and before).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import calibration_accuracy as bench  # noqa: E402
from calibration_aspect import view_boxes  # noqa: E402
from calibration_fov import RIGHT_PX, cut, own_fit, scored_run, view_bench_main  # noqa: E402
from streamfuse.registration import auto  # noqa: E402

IR_SIZE = (160, 128)
IR_VIEW_WIDTH = 0.6  # of the visible view's
SCORED_WIDTH = 320  # errors are given in pixels of a visible frame this wide
SEARCHES = {"shipped": bench.NO_RESIDUAL,
            "full_size": dataclasses.replace(bench.NO_RESIDUAL, max_ir_upsampling=float("inf"))}


def measure(job: tuple[str, int, tuple[int, ...]]) -> list[dict]:
    """Every visible width and estimator on one source pair (runs in a worker process)."""
    set_name, index, vis_widths = job
    cv2.setNumThreads(1)
    ir, vis = bench.read_pair(set_name, index)
    fit = own_fit(ir, vis)
    ir_box, vis_box = view_boxes((ir.shape[1], ir.shape[0]), IR_VIEW_WIDTH)
    ir_view, ir_map = cut(ir, ir_box, IR_SIZE)
    rows = []
    for vis_width in vis_widths:
        vis_size = (vis_width, round(vis_width * 9 / 16))
        vis_view, vis_map = cut(vis, vis_box, vis_size)
        reference = vis_map @ fit @ np.linalg.inv(ir_map)
        for search, settings in SEARCHES.items():
            run = scored_run(ir_view, vis_view, reference, settings)
            to_scored = SCORED_WIDTH / vis_width
            rows.append({"set": set_name, "index": index, "vis_width": vis_width,
                         "search": search, "ir_box": list(ir_box), "vis_box": list(vis_box),
                         "fit_size": list(auto.working_size(IR_SIZE, vis_size, settings)),
                         **run,
                         "overlap_error_full_px": run["overlap_error_px"],
                         "overlap_error_px": round(run["overlap_error_px"] * to_scored, 3),
                         "error_px": round(run["error_px"] * to_scored, 3)})
    return rows


def main() -> None:
    view_bench_main(__doc__, measure, "--widths", "320,640,1280", "visible frame widths (16:9)",
                    "vis_width", SEARCHES, "calibration-resolution.json",
                    {"ir_size": list(IR_SIZE), "scored_width": SCORED_WIDTH, "right_px": RIGHT_PX},
                    parse=int)

if __name__ == "__main__":
    main()
