"""Accuracy study of `streamfuse calibrate --auto` on synthetic truth made from real pairs.

The IR frame of a real aligned pair (../shared/data) is warped with a random known homography
(scale 0.92-1.08, rotation up to 5 deg, shift up to 30 px, perspective changing the local scale
by up to 3%); its valid-pixel mask is warped too so the black border is not an edge. We report
the mean corner error (visible pixels at the IR image corners) for:

- same modality: the visible frame against a warped copy of itself;
- IR vs visible, one pair at a time;
- pooled clips: 24 frame pairs written as two real videos (PyAV, FFV1), one estimate each,
  against the nominal truth and against the pooled fit on the unwarped clip (as below).

The source pairs are themselves aligned only approximately (FLIR shows parallax between the
near road and far objects; several TNO pairs are offset by a few pixels), so IR-vs-visible
errors are given twice: against the nominal truth (the inverse of the synthetic warp) and
against the best-scoring fit on the unwarped pair composed with it (`vs_unwarped_fit`: the
estimator's own consistency, free of the source misalignment; the fit is taken without the
keep-the-start rule, which only applies when the start is already close). How far that fit is
from the nominal alignment is reported too (`unwarped_fit_vs_identity`): it bounds what the
nominal error can reach. Stability is the distance from identity of `--auto` (default
settings) on the unwarped pair, and from its own fit when started there (`fixed_point`).
`block_matching_fit` is a second view of the source alignment that shares no step with ECC
(local patch matches and RANSAC): where it finds enough patches, it says how far the source
pairs are from their nominal alignment independently of the estimator under test.

Runs single-threaded (OpenCV and BLAS) so it does not compete with other jobs.
Run: python bench/calibration_accuracy.py [--pairs N] [--workers K]
(-> bench/results/calibration_auto.json)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread, set before NumPy loads (the estimator's small products only lose to threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamfuse.registration import auto, ecc  # noqa: E402
from streamfuse.registration.frames import read_pairs  # noqa: E402
from streamfuse.registration.geometry import (  # noqa: E402
    corner_error, pixel_scaling, random_homography)

DATA = ROOT.parent / "shared" / "data"
# flir-train last: the pairs of the first two keep the warps they had before it was added.
SETS = ("flir-test", "tno", "flir-train")
# The fit on the unwarped pair, reference of the consistency measure: the best-scoring
# candidate, whatever its margin over the start and even where the scene is ambiguous.
# Its residual is not needed (measuring it costs a few ECC runs), nor that of the stability runs.
BEST_FIT = auto.AutoSettings(keep_margin=-1.0, min_gain_t=-1e9, ambiguity_ratio=2.0,
                             measure_sensitivity=False)
NO_RESIDUAL = auto.AutoSettings(measure_sensitivity=False)
# Pooled clips: this many flir-train pairs at this size, as two videos.
CLIP_PAIRS = 24
CLIP_SIZE = (320, 240)


def read_pair(set_name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    ir_path = sorted((DATA / set_name / "ir").iterdir())[index]
    vis_path = next((DATA / set_name / "vis").glob(ir_path.stem + ".*"))
    return (cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE),
            cv2.imread(str(vis_path), cv2.IMREAD_GRAYSCALE))


def block_matching_fit(ir: np.ndarray, vis: np.ndarray, grid: int = 6, search: int = 24,
                       min_score: float = 0.2) -> tuple[np.ndarray | None, int]:
    """An IR->visible homography of a same-size pair found without ECC, as an independent view of
    how well the source pair is aligned: a grid x grid set of square patches of the IR frame's
    orientation features, each matched by translation within +-``search`` px in the visible
    frame's (normalised cross-correlation, sub-pixel by a parabola through the peak), patches with
    a weak or repeated peak dropped, a RANSAC homography (2 px) through the rest. Returns
    (homography or None when fewer than 8 patches match, number of matched patches)."""
    if ir.shape != vis.shape:
        return None, 0
    ir_features, _ = ecc.orientation_features(ir, 1.5)
    vis_features, _ = ecc.orientation_features(vis, 1.5)
    height, width = ir.shape
    half = max(24, min(height, width) // (2 * grid))
    sources, targets = [], []
    for y in np.linspace(half + search, height - half - search - 1, grid).astype(int):
        for x in np.linspace(half + search, width - half - search - 1, grid).astype(int):
            patch = np.ascontiguousarray(ir_features[y - half:y + half, x - half:x + half])
            if np.linalg.norm(patch, axis=2).mean() < 0.2:
                continue  # too little structure to match
            area = np.ascontiguousarray(vis_features[y - half - search:y + half + search,
                                                     x - half - search:x + half + search])
            scores = cv2.matchTemplate(area, patch, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px, py) = cv2.minMaxLoc(scores)
            if peak < min_score or not (0 < px < scores.shape[1] - 1 and
                                        0 < py < scores.shape[0] - 1):
                continue
            others = scores.copy()
            others[max(0, py - 3):py + 4, max(0, px - 3):px + 4] = -1
            if others.max() > 0.9 * peak:
                continue  # a second place matches about as well
            dx = 0.5 * (scores[py, px - 1] - scores[py, px + 1]) / (
                scores[py, px - 1] - 2 * peak + scores[py, px + 1])
            dy = 0.5 * (scores[py - 1, px] - scores[py + 1, px]) / (
                scores[py - 1, px] - 2 * peak + scores[py + 1, px])
            sources.append((x, y))
            targets.append((x + px - search + dx, y + py - search + dy))
    if len(sources) < 8:
        return None, len(sources)
    homography, _ = cv2.findHomography(np.float32(sources), np.float32(targets), cv2.RANSAC, 2.0)
    return (None if homography is None else homography / homography[2, 2]), len(sources)


def warp_with_mask(image: np.ndarray, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = (image.shape[1], image.shape[0])
    return (cv2.warpPerspective(image, warp, size, flags=cv2.INTER_LINEAR),
            cv2.warpPerspective(np.full(image.shape, 255, np.uint8), warp, size,
                                flags=cv2.INTER_NEAREST))


def render_view(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """A camera's view of ``image`` (the scene) through ``homography``: rendered at twice the
    size (bicubic) and area-averaged back, as a sensor integrates light over its pixels, 8-bit.

    The doubling is centre-aligned (view pixel x covers rendered pixels 2x and 2x + 1, centred
    at 2x + 0.5): until session 31 it was a plain factor 2, which moved every view a quarter
    pixel down and right, and two views of different scale no longer met where their true
    homography said (up to 0.07 px at the corners). Where the view looks past the scene's edge
    it sees the scene mirrored, not black: a camera's frame has no black border, and the
    estimator, told only where the IR frame is valid, would take a visible frame's black fill
    for content (since session 31; the valid masks of ``two_views`` leave those parts out)."""
    size = (image.shape[1], image.shape[0])
    double = pixel_scaling(size, (2 * size[0], 2 * size[1]))
    big = cv2.warpPerspective(image, double @ homography, (2 * size[0], 2 * size[1]),
                              flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(big, size, interpolation=cv2.INTER_AREA)


def two_views(image: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two views of one frame through independent random homographies, neither a resample of the
    other (``render_view``): (view a, view b, a's valid mask where b also sees the scene,
    the true a->b homography)."""
    size = (image.shape[1], image.shape[0])
    to_a = random_homography(rng, size, max_shift_px=15)
    to_b = random_homography(rng, size, max_shift_px=15)
    a_to_b = to_b @ np.linalg.inv(to_a)
    full = np.full(image.shape, 255, np.uint8)
    seen_by_a = cv2.warpPerspective(full, to_a, size, flags=cv2.INTER_NEAREST)
    seen_by_b = cv2.warpPerspective(full, to_b, size, flags=cv2.INTER_NEAREST)
    valid = cv2.bitwise_and(seen_by_a, cv2.warpPerspective(seen_by_b, np.linalg.inv(a_to_b), size,
                                                           flags=cv2.INTER_NEAREST))
    return render_view(image, to_a), render_view(image, to_b), valid, a_to_b


