"""Mean fusion metrics of the classical baselines over a paired data set (default: 40 TNO pairs).

Checks the metric conventions against the scale quoted in docs/method-notes.md (a pixel average
of the TNO pairs: EN 6.2, SD 24.8, SF 6.4, VIF 0.57, AG 3.3, SCD 1.61) and gives the numbers any
learned fusion has to beat. Slow-ish (about 10 s per baseline for TNO on one core), so a script,
not a test.

    python bench/metrics_tno_baselines.py [--data ../shared/data/tno] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.baselines import average_fusion, two_scale_fusion  # noqa: E402
from streamfuse.errors import StreamFuseError  # noqa: E402
from streamfuse.metrics import METRICS, evaluate  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data")) / "tno"
# docs/method-notes.md, "Metrics": pixel average of the TNO pairs.
NOTES_AVERAGE = {"EN": 6.2, "SD": 24.8, "SF": 6.4, "VIF": 0.57, "AG": 3.3, "SCD": 1.61}
BASELINES = {"average": average_fusion, "two_scale": two_scale_fusion}


def read_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every (stem, ir, vis) of ``root/{ir,vis}``, each image (H, W) uint8."""
    ir_dir, vis_dir = root / "ir", root / "vis"
    if not ir_dir.is_dir() or not vis_dir.is_dir():
        raise StreamFuseError(f"{root} has no ir/ and vis/ folders: pass --data PATH/TO/SET")
    pairs = []
    for ir_path in sorted(ir_dir.iterdir()):
        vis_matches = sorted(vis_dir.glob(ir_path.stem + ".*"))
        if not vis_matches:
            raise StreamFuseError(f"{ir_path} has no visible partner {vis_dir / ir_path.stem}.*")
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(vis_matches[0]), cv2.IMREAD_GRAYSCALE)
        if ir is None or vis is None:
            raise StreamFuseError(f"cannot read {ir_path} or {vis_matches[0]} as an image")
        pairs.append((ir_path.stem, ir, vis))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with ir/ and vis/")
    parser.add_argument("--out", type=Path, help="write per-pair and mean metrics as JSON here")
    args = parser.parse_args(argv)
    try:
        pairs = read_pairs(args.data)
    except StreamFuseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    per_pair: dict[str, dict[str, dict[str, float]]] = {name: {} for name in BASELINES}
    for stem, ir, vis in tqdm(pairs, desc="pairs"):
        for name, fuse in BASELINES.items():
            per_pair[name][stem] = evaluate(fuse(ir, vis), ir, vis)
    means = {
        name: {
            metric: float(np.mean([scores[metric] for scores in results.values()]))
            for metric in METRICS
        }
        for name, results in per_pair.items()
    }

    print(f"{len(pairs)} pairs from {args.data}")
    print(f"{'metric':<6} {'notes avg':>10} {'average':>10} {'two_scale':>10}")
    for metric in METRICS:
        notes = f"{NOTES_AVERAGE[metric]:.2f}" if metric in NOTES_AVERAGE else "-"
        average, two_scale = means["average"][metric], means["two_scale"][metric]
        print(f"{metric:<6} {notes:>10} {average:>10.3f} {two_scale:>10.3f}")
    if args.out:
        report = {"data": str(args.data), "means": means, "per_pair": per_pair}
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
