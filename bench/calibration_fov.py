"""Does `--auto` align cameras whose fields of view differ? IR views narrower and wider.

    python bench/calibration_fov.py [--pairs 10] [--ratios 0.6,0.7,0.8,1.25,1.4,1.6]
                                    [--workers 2] [--out bench/results/calibration-fov.json]

A thermal camera beside a visible one often sees a narrower or a wider view. From each of the
first ``--pairs`` real pairs of flir-test, TNO and flir-train, two camera views are cut: for a
ratio r < 1 the IR view is the centre r of the IR image (moved 9 px right and 6 px up), for r > 1
the visible view is the centre 1/r of the visible image; each view is resized to 320 px wide,
as `--auto` sees a pair of frames of one size. The reference is the pair's own best fit (the
accuracy bench's reference: the source pairs are aligned to a few pixels only), taken between
the whole images at 320 px and carried into the two views. The error (`overlap_error_px`) is
the mean distance, in the visible view's pixels, at the four corners of the part both cameras
see: the IR view's corners for r < 1, the visible view's for r > 1 (where the IR view's own
corners lie outside the visible frame, and their error, `error_px`, extrapolates). For r > 1
the visible view's pixels are r times finer than the whole image's. Right: written and within
3 px; wrong: written and further off.

Each run is made twice: with the shipped coarse search (scales 1/1.6-1.6) and with the search
of session 28 and before (``before`` in the results: 11 scales 1/1.1-1.1, within 0.01 of the
linear 0.9-1.1 it had).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from streamfuse.registration import auto  # noqa: E402
from streamfuse.calibration import image_corners  # noqa: E402
from streamfuse.registration.geometry import (  # noqa: E402
    corner_error, pixel_scaling, transform_points,
)

WIDTH = 320
NARROW_VIEW_OFFSET = (9, -6)
RIGHT_PX = 3.0
SEARCHES = {"shipped": bench.NO_RESIDUAL,
            "before": dataclasses.replace(bench.NO_RESIDUAL, search_scale_ratio=1.1)}


def cut(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]
        ) -> tuple[np.ndarray, np.ndarray]:
    """The (left, top, width, height) ``box`` of ``image`` resized to ``size`` (a camera
    seeing only that part), and the (3, 3) map from ``image``'s pixels to the view's."""
    left, top, width, height = box
    view = cv2.resize(image[top:top + height, left:left + width], size,
                      interpolation=cv2.INTER_AREA)
    return view, pixel_scaling((width, height), size) @ np.array(
        [[1.0, 0, -left], [0, 1, -top], [0, 0, 1]])


def camera_view(image: np.ndarray, fraction: float, offset: tuple[int, int], width: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The centre ``fraction`` of the (H, W) ``image`` (moved by ``offset`` pixels), resized to
    ``width`` as a camera with that much narrower a view would see it, and the (3, 3) map from
    ``image``'s pixels to the view's."""
    height, full_width = image.shape
    crop = (round(full_width * fraction), round(height * fraction))
    left = (full_width - crop[0]) // 2 + offset[0]
    top = (height - crop[1]) // 2 + offset[1]
    return cut(image, (left, top, *crop), (width, round(crop[1] * width / crop[0])))