def residual_check(errors: list[float], residuals: list[float]) -> dict:
    """How well the residual_px written with each result estimates its actual error."""
    errors, residuals = np.array(errors), np.array(residuals)
    return {
        "count": int(len(errors)),
        "error_le_residual": float(np.mean(errors <= residuals)),
        "error_le_2x_residual": float(np.mean(errors <= 2 * residuals)),
        "median_error_over_residual": float(np.median(errors / np.maximum(residuals, 1e-9))),
        "median_residual_px": float(np.median(residuals)),
        "median_error_px": float(np.median(errors)),
        "residuals_px": [round(float(v), 4) for v in residuals],
    }


def warned_files(errors: list[float], residuals: list[float]) -> dict:
    """The written files that `calibrate --auto` warns about (residual above
    ``AutoSettings.warn_residual_px``), right and wrong (more than 3 px off)."""
    threshold = auto.AutoSettings().warn_residual_px
    warned = [error for error, residual in zip(errors, residuals) if residual > threshold]
    return {"threshold_px": threshold, "written": len(errors),
            "wrong": int(sum(error > 3 for error in errors)),
            "warned": len(warned), "warned_wrong": int(sum(error > 3 for error in warned))}


def summary(errors: list[float]) -> dict:
    values = np.array(errors)
    return {
        "count": int(len(values)),
        "median_px": float(np.median(values)),
        "mean_px": float(np.mean(values)),
        "p90_px": float(np.percentile(values, 90)),
        "max_px": float(np.max(values)),
        "fraction_le_0.05px": float(np.mean(values <= 0.05)),
        "fraction_le_1px": float(np.mean(values <= 1)),
        "fraction_le_3px": float(np.mean(values <= 3)),
        "values_px": [round(float(v), 4) for v in values],
    }


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "gray"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")))
        container.mux(stream.encode())


