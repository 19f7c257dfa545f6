"""Does `--auto` align cameras whose frames differ in shape? A 5:4 IR camera beside a 16:9 one.

    python bench/calibration_aspect.py [--pairs 10] [--widths 0.6,0.8] [--workers 2]
                                       [--out bench/results/calibration-aspect.json]

From each of the first ``--pairs`` real pairs of flir-test, TNO and flir-train two camera views
are cut, both with square pixels: the visible view the widest 16:9 part of the visible image,
resized to 480x270; the IR view a 5:4 part of the IR image (its width ``--widths`` of the
visible view's, or as much as the image's height allows; centred, moved 5 px right and 4 px
up), resized to 320x256. Stretching the IR frame over the visible one (`--auto`'s start) then
leaves unequal scales of 1.42 between the two directions. The reference is the pair's own fit
carried into the views, the error the one of bench/calibration_fov.py (the corners of the part
both cameras see, visible pixels); right: written and within 3 px.

Each run is made with the shipped search (also about a fit with square pixels, as the frames'
shapes differ) and with the search about the stretched start only (session 29 before this).
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
from calibration_fov import RIGHT_PX, cut, own_fit, scored_run, view_bench_main  # noqa: E402

VIS_SIZE = (480, 270)
IR_SIZE = (320, 256)
IR_OFFSET = (5, -4)
SEARCHES = {"shipped": bench.NO_RESIDUAL,
            "stretch_only": dataclasses.replace(bench.NO_RESIDUAL,
                                                square_pixel_aspect_ratio=float("inf"))}


def view_boxes(image_size: tuple[int, int], ir_width: float
               ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(IR box, visible box) in an image of ``image_size``, as described above."""
    width, height = image_size
    vis_width = min(width, round(height * VIS_SIZE[0] / VIS_SIZE[1]))
    vis_height = round(vis_width * VIS_SIZE[1] / VIS_SIZE[0])
    ir_box_width = min(round(vis_width * ir_width), round(height * IR_SIZE[0] / IR_SIZE[1]))
    ir_box_height = round(ir_box_width * IR_SIZE[1] / IR_SIZE[0])
    left = min(max(0, (width - ir_box_width) // 2 + IR_OFFSET[0]), width - ir_box_width)
    top = min(max(0, (height - ir_box_height) // 2 + IR_OFFSET[1]), height - ir_box_height)
    return ((left, top, ir_box_width, ir_box_height),
            ((width - vis_width) // 2, (height - vis_height) // 2, vis_width, vis_height))


def measure(job: tuple[str, int, tuple[float, ...]]) -> list[dict]:
    """Every IR width and search on one source pair (runs in a worker process)."""
    set_name, index, ir_widths = job
    cv2.setNumThreads(1)
    ir, vis = bench.read_pair(set_name, index)
    fit = own_fit(ir, vis)
    rows = []
    for ir_width in ir_widths:
        ir_box, vis_box = view_boxes((ir.shape[1], ir.shape[0]), ir_width)
        ir_view, ir_map = cut(ir, ir_box, IR_SIZE)
        vis_view, vis_map = cut(vis, vis_box, VIS_SIZE)
        reference = vis_map @ fit @ np.linalg.inv(ir_map)
        for search, settings in SEARCHES.items():
            rows.append({"set": set_name, "index": index, "ir_width": ir_width,
                         "search": search, "ir_box": list(ir_box), "vis_box": list(vis_box),
                         **scored_run(ir_view, vis_view, reference, settings)})
    return rows


def main() -> None:
    view_bench_main(__doc__, measure, "--widths", "0.6,0.8",
                    "IR view's width against the visible view's", "ir_width", SEARCHES,
                    "calibration-aspect.json", {"right_px": RIGHT_PX})

if __name__ == "__main__":
    main()
