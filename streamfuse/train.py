"""Training DIDFuse (paper Section IV-A): config, data, the epoch loop, checkpoints and resume.

Reproducibility: the model is initialised from ``seed``; the order of every epoch comes from a
generator seeded by ``(seed, epoch)``, and the full state (model, optimizer, history) is written
atomically after every epoch, so a run killed at any point and resumed ends with the same weights
as an uninterrupted run (same machine, same thread count).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from tqdm import tqdm

from streamfuse.checkpoint import save_checkpoint
from streamfuse.config import to_dict
from streamfuse.engines import cpu_supports_bf16, resolve_device
from streamfuse.errors import StreamFuseError
from streamfuse.images import centre_crop, pair_files, read_aligned_pair
from streamfuse.losses import LossConfig, didfuse_loss
from streamfuse.model import DIDFuse, DIDFuseConfig
from streamfuse.outputs import check_writable_folder

STATE_FILE = "last.pt"
MODEL_FILE = "model.pt"
HISTORY_FILE = "losses.csv"
CURVE_FILE = "losses.png"


@dataclass(frozen=True)
class DataConfig:
    train_dir: str = "../shared/data/flir-train"  # holds ir/ and vis/ with pairs matched by stem
    crop: int = 128  # centre crop, training only

    def __post_init__(self) -> None:
        if self.crop < 8:
            raise ValueError(f"'crop' must be at least 8 pixels, got {self.crop}")


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 120
    batch_size: int = 24
    lr: float = 1e-3
    lr_decay_epochs: list[int] = field(default_factory=lambda: [40, 80])
    lr_decay_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"'epochs' must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"'batch_size' must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"'lr' must be positive, got {self.lr}")
        if not self.lr_decay_factor > 0:
            raise ValueError(f"'lr_decay_factor' must be positive, got {self.lr_decay_factor}")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    model: DIDFuseConfig = DIDFuseConfig()
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 where the CPU has it, fp16 on CUDA
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    out_dir: str = "runs/train"


def training_device(name: str) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else the CPU; other names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else ("bf16" if cpu_supports_bf16() else "fp32")
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type == "cpu":
        raise StreamFuseError("precision fp16 is for CUDA; on a CPU use bf16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def load_training_pairs(data: DataConfig) -> torch.Tensor:
    """All training pairs as ``(N, 2, crop, crop)`` float in [0, 1] (channel 0 IR, 1 visible)."""
    root = Path(data.train_dir)
    if not (root / "ir").is_dir() or not (root / "vis").is_dir():
        raise StreamFuseError(f"{root}: training data needs folders ir/ and vis/ (set data.train_dir)")
    pairs, _ = pair_files(root / "ir", root / "vis")
    if not pairs:
        raise StreamFuseError(f"{root}: no image pairs with matching stems in ir/ and vis/")
    crops = [_training_crop(ir_path, vis_path, data.crop) for _, ir_path, vis_path in pairs]
    return torch.from_numpy(np.stack(crops)).float() / 255.0


def _training_crop(ir_path: Path, vis_path: Path, crop: int) -> np.ndarray:
    """``(2, crop, crop)`` uint8: the centre crops of an aligned pair. Pairs of two sizes are not
    aligned pixel for pixel, and a crop beyond the image would train on padding: both refused."""
    ir, vis = read_aligned_pair(ir_path, vis_path, "training")
    if min(ir.shape) < crop:
        raise StreamFuseError(f"{ir_path} is {ir.shape[1]}x{ir.shape[0]}, smaller than data.crop {crop}: "
                              f"lower data.crop to at most {min(ir.shape)} or remove the pair")
    return np.stack([centre_crop(ir, crop), centre_crop(vis, crop)])


def learning_rate(optim: OptimConfig, epoch: int) -> float:
    """Step schedule: ``lr * factor^k`` where k decay epochs are <= ``epoch`` (0-based)."""
    drops = sum(1 for e in optim.lr_decay_epochs if epoch >= e)
    return optim.lr * optim.lr_decay_factor**drops


def epoch_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator)


def _save_atomically(payload: dict, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def write_history(history: list[dict], out_dir: Path) -> None:
    """The per-epoch loss terms as CSV and as a PNG of one small curve per term."""
    with open(out_dir / HISTORY_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    cv2.imwrite(str(out_dir / CURVE_FILE), draw_loss_curves(history))


def draw_loss_curves(history: list[dict], width: int = 720, panel: int = 120) -> np.ndarray:
    """One panel per loss term (each scaled to its own range), white background, BGR uint8."""
    terms = [k for k in history[0] if k not in ("epoch", "lr", "seconds")]
    canvas = np.full((panel * len(terms), width, 3), 255, np.uint8)
    margin = 60
    for row, term in enumerate(terms):
        values = np.array([h[term] for h in history], dtype=np.float64)
        top = row * panel
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0
        xs = margin + np.linspace(0, width - 2 * margin, max(len(values), 2))[: len(values)]
        ys = top + panel - 20 - (values - lo) / span * (panel - 45)
        points = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.rectangle(canvas, (margin, top + 20), (width - margin, top + panel - 20), (200, 200, 200), 1)
        cv2.polylines(canvas, [points], False, (160, 60, 20), 2, cv2.LINE_AA)
        label = f"{term}: {values[-1]:.4f}  (range {lo:.4f} .. {hi:.4f})"
        cv2.putText(canvas, label, (margin, top + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, f"epoch {history[-1]['epoch']}", (width - margin - 70, panel * len(terms) - 5),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def train(config: TrainConfig, resume: bool = False, show_progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the final checkpoint in our format."""
    out_dir = check_writable_folder(config.out_dir, "out_dir")
    state_path = out_dir / STATE_FILE
    if resume and not state_path.is_file():
        raise StreamFuseError(f"{state_path}: nothing to resume (no saved run in out_dir); "
                              "start without --resume, or set out_dir to the run to continue")
    device = training_device(config.device)
    amp_dtype = autocast_dtype(config.precision, device)
    if config.threads:
        torch.set_num_threads(config.threads)

    pairs = load_training_pairs(config.data)
    torch.manual_seed(config.seed)
    # channels_last: oneDNN's (and cuDNN's) fast convolution layout, ~1.3x faster per step on CPU.
    model = DIDFuse(config.model).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state["config"] != to_dict(config):
            raise StreamFuseError(f"{state_path}: was written with another config; resume with the same one or use a new out_dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
    elif state_path.is_file() and not resume:
        raise StreamFuseError(f"{state_path}: a run is already there; pass --resume to continue it or choose another out_dir")

    model.train()
    batch_size = config.optim.batch_size
    steps_per_epoch = -(-len(pairs) // batch_size)
    for epoch in range(start_epoch, config.optim.epochs):
        started = time.perf_counter()
        lr = learning_rate(config.optim, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = epoch_order(config.seed, epoch, len(pairs))
        sums: dict[str, float] = {}
        progress = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.optim.epochs}",
                        disable=not show_progress, leave=False, unit="batch")
        for step in progress:
            batch = pairs[order[step * batch_size : (step + 1) * batch_size]]
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            ir, vis = batch[:, :1], batch[:, 1:]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                # Separate passes per modality, as the public code: BatchNorm batch statistics
                # are those of one modality at a time.
                ir_features, vis_features = model.encode(ir), model.encode(vis)
                ir_reconstructed, vis_reconstructed = model.decode(ir_features), model.decode(vis_features)
            n = ir.shape[0]
            terms = didfuse_loss(ir, vis, ir_features, vis_features, ir_reconstructed, vis_reconstructed, config.loss)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
            progress.set_postfix({k: f"{v / min((step + 1) * batch_size, len(pairs)):.4f}" for k, v in sums.items()})
        progress.close()
        row = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - started, 2)}
        row.update({name: total / len(pairs) for name, total in sums.items()})
        history.append(row)
        _save_atomically({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1, "history": history, "config": to_dict(config),
        }, state_path)
        write_history(history, out_dir)
        _save_model(model, config, history, len(pairs), device, amp_dtype, out_dir)
        if show_progress:
            print(f"epoch {epoch + 1}/{config.optim.epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch",)), flush=True)

    return out_dir / MODEL_FILE


def _save_model(model: DIDFuse, config: TrainConfig, history: list[dict], pairs: int, device, amp_dtype, out_dir: Path) -> None:
    """The weights so far in our checkpoint format, with what produced them."""
    metadata = {
        "training": to_dict(config),
        "data": str(config.data.train_dir),
        "pairs": pairs,
        "epochs_completed": len(history),
        "wall_seconds": round(sum(h["seconds"] for h in history), 1),
        "device": str(device),
        "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
        "final_loss": history[-1],
    }
    save_checkpoint(model, out_dir / MODEL_FILE, metadata)