def timed_estimate(ir_frames: list[np.ndarray], vis_frames: list[np.ndarray],
                   ir_valid: list[np.ndarray] | None = None
                   ) -> tuple[auto.AutoResult, float, bool]:
    """``--auto`` with default settings: (result, seconds it took, whether it was refused)."""
    started = time.perf_counter()
    result = auto.register_frames(ir_frames, vis_frames, ir_valid=ir_valid)
    seconds = time.perf_counter() - started
    try:
        auto.check_reliable(result)
    except Exception:  # noqa: BLE001 - a refusal is a measured outcome here
        return result, seconds, True
    return result, seconds, False


def pair_jobs(rng: np.random.Generator, pairs: int) -> list[tuple[str, int, np.ndarray]]:
    """[(set, index, synthetic (3, 3) warp)] for the first ``pairs`` pairs of each set, the warps
    drawn from ``rng`` in this order (the bench's generator: every study sees the same warps)."""
    jobs = []
    for set_name in SETS:
        for index in range(pairs):
            ir, _ = read_pair(set_name, index)
            jobs.append((set_name, index, random_homography(rng, (ir.shape[1], ir.shape[0]))))
    return jobs


def measure_pair(job: tuple[str, int, np.ndarray]) -> dict:
    """Every measurement on one source pair, given its synthetic warp (runs in a worker)."""
    set_name, index, warp = job
    cv2.setNumThreads(1)
    ir, vis = read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    truth = np.linalg.inv(warp)
    moved, valid = warp_with_mask(vis, warp)
    same_result = auto.register_frames([moved], [vis], ir_valid=[valid])
    same = corner_error(same_result.homography, truth, size)
    # Each pair's own stream for the two views, so that workers do not share one.
    view_a, view_b, view_valid, a_to_b = two_views(
        vis, np.random.default_rng([7, SETS.index(set_name), index]))
    views_result = auto.register_frames([view_a], [view_b], ir_valid=[view_valid])
    same_views = corner_error(views_result.homography, a_to_b, (vis.shape[1], vis.shape[0]))
    unwarped = auto.register_frames([ir], [vis], settings=NO_RESIDUAL)
    try:
        auto.check_reliable(unwarped)
        unwarped_written = True
    except Exception:  # noqa: BLE001 - a refusal writes nothing: no move
        unwarped_written = False
    unwarped_fit = auto.register_frames([ir], [vis], settings=BEST_FIT)
    own_fit = auto.register_frames([ir], [vis], initial=unwarped_fit.homography,
                                   settings=NO_RESIDUAL)
    moved, valid = warp_with_mask(ir, warp)
    result, seconds, refused = timed_estimate([moved], [vis], [valid])
    block_fit, block_matches = block_matching_fit(ir, vis)
    return {
        "set": set_name, "index": index, "size": list(size),
        "same_modality_px": same, "same_modality_two_views_px": same_views,
        "error_px": corner_error(result.homography, truth, size),
        "vs_unwarped_fit_px": corner_error(result.homography,
                                           unwarped_fit.homography @ truth, size),
        "stability_px": corner_error(unwarped.homography, np.eye(3), size),
        "unwarped_written": unwarped_written,
        "unwarped_fit_vs_identity_px": corner_error(unwarped_fit.homography, np.eye(3), size),
        "fixed_point_px": corner_error(own_fit.homography, unwarped_fit.homography, size),
        "block_fit_vs_identity_px": None if block_fit is None else corner_error(
            block_fit, np.eye(3), size),
        "block_fit_vs_unwarped_fit_px": None if block_fit is None else corner_error(
            block_fit, unwarped_fit.homography, size),
        "block_matches": block_matches, "seconds": seconds,
        "uncertainty_px": float(result.uncertainty_px),
        "residual_px": float(result.residual_px),
        "same_modality_residual_px": float(same_result.residual_px),
        "same_modality_two_views_residual_px": float(views_result.residual_px),
        "confidence": result.confidence, "agreement": result.agreement,
        "model": result.model, "refused": refused,
    }


