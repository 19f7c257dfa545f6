"""Would approximate statistics bring the CPU fusion layer near its 25 % target? A/B, int8.

    python bench/fusion_approximations.py [--data ../shared/data] [--rounds 20] [--pairs 8]
                                          [--out bench/results/fusion-approximations.json]

The CPU default (OpenVINO int8, rule ``saliency+cam``, 640x512, one pair per call) is built as
the engine builds it, once exact and once with each approximation below swapped into
:mod:`streamfuse.fusion` while the engine converts the network; the same engine with rule ``sum``
gives the network's time. All are timed interleaved in one process (each round times every
variant once on the same real pair), and the fusion layer's share is the median of the rounds'
``variant / sum - 1``, as ``streamfuse bench`` reports it. Each variant's 8-bit output is
compared with the exact fp32 eager reference on the first ``--pairs`` pairs of flir-test and of
TNO at their own size (the reduced-precision bound is mean 0.5, max 4 gray levels).

Approximations (none is used by any engine):

- ``cam_rows4``: CAM's per-channel mean of |x| from every 4th row of the map instead of all.
- ``fast_guided``: the saliency rule's guided filter run at half resolution (He and Sun, *Fast
  Guided Filter*, 2015): guide and input 2x2-averaged, radius halved, the window models'
  mean slope and offset upsampled bilinearly and applied to the full-resolution guide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import streamfuse.fusion as fusion  # noqa: E402
from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.engines import create_fuser  # noqa: E402
from streamfuse.filters import box_filter  # noqa: E402

WIDTH, HEIGHT = 640, 512
RULE = "saliency+cam"
DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))
CAM_ROW_STEP = 4
GUIDED_SUBSAMPLING = 2


def channel_means_from_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1) mean of |x| over every ``CAM_ROW_STEP``-th row."""
    rows = x[:, :, ::CAM_ROW_STEP]
    return fusion._l1_norm(rows, (2, 3)) / (rows.shape[2] * rows.shape[3])


