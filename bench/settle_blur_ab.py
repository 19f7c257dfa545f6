"""Would settling `--auto`'s fine ends at a 1 px feature blur, after the 2 px one, help? A/B.

    python bench/settle_blur_ab.py [--right 15 | --all] [--variants shipped,...] [--workers 2]
                                   [--out bench/results/settle-blur-ab.json]

Each fine end of `--auto` is settled by ECC at full resolution on orientation features blurred
2 px (``score_sigma``). Session 10 ran the whole accuracy bench with 1 px everywhere (scores and
floors included) and saw gains and losses. This variant keeps every score, floor and check at
2 px and only settles each end once more on features blurred 1 px, nearer the sharper optimum
(``settle_2_then_1px``). ``refine_written_1px`` leaves `--auto` as it is, decisions included,
and settles only the fit it would write once more at 1 px (the reference likewise).

On the IR-vs-visible runs of bench/calibration_accuracy.py (same pairs, same synthetic warps,
same reference: the best fit on the unwarped pair composed with the warp, itself computed by
the variant under test), it runs the shipped estimator and the variant on every pair the latest
bench run (``bench/results/calibration_auto.json``) refused or got more than 3 px wrong, and on
``--right`` pairs it got right (drawn with a fixed seed), or with ``--all`` on all of them. Per
pair and variant it records the error, whether the run was refused and why, and the evidence
the refusal checks read.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import calibration_accuracy as bench  # noqa: E402
from streamfuse.registration import auto  # noqa: E402
from streamfuse.registration.geometry import corner_error  # noqa: E402

SHIPPED_FINE_END = auto.fine_end
FINER_SIGMA = 1.0
VARIANTS = ("shipped", "settle_2_then_1px", "refine_written_1px")


def fine_end_settled_finer(ir_frame, vis_frame, ir_valid, settings, start_and_schedule):
    """``auto.fine_end``, its settled end settled again on features blurred ``FINER_SIGMA``;
    scored, like every end, at ``score_sigma``."""
    _, homography = SHIPPED_FINE_END(ir_frame, vis_frame, ir_valid, settings, start_and_schedule)
    finer = auto._level(ir_frame, vis_frame, ir_valid, vis_frame.shape[1], FINER_SIGMA, pad=False)
    homography = auto._settle(finer, homography, settings)
    return (auto.alignment_score(ir_frame, vis_frame, homography, ir_valid, settings.score_sigma),
            homography)


def refined_finer(ir_frame, vis_frame, homography, ir_valid=None):
    """``homography`` settled once more on features blurred ``FINER_SIGMA``."""
    if ir_valid is None:
        ir_valid = np.full(ir_frame.shape, 255, np.uint8)
    return auto.settled(ir_frame, vis_frame, homography, ir_valid, auto.AutoSettings(),
                        sigma=FINER_SIGMA)


def measure(job: tuple[str, str, int, np.ndarray]) -> dict:
    """One variant on one warped pair (runs in a worker process)."""
    variant, set_name, index, warp = job
    cv2.setNumThreads(1)
    auto.fine_end = fine_end_settled_finer if variant == "settle_2_then_1px" else SHIPPED_FINE_END
    ir, vis = bench.read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    reference = auto.register_frames([ir], [vis], settings=bench.BEST_FIT).homography
    moved, valid = bench.warp_with_mask(ir, warp)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    try:
        auto.check_reliable(result)
        refusal = None
    except Exception as error:  # noqa: BLE001 - a refusal is a measured outcome here
        refusal = str(error)
    if variant == "refine_written_1px":
        reference = refined_finer(ir, vis, reference)
        if refusal is None:
            result.homography = refined_finer(moved, vis, result.homography, valid)
    return {"variant": variant, "set": set_name, "index": index, "refused": refusal is not None,
            "refusal": refusal,
            "vs_unwarped_fit_px": round(corner_error(result.homography,
                                                     reference @ np.linalg.inv(warp), size), 3),
            "confidence": round(result.confidence, 4), "agreement": round(result.agreement, 4),
            "uncertainty_px": round(float(result.uncertainty_px), 3),
            "residual_px": round(float(result.residual_px), 3)}


def tally(rows: list[dict]) -> dict:
    written = [row for row in rows if not row["refused"]]
    return {"runs": len(rows),
            "right": sum(row["vs_unwarped_fit_px"] <= 3 for row in written),
            "wrong_files": sorted((f"{row['set']} {row['index']}", row["vs_unwarped_fit_px"])
                                  for row in written if row["vs_unwarped_fit_px"] > 3),
            "refused": len(rows) - len(written)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--right", type=int, default=15,
                        help="pairs the latest bench run got right, besides all it did not")
    parser.add_argument("--all", action="store_true", help="every pair of the latest bench run")
    parser.add_argument("--variants", default="shipped,settle_2_then_1px",
                        help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/settle-blur-ab.json")
    args = parser.parse_args()
    latest = json.loads((REPO_ROOT / "bench/results/calibration_auto.json").read_text())
    missed = [(row["set"], row["index"]) for row in latest["per_pair"]
              if row["refused"] or row["vs_unwarped_fit_px"] > 3]
    right = [(row["set"], row["index"]) for row in latest["per_pair"]
             if (row["set"], row["index"]) not in missed]
    drawn = np.random.default_rng(5).choice(len(right), args.right, replace=False)
    chosen = set(missed) | {right[i] for i in drawn}
    if args.all:
        chosen = set(missed) | set(right)
    pairs = len(latest["per_pair"]) // len(bench.SETS)
    warps = [job for job in bench.pair_jobs(np.random.default_rng(2024), pairs)
             if (job[0], job[1]) in chosen]
    variants = tuple(args.variants.split(","))
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"settle_blur_ab: unknown variant(s) {', '.join(unknown)}; "
                 f"use {', '.join(VARIANTS)}")
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = pool.map(measure, [(variant, *job) for job in warps for variant in variants],
                        chunksize=1)
    result = {"what": __doc__.splitlines()[0], "pairs": len(warps),
              "chosen": "all pairs of calibration_auto.json" if args.all else
                        f"the {len(missed)} runs calibration_auto.json refused or got > 3 px "
                        f"wrong, and {args.right} it got right (seed 5)",
              "tally": {variant: tally([row for row in rows if row["variant"] == variant])
                        for variant in variants},
              "per_run": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for variant, counts in result["tally"].items():
        print(f"{variant:18s} right {counts['right']}, refused {counts['refused']}, wrong files "
              f"{counts['wrong_files']} of {counts['runs']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