def measure_clip(job: tuple[int, list[int], np.ndarray]) -> dict:
    """One pooled clip: CLIP_PAIRS flir-train pairs as two real videos, the IR one warped;
    its estimate against the nominal truth and against the pooled best fit on the unwarped
    clip composed with the warp (runs in a worker)."""
    clip, picks, warp = job
    cv2.setNumThreads(1)
    pairs = [read_pair("flir-train", index) for index in picks]
    ir_frames = [cv2.resize(ir, CLIP_SIZE, interpolation=cv2.INTER_AREA) for ir, _ in pairs]
    vis_frames = [cv2.resize(vis, CLIP_SIZE, interpolation=cv2.INTER_AREA) for _, vis in pairs]
    moved = [cv2.warpPerspective(frame, warp, CLIP_SIZE, borderMode=cv2.BORDER_REFLECT)
             for frame in ir_frames]
    with tempfile.TemporaryDirectory() as folder:
        write_video(Path(folder) / "ir.mkv", moved)
        write_video(Path(folder) / "vis.mkv", vis_frames)
        decoded = read_pairs(Path(folder) / "ir.mkv", Path(folder) / "vis.mkv")
    result, seconds, refused = timed_estimate([ir for ir, _ in decoded],
                                              [vis for _, vis in decoded])
    unwarped_fit = auto.register_frames(ir_frames, vis_frames, settings=BEST_FIT)
    truth = np.linalg.inv(warp)
    return {
        "clip": clip, "flir_train_pairs": picks, "pairs": len(decoded),
        "error_px": corner_error(result.homography, truth, CLIP_SIZE),
        "vs_unwarped_fit_px": corner_error(result.homography, unwarped_fit.homography @ truth,
                                           CLIP_SIZE),
        "unwarped_fit_vs_identity_px": corner_error(unwarped_fit.homography, np.eye(3),
                                                    CLIP_SIZE),
        "residual_px": float(result.residual_px), "spread_px": float(result.spread_px),
        "refused": refused, "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12, help="pairs per data set")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes measuring pairs side by side (each single-threaded)")
    parser.add_argument("--output", default=str(ROOT / "bench/results/calibration_auto.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(2024)
    bench_started = time.perf_counter()
    jobs = pair_jobs(rng, args.pairs)
    # Drawn after the pairs' warps, so the first clips keep the picks and warps of earlier runs.
    clip_jobs = []
    for clip in range(args.clips):
        picks = [int(i) for i in rng.choice(180, size=CLIP_PAIRS, replace=False)]
        clip_jobs.append((clip, picks, random_homography(rng, CLIP_SIZE)))
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = []
        for row in pool.imap(measure_pair, jobs):
            rows.append(row)
            print(f"{row['set']} {row['index']}: same {row['same_modality_px']:.3f} "
                  f"views {row['same_modality_two_views_px']:.3f} ir {row['error_px']:.2f} "
                  f"consistent {row['vs_unwarped_fit_px']:.2f} "
                  f"stable {row['stability_px']:.2f} "
                  f"offset {row['unwarped_fit_vs_identity_px']:.2f} "
                  f"fixed {row['fixed_point_px']:.2f} conf {row['confidence']:.2f} "
                  f"agree {row['agreement']:.2f}{' REFUSED' if row['refused'] else ''}",
                  flush=True)
        clips = []
        for clip in pool.imap(measure_clip, clip_jobs):
            clips.append(clip)
            print(f"clip {clip['clip']}: {clip['error_px']:.2f} px (consistent "
                  f"{clip['vs_unwarped_fit_px']:.2f}) over {clip['pairs']} pairs"
                  f"{' REFUSED' if clip['refused'] else ''}", flush=True)
    same = [row["same_modality_px"] for row in rows]
    same_views = [row["same_modality_two_views_px"] for row in rows]
    cross = [row["error_px"] for row in rows]
    cross_consistent = [row["vs_unwarped_fit_px"] for row in rows]
    stable = [row["stability_px"] for row in rows]
    stable_written = [row["stability_px"] if row["unwarped_written"] else 0.0 for row in rows]
    refused = [row["refused"] for row in rows]
    unwarped_offset = [row["unwarped_fit_vs_identity_px"] for row in rows]
    fixed_point = [row["fixed_point_px"] for row in rows]
    seconds = [row["seconds"] for row in rows]
    blocks = [row for row in rows if row["block_fit_vs_identity_px"] is not None]
    block_offset = [row["block_fit_vs_identity_px"] for row in blocks]
    block_agreement = [row["block_fit_vs_unwarped_fit_px"] for row in blocks]
    fit_offset_where_blocks = [row["unwarped_fit_vs_identity_px"] for row in blocks]
    per_pair = [{key: round(value, 4) if isinstance(value, float) else value
                 for key, value in row.items()} for row in rows]
    accepted_errors = [e for e, r in zip(cross, refused) if not r]
    # A refusal counts as a failure of the 3 px target.
    consistent_or_refused = [np.inf if r else e for e, r in zip(cross_consistent, refused)]
    nominal_or_refused = [np.inf if r else e for e, r in zip(cross, refused)]
    by_set = {}
    for set_name in SETS:
        rows = [i for i, row in enumerate(per_pair) if row["set"] == set_name]
        by_set[set_name] = {
            "ir_vs_visible_vs_unwarped_fit_le_3px_accepted": float(np.mean(
                [consistent_or_refused[i] <= 3 for i in rows])),
            "ir_vs_visible_nominal_le_3px_accepted": float(np.mean(
                [nominal_or_refused[i] <= 3 for i in rows])),
            "refused_fraction": float(np.mean([refused[i] for i in rows])),
            "stability_le_1px": float(np.mean([stable[i] <= 1 for i in rows])),
            "unwarped_fit_vs_identity_median_px": float(np.median(
                [unwarped_offset[i] for i in rows])),
            "accepted_over_3px_vs_unwarped_fit": int(sum(
                1 for i in rows if not refused[i] and cross_consistent[i] > 3)),
            "same_modality_le_0.05px": float(np.mean([same[i] <= 0.05 for i in rows])),
            "same_modality_two_views_le_0.05px": float(np.mean(
                [same_views[i] <= 0.05 for i in rows])),
            "pairs": len(rows),
        }

    clip_errors = [clip["error_px"] for clip in clips]
    clip_consistent = [clip["vs_unwarped_fit_px"] for clip in clips]

    report = {
        "what": "mean corner error of --auto against synthetic homographies on real pairs",
        "warp": "scale 0.92-1.08, rotation <= 5 deg, shift <= 30 px, perspective <= 3%",
        "targets": {"same_modality_px": 0.05, "ir_vs_visible_px_on_90pct": 3.0,
                    "pooled_clip_median_px": 1.5, "stability_px": 1.0},
        "same_modality": summary(same),
        "same_modality_two_views": summary(same_views),
        "same_modality_two_views_note": (
            "the visible frame seen through two random homographies (shift <= 15 px), each "
            "rendered at 2x bicubic and area-averaged like a sensor (render_view, since session 31 "
            "centre-aligned, before each view was a quarter pixel off its homography, and "
            "mirrored past the scene's edge instead of black): unlike "
            "'same_modality', neither image is a bilinear resample of the other, so no direction "
            "of comparison replays the interpolation that made the data"),
        "ir_vs_visible": summary(cross),
        "ir_vs_visible_accepted_only": summary(accepted_errors) if accepted_errors else None,
        "ir_vs_visible_vs_unwarped_fit": summary(cross_consistent),
        "target_2_le_3px_counting_refusals_as_failures": {
            "vs_unwarped_fit": float(np.mean(np.array(consistent_or_refused) <= 3)),
            "vs_nominal_truth": float(np.mean(np.array(nominal_or_refused) <= 3)),
        },
        "unwarped_fit_vs_identity": summary(unwarped_offset),
        "by_set": by_set,
        "source_alignment_by_block_matching": {
            "what": "pairs where block_matching_fit (patch NCC + RANSAC, no ECC) found >= 8 "
                    "patches: its distance from the nominal (identity) alignment, the same for "
                    "the ECC fit on those pairs, and the distance between the two fits",
            "block_fit_vs_identity": summary(block_offset) if block_offset else None,
            "unwarped_fit_vs_identity": summary(fit_offset_where_blocks) if block_offset else None,
            "block_fit_vs_unwarped_fit": summary(block_agreement) if block_offset else None,
        },
        "ir_vs_visible_reference": (
            "the source pairs are not aligned to ~1 px (parallax, offsets, and some pairs that "
            "are not one view; see source_alignment_by_block_matching), so 'ir_vs_visible' "
            "(vs the nominal synthetic truth) includes the source "
            "misalignment; 'ir_vs_visible_vs_unwarped_fit' scores against the best fit on the "
            "unwarped pair composed with the synthetic warp (the estimator's consistency); "
            "'unwarped_fit_vs_identity' is how far that fit is from the nominal alignment, "
            "'stability_fixed_point' how far --auto moves when started at it"),
        "stability_where_block_matching_sees_alignment": {
            "what": "stability (corner move of --auto on the unwarped pair) on the source pairs "
                    "whose block_matching_fit lies within 1.5 px of the nominal alignment: the "
                    "pairs an independent method calls already aligned",
            "pairs": [f"{row['set']} {row['index']}" for row in per_pair
                      if row["block_fit_vs_identity_px"] is not None
                      and row["block_fit_vs_identity_px"] <= 1.5],
            "moves_px": [row["stability_px"] for row in per_pair
                         if row["block_fit_vs_identity_px"] is not None
                         and row["block_fit_vs_identity_px"] <= 1.5],
        },
        "stability_unwarped_vs_identity": summary(stable),
        "stability_as_written": summary(stable_written),
        "stability_as_written_note": "a refused --auto writes nothing: its move counts 0",
        "stability_fixed_point": summary(fixed_point),
        "seconds_per_ir_pair": summary(seconds),
        "refused_fraction": float(np.mean(refused)),
        "accepted_but_off": {
            "what": "IR-vs-visible runs that wrote a file more than 3 px from the unwarped fit "
                    "composed with the warp (a wrong file), and more than 10 px",
            "over_3px": int(sum(1 for e, r in zip(cross_consistent, refused) if not r and e > 3)),
            "over_10px": int(sum(1 for e, r in zip(cross_consistent, refused)
                                 if not r and e > 10)),
            "runs": len(refused),
        },
        "residual_as_error_estimate": {
            "what": "residual_px, the error estimate --auto writes (the larger of the frames' "
                    "disagreement and the fit's move with another feature blur or without the "
                    "frame's outer band), against the actual error: IR vs visible on the "
                    "accepted runs (vs the unwarped fit composed with the warp), same modality "
                    "against the truth, clips against the unwarped clip's fit",
            "ir_vs_visible_accepted": residual_check(
                [row["vs_unwarped_fit_px"] for row in per_pair if not row["refused"]],
                [row["residual_px"] for row in per_pair if not row["refused"]]),
            "ir_vs_visible_wrong_files": [
                {"pair": f"{row['set']} {row['index']}", "error_px": row["vs_unwarped_fit_px"],
                 "residual_px": row["residual_px"]} for row in per_pair
                if not row["refused"] and row["vs_unwarped_fit_px"] > 3],
            "ir_vs_visible_warned": warned_files(
                [row["vs_unwarped_fit_px"] for row in per_pair if not row["refused"]],
                [row["residual_px"] for row in per_pair if not row["refused"]]),
            "same_modality": residual_check(same, [row["same_modality_residual_px"]
                                                   for row in per_pair]),
            "same_modality_two_views": residual_check(
                same_views, [row["same_modality_two_views_residual_px"] for row in per_pair]),
            "pooled_clips": residual_check(
                clip_consistent, [clip["residual_px"] for clip in clips]) if clips else None,
        },
        "pooled_clip_24_pairs": summary(clip_errors) if clip_errors else None,
        "pooled_clip_24_pairs_vs_unwarped_fit": summary(clip_consistent) if clips else None,
        "pooled_clip_note": (
            "24 flir-train pairs at 320x240 as two FFV1 videos, one estimate per clip: "
            "'pooled_clip_24_pairs' against the nominal synthetic truth (includes the source "
            "pairs' own misalignment, about half of their full-size offsets at this size), "
            "'_vs_unwarped_fit' against the pooled best fit on the unwarped clip composed "
            "with the warp"),
        "pooled_clips": clips,
        "per_pair": per_pair,
        "seconds": round(time.perf_counter() - bench_started, 1),
        "machine": platform.processor() or platform.machine(),
        "opencv": cv2.__version__,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