def fast_guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float
                       ) -> torch.Tensor:
    """``guided_filter`` with its window models fitted on 2x2-averaged planes.

    Args: as :func:`streamfuse.filters.guided_filter`; H and W even. Returns (B, C, H, W).
    """
    small_guide = F.avg_pool2d(guide, GUIDED_SUBSAMPLING)
    small_src = F.avg_pool2d(src, GUIDED_SUBSAMPLING)
    small_radius = max(1, radius // GUIDED_SUBSAMPLING)
    guide_channels, src_channels = small_guide.shape[1], small_src.shape[1]
    mean_guide, mean_src, mean_guide_sq, mean_guide_src = box_filter(
        torch.cat([small_guide, small_src, small_guide * small_guide, small_guide * small_src], 1),
        small_radius).split([guide_channels, src_channels, guide_channels, src_channels], 1)
    var_guide = (mean_guide_sq - mean_guide * mean_guide).clamp_min(0)
    slope = (mean_guide_src - mean_guide * mean_src) / (var_guide + eps)
    offset = mean_src - slope * mean_guide
    mean_model = box_filter(torch.cat([slope, offset], 1), small_radius)
    mean_slope, mean_offset = F.interpolate(
        mean_model, size=guide.shape[2:], mode="bilinear", align_corners=False
    ).split([src_channels, src_channels], 1)
    return mean_slope * guide + mean_offset


def saliency_weights_fast_guided(activity_ir, activity_vis, radius, eps, div_eps=1e-6):
    """``fusion.saliency_weights_from_activity`` with :func:`fast_guided_filter`."""
    batch = activity_ir.shape[0]
    activity = torch.cat([activity_ir, activity_vis])
    levels = fusion.quantize_activity(activity)
    saliency_ir, saliency_vis = fusion.saliency_map(levels, activity.dtype).split(batch)
    raw_ir = fusion._share(saliency_ir, saliency_vis, div_eps)
    raw = torch.cat([raw_ir, 1 - raw_ir])
    guide = levels.to(activity.dtype) / (fusion.SALIENCY_LEVELS - 1)
    refined = fast_guided_filter(guide, raw, radius, eps).clamp_min(0)
    refined_ir, refined_vis = refined.split(batch)
    return fusion._share(refined_ir, refined_vis, div_eps)


VARIANTS = {
    "exact": {},
    "cam_rows4": {"_mean_magnitude": channel_means_from_rows},
    "fast_guided": {"saliency_weights_from_activity": saliency_weights_fast_guided},
    "cam_rows4+fast_guided": {"_mean_magnitude": channel_means_from_rows,
                              "saliency_weights_from_activity": saliency_weights_fast_guided},
}


@contextlib.contextmanager
def fusion_functions(replacements: dict):
    """:mod:`streamfuse.fusion` with ``replacements`` (name -> function), restored after."""
    originals = {name: getattr(fusion, name) for name in replacements}
    for name, function in replacements.items():
        setattr(fusion, name, function)
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(fusion, name, function)


def read_pairs(folder: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` (IR, visible) uint8 pairs of ``folder`` at their own size; pairs with
    an odd side are cropped by a pixel (the fast guided filter halves the planes)."""
    pairs = []
    for ir_path in sorted((folder / "ir").iterdir())[:count]:
        vis_path = next((folder / "vis").glob(ir_path.stem + ".*"))
        ir_frame, vis_frame = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                               for path in (ir_path, vis_path))
        height, width = ir_frame.shape[0] // 2 * 2, ir_frame.shape[1] // 2 * 2
        pairs.append((ir_frame[:height, :width], vis_frame[:height, :width]))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=8, help="per set, for the accuracy check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=REPO_ROOT / "bench" / "results" / "fusion-approximations.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    timing_ir, timing_vis = (cv2.resize(frame, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
                             for frame in read_pairs(args.data / "flir-test", 1)[0])
    fusers = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, replacements in VARIANTS.items():
            with fusion_functions(replacements):
                fuser = create_fuser(rule=RULE, engine="openvino", precision="int8",
                                     cache_dir=Path(cache) / name)
                fuser.fuse(timing_ir, timing_vis)  # converts the network with the replacements
            fusers[name] = fuser
        fusers["network (rule sum)"] = create_fuser(rule="sum", engine="openvino",
                                                    precision="int8", cache_dir=Path(cache) / "sum")
        fusers["network (rule sum)"].fuse(timing_ir, timing_vis)

        reference = create_fuser(rule=RULE, engine="eager", precision="fp32")
        accuracy = {name: {"mean": [], "max": []} for name in VARIANTS}
        for data_set in ("flir-test", "tno"):
            for ir_frame, vis_frame in read_pairs(args.data / data_set, args.pairs):
                exact = reference.fuse(ir_frame, vis_frame).astype(np.int16)
                for name in VARIANTS:
                    error = np.abs(fusers[name].fuse(ir_frame, vis_frame).astype(np.int16) - exact)
                    accuracy[name]["mean"].append(float(error.mean()))
                    accuracy[name]["max"].append(int(error.max()))

        names = list(fusers)
        seconds = np.zeros((args.rounds, len(names)))
        for call in fusers.values():
            call.fuse(timing_ir, timing_vis)
        for round_index in range(args.rounds):
            for column, name in enumerate(names):
                start = time.perf_counter()
                fusers[name].fuse(timing_ir, timing_vis)
                seconds[round_index, column] = time.perf_counter() - start

    network = seconds[:, -1]
    results = {}
    for column, name in enumerate(names):
        entry = {"ms_per_pair": float(np.median(seconds[:, column]) * 1e3)}
        if name in VARIANTS:
            entry["fusion_share"] = float(np.median(seconds[:, column] / network) - 1)
            entry["vs_exact"] = float(np.median(seconds[:, 0] / seconds[:, column]))
            entry["gray_levels_vs_fp32"] = {
                "mean_of_pairs": float(np.mean(accuracy[name]["mean"])),
                "worst_pair_mean": float(np.max(accuracy[name]["mean"])),
                "max": int(np.max(accuracy[name]["max"])),
                "pairs": len(accuracy[name]["mean"]),
            }
        results[name] = entry
        share = f"  fusion layer {100 * entry['fusion_share']:5.1f} %" if name in VARIANTS else ""
        levels = entry.get("gray_levels_vs_fp32")
        detail = (f"  vs fp32: mean {levels['mean_of_pairs']:.3f} (worst {levels['worst_pair_mean']:.3f})"
                  f", max {levels['max']}") if levels else ""
        print(f"{name:24s} {entry['ms_per_pair']:7.1f} ms{share}{detail}")
    report = {"machine": machine_description(torch.device("cpu")),
              "resolution": f"{WIDTH}x{HEIGHT}", "rule": RULE, "engine": "openvino int8",
              "rounds": args.rounds, "variants": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
