"""Same-modality pairs: which frame's pixels the last intensity ECC should compare at.

    python bench/same_modality_direction.py [--pairs 40] [--workers 2]
                                            [--out bench/results/same-modality-direction.json]

``--auto``'s last pass on a same-modality pair (``auto.intensity_refinement``) compares the two
frames at the IR frame's pixels since session 31 (the visible frame resampled bicubically into
them). Until then it resampled the IR frame into the visible frame's pixels, and 3 of the
calibration bench's 120 bilinear copies ended above the issue's 0.05 px. Three variants of that
pass, on the calibration bench's 120 pairs (the same warps: ``calibration_accuracy.pair_jobs``),
each through the whole ``register_frames`` without the residual:

- ``vis``: at the visible frame's pixels (shipped until session 31);
- ``ir``: at the IR frame's pixels (shipped);
- ``coarser``: at the pixels of whichever frame is coarser (``ir`` where the homography's area
  scale at the IR frame's centre exceeds 1, else ``vis``), the usual advice.

Each on the bilinear copies (the IR side is the visible frame warped bilinearly) and on the two
rendered views (``calibration_accuracy.two_views``: neither a resample of the other), mean corner
error against the truth.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import calibration_accuracy as bench  # noqa: E402
from streamfuse.registration import auto  # noqa: E402
from streamfuse.registration.ecc import content_mask, ecc_multichannel  # noqa: E402
from streamfuse.registration.geometry import corner_error, normalised  # noqa: E402

AT_IR_PIXELS = auto.intensity_refinement


def area_scale(homography: np.ndarray, ir_shape: tuple[int, int]) -> float:
    """Area scale of the IR->visible ``homography`` at the IR frame's centre (|det| of its Jacobian)."""
    x, y = ir_shape[1] / 2, ir_shape[0] / 2
    w = homography[2, 0] * x + homography[2, 1] * y + homography[2, 2]
    mapped = homography[:2, :2] @ [x, y] + homography[:2, 2]
    jacobian = (homography[:2, :2] * w - np.outer(mapped, homography[2, :2])) / w ** 2
    return float(abs(np.linalg.det(jacobian)))


def at_visible_pixels(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                      ir_valid: np.ndarray, settings: auto.AutoSettings) -> np.ndarray:
    """``auto.intensity_refinement`` as it was until session 31: the visible frame is the
    template, the IR frame resampled into it (masked where its blur and kernel reach past its
    valid pixels)."""
    for sigma in settings.intensity_sigmas:
        template, moving = vis_frame.astype(np.float32), ir_frame.astype(np.float32)
        if sigma > 0:
            template = cv2.GaussianBlur(template, (0, 0), sigma)
            moving = cv2.GaussianBlur(moving, (0, 0), sigma)
        mask = content_mask(ir_valid.shape, ir_valid, int(np.ceil(3 * sigma)) + 4)
        try:
            _, warp = ecc_multichannel(template[..., None], moving[..., None],
                                       np.linalg.inv(homography), moving_mask=mask,
                                       iterations=settings.final_iterations,
                                       epsilon=settings.final_epsilon,
                                       interpolation=cv2.INTER_CUBIC)
        except (cv2.error, np.linalg.LinAlgError):
            return homography
        homography = normalised(np.linalg.inv(warp))
    return homography


def at_coarser_pixels(ir_frame, vis_frame, homography, ir_valid, settings) -> np.ndarray:
    """At the IR frame's pixels where it samples the scene more coarsely, else the visible's."""
    if area_scale(homography, ir_frame.shape) > 1:
        return AT_IR_PIXELS(ir_frame, vis_frame, homography, ir_valid, settings)
    return at_visible_pixels(ir_frame, vis_frame, homography, ir_valid, settings)


VARIANTS = {"vis": at_visible_pixels, "ir": AT_IR_PIXELS, "coarser": at_coarser_pixels}


def measure_pair(job: tuple[str, int, np.ndarray]) -> dict:
    """Every variant on one pair's copy and two views (runs in a worker)."""
    set_name, index, warp = job
    cv2.setNumThreads(1)
    vis = bench.read_pair(set_name, index)[1]
    size = (vis.shape[1], vis.shape[0])
    truth = np.linalg.inv(warp)
    copy, copy_valid = bench.warp_with_mask(vis, warp)
    view_a, view_b, view_valid, a_to_b = bench.two_views(
        vis, np.random.default_rng([7, bench.SETS.index(set_name), index]))
    row = {"set": set_name, "index": index, "copy_area_scale": area_scale(truth, copy.shape),
           "views_area_scale": area_scale(a_to_b, view_a.shape)}
    for name, refinement in VARIANTS.items():
        auto.intensity_refinement = refinement  # fit_pair looks it up in the module
        result = auto.register_frames([copy], [vis], ir_valid=[copy_valid],
                                      settings=bench.NO_RESIDUAL)
        row[f"copy_{name}_px"] = corner_error(result.homography, truth, size)
        result = auto.register_frames([view_a], [view_b], ir_valid=[view_valid],
                                      settings=bench.NO_RESIDUAL)
        row[f"views_{name}_px"] = corner_error(result.homography, a_to_b, size)
    return row


def summarize(rows: list[dict]) -> dict:
    """Per data kind and variant: median, p90, max and the fraction within 0.05 px."""
    summary = {}
    for kind in ("copy", "views"):
        for name in VARIANTS:
            errors = np.array([row[f"{kind}_{name}_px"] for row in rows])
            summary[f"{kind}/{name}"] = {
                "median_px": round(float(np.median(errors)), 4),
                "p90_px": round(float(np.percentile(errors, 90)), 4),
                "max_px": round(float(errors.max()), 4),
                "fraction_le_0.05px": round(float(np.mean(errors <= 0.05)), 3)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40, help="pairs per data set")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/same-modality-direction.json"))
    args = parser.parse_args()
    # The calibration bench's warps, drawn for its 40 pairs per set in its order.
    jobs = [job for job in bench.pair_jobs(np.random.default_rng(2024), 40) if job[1] < args.pairs]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = sorted(pool.imap_unordered(measure_pair, jobs),
                      key=lambda row: (bench.SETS.index(row["set"]), row["index"]))
    summary = summarize(rows)
    for key, entry in summary.items():
        print(f"{key:14s} median {entry['median_px']:.4f} p90 {entry['p90_px']:.4f} "
              f"max {entry['max_px']:.4f} <=0.05 px {entry['fraction_le_0.05px']:.1%}")
    report = {"what": __doc__.splitlines()[0], "pairs": len(rows), "summary": summary,
              "seconds": round(time.perf_counter() - started), "per_pair": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