def camera_pair(ir: np.ndarray, vis: np.ndarray, ir_view_vs_visible: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(IR view, visible view, map from ``ir``'s pixels to the IR view's, the same for
    ``vis``) of two cameras whose views differ by ``ir_view_vs_visible``, as described above."""
    if ir_view_vs_visible < 1:
        ir_view, ir_map = camera_view(ir, ir_view_vs_visible, NARROW_VIEW_OFFSET, WIDTH)
        vis_view, vis_map = camera_view(vis, 1.0, (0, 0), WIDTH)
    else:
        ir_view, ir_map = camera_view(ir, 1.0, (0, 0), WIDTH)
        vis_view, vis_map = camera_view(vis, 1 / ir_view_vs_visible, (0, 0), WIDTH)
    return ir_view, vis_view, ir_map, vis_map


def overlap_error(estimate: np.ndarray, reference: np.ndarray, ir_size: tuple[int, int],
                  vis_size: tuple[int, int]) -> float:
    """Mean distance, in visible pixels, between where two IR->visible homographies put the IR
    points that ``reference`` shows at the corners of the narrower view: the IR frame's corners
    when the IR frame falls inside the visible one, else the visible frame's."""
    ir_in_vis = transform_points(reference, image_corners(ir_size))
    inside = np.all((ir_in_vis >= -0.5) & (ir_in_vis <= np.array(vis_size) - 0.5))
    if inside:
        return corner_error(estimate, reference, ir_size)
    ir_points = transform_points(np.linalg.inv(reference), image_corners(vis_size))
    moved = transform_points(estimate, ir_points) - transform_points(reference, ir_points)
    return float(np.mean(np.linalg.norm(moved, axis=1)))


def own_fit(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """The pair's best fit (the accuracy bench's reference), taken at ``WIDTH`` and returned in
    the whole images' pixels."""
    size = (ir.shape[1], ir.shape[0])
    small_size = (WIDTH, round(ir.shape[0] * WIDTH / ir.shape[1]))
    small_ir, small_vis = (cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
                           for image in (ir, vis))
    to_small = pixel_scaling(size, small_size)
    fit = auto.register_frames([small_ir], [small_vis], settings=bench.BEST_FIT).homography
    return np.linalg.inv(to_small) @ fit @ to_small


def scored_run(ir_view: np.ndarray, vis_view: np.ndarray, reference: np.ndarray,
               settings: auto.AutoSettings) -> dict:
    """`--auto` on one pair of views: its errors against ``reference``, whether it was refused
    and why, its confidence and time."""
    started = time.perf_counter()
    result = auto.register_frames([ir_view], [vis_view], settings=settings)
    seconds = time.perf_counter() - started
    try:
        auto.check_reliable(result, settings)
        refusal = None
    except Exception as error:  # noqa: BLE001 - a refusal is a measured outcome here
        refusal = str(error)
    ir_size = (ir_view.shape[1], ir_view.shape[0])
    return {"overlap_error_px": round(overlap_error(result.homography, reference, ir_size,
                                                    (vis_view.shape[1], vis_view.shape[0])), 3),
            "error_px": round(corner_error(result.homography, reference, ir_size), 3),
            "refused": refusal is not None, "refusal": refusal,
            "confidence": round(result.confidence, 4), "seconds": round(seconds, 2)}


def measure(job: tuple[str, int, tuple[float, ...]]) -> list[dict]:
    """Every ratio and search on one source pair (runs in a worker process)."""
    set_name, index, ratios = job
    cv2.setNumThreads(1)
    ir, vis = bench.read_pair(set_name, index)
    fit = own_fit(ir, vis)
    rows = []
    for ratio in ratios:
        ir_view, vis_view, ir_map, vis_map = camera_pair(ir, vis, ratio)
        reference = vis_map @ fit @ np.linalg.inv(ir_map)
        for search, settings in SEARCHES.items():
            rows.append({"set": set_name, "index": index, "ratio": ratio, "search": search,
                         **scored_run(ir_view, vis_view, reference, settings)})
    return rows


def tally(rows: list[dict]) -> dict:
    written = [row for row in rows if not row["refused"]]
    return {"runs": len(rows),
            "right": sum(row["overlap_error_px"] <= RIGHT_PX for row in written),
            "refused": len(rows) - len(written),
            "wrong_files": sorted((f"{row['set']} {row['index']}", row["overlap_error_px"])
                                  for row in written if row["overlap_error_px"] > RIGHT_PX),
            "median_error_written_px": round(float(np.median(
                [row["overlap_error_px"] for row in written])), 3) if written else None,
            "median_seconds": round(float(np.median([row["seconds"] for row in rows])), 2)}


def main() -> None:
    view_bench_main(__doc__, measure, "--ratios", "0.6,0.7,0.8,1.25,1.4,1.6",
                    "IR field of view against the visible one's", "ratio", SEARCHES,
                    "calibration-fov.json", {"width": WIDTH})


def view_bench_main(doc: str, measure_pair, option: str, default: str, help_text: str, key: str,
                    searches: dict, out_name: str, header: dict, parse=float) -> None:
    """The command line of a camera-view bench (this one, calibration_aspect, _resolution,
    _roll): ``--pairs`` per data set, the comma-separated values of ``option`` (stored in each
    row under ``key``), ``--workers`` and ``--out``; then :func:`run_and_report`, its results
    headed by the first line of ``doc`` and ``header``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="pairs per data set")
    parser.add_argument(option, default=default, help=help_text)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / out_name)
    args = parser.parse_args()
    values = tuple(parse(value) for value in getattr(args, option.lstrip("-")).split(","))
    run_and_report(measure_pair, args.pairs, values, key, searches, args.workers, args.out,
                   {"what": doc.splitlines()[0], **header})


def run_and_report(measure_pair, pairs: int, values: tuple[float, ...], key: str,
                   searches: dict, workers: int, out: Path, header: dict) -> None:
    """``measure_pair`` on the first ``pairs`` pairs of each set with ``values`` in worker
    processes, the rows tallied by search and by ``key``; writes ``header`` with the tallies and
    rows to ``out`` and prints the tallies."""
    started = time.perf_counter()
    jobs = [(set_name, index, values) for set_name in bench.SETS for index in range(pairs)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        rows = [row for pair_rows in pool.imap(measure_pair, jobs) for row in pair_rows]
    result = {**header, "pairs": len(jobs),
              "tally": {search: {str(value): tally([row for row in rows if row["search"] == search
                                                    and row[key] == value])
                                 for value in values} for search in searches},
              "per_run": rows, "seconds": round(time.perf_counter() - started, 1)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    for search, by_value in result["tally"].items():
        for value, counts in by_value.items():
            print(f"{search:12s} {key} {value:5s}: right {counts['right']:2d}, refused "
                  f"{counts['refused']:2d}, wrong {len(counts['wrong_files'])} of "
                  f"{counts['runs']} (median written error {counts['median_error_written_px']} "
                  f"px, {counts['median_seconds']} s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
