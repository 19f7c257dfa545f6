"""Speed of `streamfuse calibrate --auto` against an earlier commit, measured in the same run.

The baseline commit is checked out beside this one (a temporary `git worktree`), and each
version runs the same work in its own single-threaded process, the two alternating round by
round so that a slow minute of the host hits both:

- `ecc`: the ECC loop alone (`ecc_multichannel`, 30 Gauss-Newton steps from a fixed start, each
  model) on the orientation features of flir-test 5 at 160, 320 and 529 px width (its full
  width; 40,000 samples, ``--auto``'s setting), in ms per step;
- `pairs`: `--auto` on single real pairs (`register_frames`, one worker) whose IR frame is
  warped with a seeded random homography, as in `bench/calibration_accuracy.py`;
- `demo_clip`: the command itself on the shipped demo clip (`streamfuse calibrate --auto
  --max-pairs 8 --workers 1`).

Each figure comes with its ratio (baseline time / this checkout's time), and each fit with how
far the two versions' homographies lie apart (mean corner distance, px): a faster loop that
also moved the results would show there.

Run: python bench/auto_speed.py --baseline REF [--pairs 4] [--rounds 3]
(-> bench/results/auto-speed.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PAIRS = (("flir-test", 5), ("tno", 13), ("flir-train", 30), ("tno", 2), ("flir-test", 21),
         ("flir-train", 7))


def run_worker(checkout: Path, pairs: int, output: Path) -> None:
    """Time every item with the streamfuse of ``checkout``; write JSON to ``output``."""
    sys.path.insert(0, str(checkout))
    import cv2
    import numpy as np

    import streamfuse
    from streamfuse.cli import main as cli_main
    from streamfuse.registration import auto, ecc
    from streamfuse.registration.geometry import random_homography

    assert Path(streamfuse.__file__).resolve().is_relative_to(checkout.resolve())
    cv2.setNumThreads(1)

    def read_pair(set_name: str, index: int):
        ir_path = sorted((DATA / set_name / "ir").iterdir())[index]
        vis_path = next((DATA / set_name / "vis").glob(ir_path.stem + ".*"))
        return (cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE),
                cv2.imread(str(vis_path), cv2.IMREAD_GRAYSCALE))

    result = {"ecc_ms_per_step": {}, "pairs": {}}
    ir, vis = read_pair("flir-test", 5)
    start = np.array([[1.01, 0.004, 2.5], [-0.006, 0.99, 1.2], [2e-6, -1e-6, 1.0]])
    for width in (160, 320, vis.shape[1]):
        size = (width, round(width * vis.shape[0] / vis.shape[1]))
        template, _ = ecc.orientation_features(cv2.resize(vis, size, interpolation=cv2.INTER_AREA),
                                               1.0)
        moving, moving_mask = ecc.orientation_features(
            cv2.resize(ir, size, interpolation=cv2.INTER_AREA), 1.0)
        for model in ("similarity", "affine", "homography"):
            began = time.perf_counter()
            ecc.ecc_multichannel(template, moving, start, moving_mask=moving_mask, model=model,
                                 iterations=30, epsilon=0.0, max_samples=40_000)
            result["ecc_ms_per_step"][f"{width}px {model}"] = \
                (time.perf_counter() - began) / 30 * 1e3
    for set_name, index in PAIRS[:pairs]:
        ir, vis = read_pair(set_name, index)
        size = (ir.shape[1], ir.shape[0])
        warp = random_homography(np.random.default_rng(index), size)
        moved = cv2.warpPerspective(ir, warp, size, flags=cv2.INTER_LINEAR)
        valid = cv2.warpPerspective(np.full(ir.shape, 255, np.uint8), warp, size,
                                    flags=cv2.INTER_NEAREST)
        began = time.perf_counter()
        fit = auto.register_frames([moved], [vis], ir_valid=[valid], workers=1)
        result["pairs"][f"{set_name} {index}"] = {
            "seconds": time.perf_counter() - began, "homography": fit.homography.tolist(),
            "size": list(size)}
    with tempfile.TemporaryDirectory() as folder:
        calibration = Path(folder) / "demo.yaml"
        began = time.perf_counter()
        status = cli_main(["calibrate", "--auto", "--ir", str(ROOT / "samples/demo/ir.mp4"),
                           "--vis", str(ROOT / "samples/demo/vis.mp4"), "--max-pairs", "8",
                           "--workers", "1", "-o", str(calibration)])
        if status:
            raise SystemExit(f"calibrate --auto on the demo clip failed ({status})")
        import yaml
        result["demo_clip"] = {"seconds": time.perf_counter() - began,
                               "homography": yaml.safe_load(calibration.read_text())["homography"],
                               "size": [160, 128]}
    output.write_text(json.dumps(result))


def corner_distance(first: list, second: list, size: list) -> float:
    import numpy as np

    from streamfuse.registration.geometry import corner_error
    return corner_error(np.array(first), np.array(second), tuple(size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git commit to compare against")
    parser.add_argument("--pairs", type=int, default=4, help=f"real pairs (at most {len(PAIRS)})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "bench/results/auto-speed.json"))
    args = parser.parse_args()
    if args.worker:
        run_worker(Path(args.worker), args.pairs, Path(args.worker_output))
        return
    import numpy as np
    sys.path.insert(0, str(ROOT))
    baseline = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.baseline],
                              capture_output=True, text=True, check=True).stdout.strip()
    current = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "streamfuse"],
                                capture_output=True, text=True, check=True).stdout.strip())
    environment = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                       MKL_NUM_THREADS="1")
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    began = time.time()
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree),
                        baseline], check=True, capture_output=True)
        try:
            for round_ in range(args.rounds):
                order = ["baseline", "current"] if round_ % 2 == 0 else ["current", "baseline"]
                for version in order:
                    checkout = worktree if version == "baseline" else ROOT
                    output = Path(folder) / f"{version}-{round_}.json"
                    subprocess.run([sys.executable, __file__, "--baseline", args.baseline,
                                    "--pairs", str(args.pairs), "--worker", str(checkout),
                                    "--worker-output", str(output)],
                                   check=True, env=environment, stdout=subprocess.DEVNULL)
                    runs[version].append(json.loads(output.read_text()))
                    print(f"round {round_ + 1}/{args.rounds}: {version} done", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(worktree)], check=False, capture_output=True)

    def median(version: str, pick) -> float:
        return float(np.median([pick(run) for run in runs[version]]))

    first_base, first_current = runs["baseline"][0], runs["current"][0]
    report: dict = {
        "what": "calibrate --auto: this checkout against a baseline commit, same run, "
                "alternating single-threaded processes; medians over rounds; ratio = "
                "baseline time / this checkout's time",
        "baseline_commit": baseline, "current_commit": current,
        "current_has_uncommitted_changes": dirty, "rounds": args.rounds,
        "ecc_ms_per_step": {}, "pairs": {}, "demo_clip": {},
    }
    for key in first_base["ecc_ms_per_step"]:
        base = median("baseline", lambda run: run["ecc_ms_per_step"][key])
        now = median("current", lambda run: run["ecc_ms_per_step"][key])
        report["ecc_ms_per_step"][key] = {"baseline": base, "current": now, "ratio": base / now}
    items = [("pairs", key) for key in first_base["pairs"]] + [("demo_clip", None)]
    for group, key in items:
        def pick(run, group=group, key=key):
            return run[group] if key is None else run[group][key]
        base = median("baseline", lambda run: pick(run)["seconds"])
        now = median("current", lambda run: pick(run)["seconds"])
        entry = {"baseline_s": base, "current_s": now, "ratio": base / now,
                 "homographies_apart_px": corner_distance(
                     pick(first_base)["homography"], pick(first_current)["homography"],
                     pick(first_base)["size"])}
        if key is None:
            report[group] = entry
        else:
            report[group][key] = entry
    report["pairs_total_ratio"] = (
        sum(entry["baseline_s"] for entry in report["pairs"].values())
        / sum(entry["current_s"] for entry in report["pairs"].values()))
    report["seconds"] = round(time.time() - began, 1)
    report["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor()}"
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    for key, entry in report["ecc_ms_per_step"].items():
        print(f"ECC {key:>22}: {entry['baseline']:6.2f} -> {entry['current']:6.2f} ms/step "
              f"({entry['ratio']:.2f}x)")
    for key, entry in list(report["pairs"].items()) + [("demo clip", report["demo_clip"])]:
        print(f"--auto {key:>16}: {entry['baseline_s']:6.1f} -> {entry['current_s']:6.1f} s "
              f"({entry['ratio']:.2f}x), fits {entry['homographies_apart_px']:.3g} px apart")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
