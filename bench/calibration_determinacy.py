"""How precisely does each bench pair pin down its own homography? A companion to
calibration_accuracy.py, on its 120 pairs and warps.

`--auto`'s IR-vs-visible result is scored against the best fit on the unwarped pair composed with
the synthetic warp (`vs_unwarped_fit`). That reference is itself the optimum of a correlation of
two modalities; where the scene is weak, the optimum moves when the objective sees slightly other
data, and a 3 px target cannot be met by any estimator of that objective except by chance.
For each pair this measures, with ECC run to convergence from the unwarped fit
(``auto.settled``), how far that optimum moves:

- `content_move_px`: when only the IR content that survives the pair's synthetic warp is used
  (the warp pushes up to 30 px of the frame out of view and rotates the rest; the warped run sees
  exactly that content);
- `blur_move_px`: when the orientation features are computed with 1 px or 3 px of blur instead
  of 2 px (the larger of the two moves).

The per-pair outcomes of the last accuracy run (bench/results/calibration_auto.json, which must
come from the same code) are then split by `content_move_px`.

Run: python bench/calibration_determinacy.py [--workers K]
(-> bench/results/calibration_determinacy.json, about 15 min on 2 cores)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration_accuracy import (  # noqa: E402
    BEST_FIT, ROOT, pair_jobs, read_pair, summary, warp_with_mask,
)
from streamfuse.registration import auto  # noqa: E402
from streamfuse.registration.geometry import corner_error  # noqa: E402

DETERMINED_PX = 1.5  # a pair whose fit moves at most this with its content counts as determined


def measure_pair(job: tuple[str, int, np.ndarray]) -> dict:
    set_name, index, warp = job
    cv2.setNumThreads(1)
    ir, vis = read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    full = np.full(ir.shape, 255, np.uint8)
    fit = auto.register_frames([ir], [vis], settings=BEST_FIT).homography
    # The fit is BEST_FIT's best candidate, settled like the fine stage's ends; moves are
    # measured from that settled point so that only the changed data moves them.
    reference = auto.settled(ir, vis, fit, full, BEST_FIT)
    _, warped_valid = warp_with_mask(ir, warp)
    surviving = cv2.warpPerspective(warped_valid, np.linalg.inv(warp), size,
                                    flags=cv2.INTER_NEAREST)
    content_move = corner_error(auto.settled(ir, vis, reference, surviving, BEST_FIT),
                                reference, size)
    blur_move = max(corner_error(auto.settled(ir, vis, reference, full, BEST_FIT, sigma),
                                 reference, size) for sigma in (1.0, 3.0))
    return {"set": set_name, "index": index, "content_move_px": round(content_move, 4),
            "blur_move_px": round(blur_move, 4),
            "settling_move_px": round(corner_error(reference, fit, size), 4)}


def outcome_split(rows: list[dict], accuracy: dict) -> dict:
    """--auto's IR-vs-visible success (within 3 px of the unwarped fit, refusals failing) on the
    pairs whose fit is determined by their content and on the rest."""
    outcomes = {(row["set"], row["index"]): row for row in accuracy["per_pair"]}
    split = {}
    for name, chosen in (("determined", lambda move: move <= DETERMINED_PX),
                         ("not_determined", lambda move: move > DETERMINED_PX)):
        keys = [(row["set"], row["index"]) for row in rows if chosen(row["content_move_px"])]
        good = [not outcomes[key]["refused"] and outcomes[key]["vs_unwarped_fit_px"] <= 3
                for key in keys]
        wrong = [f"{key[0]} {key[1]}" for key in keys if not outcomes[key]["refused"]
                 and outcomes[key]["vs_unwarped_fit_px"] > 3]
        split[name] = {"pairs": len(keys),
                       "within_3px": float(np.mean(good)) if keys else None,
                       "refused": int(sum(outcomes[key]["refused"] for key in keys)),
                       "wrong_files": wrong}
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40, help="pairs per data set")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--accuracy", default=str(ROOT / "bench/results/calibration_auto.json"))
    parser.add_argument("--output",
                        default=str(ROOT / "bench/results/calibration_determinacy.json"))
    args = parser.parse_args()
    # The same warps as calibration_accuracy.py: its generator, drawn in its order.
    jobs = pair_jobs(np.random.default_rng(2024), args.pairs)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = []
        for row in pool.imap(measure_pair, jobs):
            rows.append(row)
            print(f"{row['set']} {row['index']}: content {row['content_move_px']:.2f} "
                  f"blur {row['blur_move_px']:.2f} settling {row['settling_move_px']:.2f}",
                  flush=True)
    with open(args.accuracy) as accuracy_file:
        accuracy = json.load(accuracy_file)
    report = {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "determined_px": DETERMINED_PX,
        "content_move": summary([row["content_move_px"] for row in rows]),
        "blur_move": summary([row["blur_move_px"] for row in rows]),
        "auto_outcome_by_determinacy": outcome_split(rows, accuracy),
        "per_pair": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(json.dumps({key: report[key] for key in ("auto_outcome_by_determinacy",)}, indent=1))


if __name__ == "__main__":
    main()
