"""Choose the guided-filter radius and eps of the saliency rule (eq. 11) on held-out frames.

The paper gives neither. We have no separate validation set (the paper's NIR scenes are not
available), so the sweep runs on full-size FLIR training frames (training only ever saw their
128x128 centre crops) and leaves flir-test and TNO untouched for reporting.

    python bench/guided_filter_sweep.py --weights models/didfuse_flir.pt --pairs 12 --out bench/results/guided_filter_sweep.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from streamfuse.evaluate import MultiRuleFuser
from streamfuse.fuser import Fuser
from streamfuse.fusion import FusionConfig
from streamfuse.images import pair_files, read_image
from streamfuse.metrics import evaluate

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "flir-train")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=12, help="every k-th pair so that this many are used")
    parser.add_argument("--radii", default="2,4,7,12")
    parser.add_argument("--eps", default="0.001,0.01,0.1")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "guided_filter_sweep.json")
    args = parser.parse_args()

    pairs, _ = pair_files(args.data / "ir", args.data / "vis")
    step = max(1, len(pairs) // args.pairs)
    pairs = pairs[::step][: args.pairs]
    settings = {
        f"r={r} eps={e}": FusionConfig(rule="saliency+cam", guided_radius=int(r), guided_eps=float(e))
        for r, e in itertools.product(args.radii.split(","), args.eps.split(","))
    }
    multi = MultiRuleFuser(Fuser.from_weights(args.weights), settings)
    scores: dict[str, list[dict]] = {name: [] for name in settings}
    started = time.perf_counter()
    for stem, ir_path, vis_path in pairs:
        ir, vis = read_image(ir_path, gray=True), read_image(vis_path, gray=True)
        for name, fused in multi.fuse(ir, vis).items():
            scores[name].append(evaluate(fused, ir, vis))
        print(f"{stem} done", flush=True)
    summary = {name: {m: float(np.mean([s[m] for s in rows])) for m in rows[0]} for name, rows in scores.items()}
    # Rank each setting on the paper's six metrics (Table III chose strategies by them; higher is
    # better for each) and sum the ranks.
    metrics = ["EN", "SD", "SF", "VIF", "AG", "SCD"]
    rank_sum = {name: 0 for name in summary}
    for metric in metrics:
        for rank, name in enumerate(sorted(summary, key=lambda n: -summary[n][metric])):
            rank_sum[name] += rank
    best = min(rank_sum, key=rank_sum.get)
    result = {"data": str(args.data), "pairs": [p[0] for p in pairs], "weights": str(args.weights or "default"),
              "seconds": round(time.perf_counter() - started, 1), "mean": summary, "rank_sum": rank_sum, "best": best}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'setting':16s} " + " ".join(f"{m:>7s}" for m in metrics) + "  rank-sum")
    for name in sorted(summary, key=rank_sum.get):
        print(f"{name:16s} " + " ".join(f"{summary[name][m]:7.3f}" for m in metrics) + f"  {rank_sum[name]}")
    print(f"best: {best}")


if __name__ == "__main__":
    main()
