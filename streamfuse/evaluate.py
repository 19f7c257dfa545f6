"""Scoring fusion on a data folder: every rule (and the classical baselines) x every metric.

The table has one row per metric and one column per method, each cell ``mean ± std`` over the
pairs, as the paper's Table III.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from streamfuse.baselines import average_fusion, two_scale_fusion
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import Fuser, to_uint8
from streamfuse.fusion import FusionConfig, FusionLayer
from streamfuse.images import image_files, pair_files, read_aligned_pair, read_image
from streamfuse.metrics import METRICS, VIF_MIN_SIDE, evaluate
from streamfuse.model import Features

BASELINES = {"pixel-average": average_fusion, "two-scale": two_scale_fusion}


@dataclass
class EvalResult:
    """Per-method, per-metric scores of every pair (``scores[method][metric] -> list``), and the
    pairs left out with why (``skipped``: one-line messages)."""

    data: str
    methods: list[str]
    stems: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def add(self, method: str, values: dict[str, float]) -> None:
        per_metric = self.scores.setdefault(method, {})
        for metric, value in values.items():
            per_metric.setdefault(metric, []).append(float(value))

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{method: {metric: {"mean": m, "std": s}}}`` (population std over pairs)."""
        return {
            method: {metric: {"mean": float(np.mean(v)), "std": float(np.std(v))} for metric, v in per_metric.items()}
            for method, per_metric in self.scores.items()
        }

    def table(self) -> str:
        summary = self.summary()
        header = ["Metric", *self.methods]
        rows = [[metric, *(f"{summary[m][metric]['mean']:.3f} ± {summary[m][metric]['std']:.3f}" for m in self.methods)]
                for metric in METRICS]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        left_out = f" ({len(self.skipped)} left out, listed below)" if self.skipped else ""
        lines = [f"{self.data}: {len(self.stems)} pairs{left_out}"]
        lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
        return "\n".join(lines)

    def write_csv(self, path: Path) -> None:
        summary = self.summary()
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["metric", *(f"{m} {s}" for m in self.methods for s in ("mean", "std"))])
            for metric in METRICS:
                writer.writerow([metric, *(f"{summary[m][metric][s]:.6f}" for m in self.methods for s in ("mean", "std"))])

    def write_json(self, path: Path) -> None:
        payload = {"data": self.data, "pairs": self.stems, "methods": self.methods,
                   "summary": self.summary(), "per_pair": self.scores, "skipped": self.skipped}
        path.write_text(json.dumps(payload, indent=2))


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for method in methods:
        if method not in BASELINES:
            FusionConfig(rule=method)  # raises a StreamFuseError naming the valid rules
    return methods


class MultiRuleFuser:
    """Encode a pair once, then fuse and decode it with each fusion config (the encoder is the
    costly half). ``configs`` maps a column name to a rule name or a :class:`FusionConfig`."""

    def __init__(self, fuser: Fuser, configs: dict[str, FusionConfig | str]):
        self.fuser = fuser
        self.layers = {
            name: FusionLayer(FusionConfig(rule=c) if isinstance(c, str) else c).to(fuser.device)
            for name, c in configs.items()
        }

    @torch.inference_mode()
    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> dict[str, np.ndarray]:
        net = self.fuser.net
        images = torch.from_numpy(np.stack((ir, vis)))[:, None].float().div_(255).to(self.fuser.device)
        features = net.encoder(images)
        ir_features = Features(*(f[:1] for f in features))
        vis_features = Features(*(f[1:] for f in features))
        return {rule: to_uint8(net.decoder(Features(*layer(ir_features, vis_features))))[0, 0].cpu().numpy()
                for rule, layer in self.layers.items()}


def evaluate_folder(data: Path, methods: list[str], weights: Path | None = None, fused_dir: Path | None = None,
                    device: str = "cpu", show_progress: bool = True) -> EvalResult:
    """Score every pair of ``data`` (``ir/`` and ``vis/``) for each method, and the images of
    ``fused_dir`` (named by stem) as one more column named after that folder."""
    pairs, unmatched = pair_files(data / "ir", data / "vis")
    if not pairs:
        raise StreamFuseError(f"{data}: no pairs (need ir/ and vis/ with matching file stems)")
    rules = [m for m in methods if m not in BASELINES]
    multi = MultiRuleFuser(Fuser.from_weights(weights, device=device), {r: r for r in rules}) if rules else None
    fused_files = image_files(fused_dir) if fused_dir else {}
    columns = list(methods) + ([fused_dir.name] if fused_dir else [])
    result = EvalResult(str(data), columns, skipped=[f"{stem}: only in one of ir/ and vis/" for stem in unmatched])
    # A bad pair is left out of every column (so columns stay comparable) and named, not fatal.
    with tqdm(pairs, desc=f"evaluating {data.name}", unit="pair", disable=not show_progress) as bar:
        for stem, ir_path, vis_path in bar:
            try:
                ir, vis, fused = _fuse_pair(stem, ir_path, vis_path, methods, multi, fused_dir, fused_files)
            except StreamFuseError as error:
                result.skipped.append(str(error))
                bar.set_postfix(left_out=len(result.skipped))
                continue
            for method in columns:
                result.add(method, evaluate(fused[method], ir, vis))
            result.stems.append(stem)
    if not result.stems:
        raise StreamFuseError(f"{data}: no pair could be scored; the first problem: {result.skipped[0]}")
    return result


def _fuse_pair(stem: str, ir_path: Path, vis_path: Path, methods: list[str], multi: MultiRuleFuser | None,
               fused_dir: Path | None, fused_files: dict[str, Path]
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A pair's IR and visible images and each column's fused image; a StreamFuseError says why
    the pair cannot be scored."""
    ir, vis = read_aligned_pair(ir_path, vis_path, "scoring")
    if min(ir.shape) < VIF_MIN_SIDE:
        raise StreamFuseError(f"{ir_path}: {ir.shape[1]}x{ir.shape[0]} is too small to score "
                              f"(VIF's 4 scales need at least {VIF_MIN_SIDE}x{VIF_MIN_SIDE})")
    fused = multi.fuse(ir, vis) if multi else {}
    fused.update({name: BASELINES[name](ir, vis) for name in methods if name in BASELINES})
    if fused_dir:
        if stem not in fused_files:
            raise StreamFuseError(f"{fused_dir}: no fused image for pair {stem!r}")
        fused[fused_dir.name] = read_image(fused_files[stem], gray=True)
        if fused[fused_dir.name].shape != ir.shape:
            raise StreamFuseError(f"{fused_files[stem]}: size differs from the pair {stem!r} ({ir.shape[1]}x{ir.shape[0]})")
    return ir, vis, fused
