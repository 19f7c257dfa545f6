"""Where do the camera-view benches' wrong files come from: the search, or the views themselves?

    python bench/calibration_views_optimum.py [--workers 2]
                                              [--out bench/results/calibration-views-optimum.json]

bench/calibration_fov.py, calibration_aspect.py and calibration_resolution.py (its 1280x720
runs) score `--auto` on views cut from real pairs against the whole pair's own fit carried into
the views. Each wrong file they recorded (written, more than 3 px off; read from their committed
results) is run again, and for each:

- ``settled_vs_fit_px``: ECC started at the reference itself and run to convergence on the
  views (``auto.settled``, at the size `--auto` fits at), against `--auto`'s fit. Near 0: the
  objective's optimum on these views is where `--auto` put it, not at the reference; the search
  did not miss it;
- ``block_matching_vs_reference_px`` and ``block_matching_vs_fit_px``: the independent
  block-matching fit of bench/calibration_accuracy.py (no step shared with ECC), made on the IR
  view registered by the reference, against both: which of the two the views' patches side with
  (None with fewer than 8 matched patches).

Distances are those of the benches (the corners of the part both cameras see; the resolution
bench's in pixels of a 320x180 frame).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import calibration_accuracy as bench  # noqa: E402
import calibration_aspect  # noqa: E402
import calibration_resolution  # noqa: E402
from calibration_fov import RIGHT_PX, camera_pair, cut, overlap_error, own_fit  # noqa: E402
from streamfuse.registration import auto  # noqa: E402
from streamfuse.registration.ecc import resize_area  # noqa: E402
from streamfuse.registration.geometry import pixel_scaling  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
BENCHES = {"fov": ("calibration-fov.json", "ratio"),
           "aspect": ("calibration-aspect.json", "ir_width"),
           "resolution": ("calibration-resolution.json", "vis_width")}


def views(bench_name: str, set_name: str, index: int, value: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IR view, visible view, reference) of one run of ``bench_name``, cut as that bench cuts
    them."""
    ir, vis = bench.read_pair(set_name, index)
    fit = own_fit(ir, vis)
    if bench_name == "fov":
        ir_view, vis_view, ir_map, vis_map = camera_pair(ir, vis, value)
    else:
        if bench_name == "aspect":
            ir_size, vis_size, ir_width = (calibration_aspect.IR_SIZE, calibration_aspect.VIS_SIZE,
                                           value)
        else:
            ir_size = calibration_resolution.IR_SIZE
            vis_size, ir_width = (int(value), round(value * 9 / 16)), \
                calibration_resolution.IR_VIEW_WIDTH
        ir_box, vis_box = calibration_aspect.view_boxes((ir.shape[1], ir.shape[0]), ir_width)
        ir_view, ir_map = cut(ir, ir_box, ir_size)
        vis_view, vis_map = cut(vis, vis_box, vis_size)
    return ir_view, vis_view, vis_map @ fit @ np.linalg.inv(ir_map)


def measure(job: tuple[str, str, int, float]) -> dict:
    """One wrong file of one bench, run again and explained (runs in a worker process)."""
    bench_name, set_name, index, value = job
    cv2.setNumThreads(1)
    settings = auto.AutoSettings()
    ir_view, vis_view, reference = views(bench_name, set_name, index, value)
    ir_size = (ir_view.shape[1], ir_view.shape[0])
    vis_size = (vis_view.shape[1], vis_view.shape[0])
    fit = auto.register_frames([ir_view], [vis_view], settings=bench.NO_RESIDUAL).homography
    fit_size = auto.working_size(ir_size, vis_size, settings)
    to_fit = pixel_scaling(vis_size, fit_size)
    vis_fitted = resize_area(vis_view, fit_size)
    valid = np.full(ir_view.shape, 255, np.uint8)
    settled = np.linalg.inv(to_fit) @ auto.settled(ir_view, vis_fitted, to_fit @ reference, valid,
                                                   settings)
    registered = cv2.warpPerspective(ir_view, to_fit @ reference, fit_size, flags=cv2.INTER_LINEAR)
    correction, matched = bench.block_matching_fit(registered, vis_fitted)
    blocks = None if correction is None else \
        np.linalg.inv(to_fit) @ correction @ to_fit @ reference
    unit = calibration_resolution.SCORED_WIDTH / vis_size[0] if bench_name == "resolution" else 1.0

    def distance(first: np.ndarray | None, second: np.ndarray) -> float | None:
        if first is None:
            return None
        return round(overlap_error(first, second, ir_size, vis_size) * unit, 3)

    return {"bench": bench_name, "set": set_name, "index": index, "value": value,
            "fit_vs_reference_px": distance(fit, reference),
            "settled_vs_reference_px": distance(settled, reference),
            "settled_vs_fit_px": distance(settled, fit),
            "block_matching_patches": matched,
            "block_matching_vs_reference_px": distance(blocks, reference),
            "block_matching_vs_fit_px": distance(blocks, fit)}


def wrong_files() -> list[tuple[str, str, int, float]]:
    """(bench, set, index, value) of every wrong file in the benches' committed results."""
    jobs = []
    for bench_name, (file_name, key) in BENCHES.items():
        rows = json.loads((RESULTS / file_name).read_text())["per_run"]
        jobs += [(bench_name, row["set"], row["index"], row[key]) for row in rows
                 if row["search"] == "shipped" and not row["refused"]
                 and row["overlap_error_px"] > RIGHT_PX
                 and (bench_name != "resolution" or row[key] == 1280)]
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration-views-optimum.json")
    args = parser.parse_args()
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(measure, wrong_files())
    at_fit = [row for row in rows if row["settled_vs_fit_px"] <= 1.0]
    matched = [row for row in rows if row["block_matching_vs_fit_px"] is not None]
    summary = {"wrong_files": len(rows),
               "settled_within_1px_of_fit": len(at_fit),
               "block_matching_found": len(matched),
               "block_matching_nearer_fit": sum(row["block_matching_vs_fit_px"]
                                                < row["block_matching_vs_reference_px"]
                                                for row in matched)}
    args.out.write_text(json.dumps({"what": __doc__.splitlines()[0], "summary": summary,
                                    "per_run": rows,
                                    "seconds": round(time.perf_counter() - started, 1)},
                                   indent=1) + "\n")
    print(json.dumps(summary))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
