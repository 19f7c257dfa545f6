"""Fusing IR/visible pairs end to end: encoder -> fusion layer -> decoder, 8-bit in and out.

:class:`FusionNet` is the whole tensor path as one ``nn.Module`` (what engines compile or export);
:class:`Fuser` wraps it for 8-bit images: gray or colour visible input (the luminance Y of YCrCb
is fused, the visible chroma put back), optional batching of same-size pairs, and the
``round(out * 255)`` output convention of the public results.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from streamfuse.checkpoint import load_checkpoint
from streamfuse.errors import StreamFuseError
from streamfuse.fusion import FusionConfig, FusionLayer
from streamfuse.model import DIDFuse, Features, fold_model

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = REPO_ROOT / "models" / "didfuse_flir.pt"


def resolve_weights(path: str | Path | None) -> Path:
    """``path``, or the shipped default weights when ``path`` is None."""
    if path is not None:
        return Path(path)
    if not DEFAULT_WEIGHTS.is_file():
        raise StreamFuseError(
            f"{DEFAULT_WEIGHTS}: the shipped weights are missing from this checkout; "
            "pass --weights FILE (from `streamfuse train` or `streamfuse import-weights`)"
        )
    return DEFAULT_WEIGHTS


class FusionNet(nn.Module):
    """``(ir, vis)`` each ``(B, 1, H, W)`` in [0, 1] -> fused ``(B, 1, H, W)`` in [0, 1].

    Each camera's batch goes through the encoder on its own (not as one batch of ``2B`` split
    afterwards: in compiled and exported graphs the split copies all eight 64-channel maps);
    the fusion layer merges the four map pairs.
    """

    def __init__(self, model: DIDFuse, fusion: FusionConfig | str = FusionConfig()):
        super().__init__()
        if isinstance(fusion, str):
            fusion = FusionConfig(rule=fusion)
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.fusion = FusionLayer(fusion)

    def forward(self, ir: Tensor, vis: Tensor) -> Tensor:
        fused = self.fusion(self.encoder(ir), self.encoder(vis))
        return self.decoder(Features(*fused))


def to_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 from a gray or BGR image."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def split_luma(vis: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Visible image -> (luminance ``(H, W)``, chroma ``(H, W, 2)`` or None for gray input)."""
    if vis.ndim == 2:
        return vis, None
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    return np.ascontiguousarray(ycrcb[:, :, 0]), ycrcb[:, :, 1:]


def merge_luma(luma: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_luma`: gray stays gray, colour gets its chroma back (BGR)."""
    if chroma is None:
        return luma
    return cv2.cvtColor(np.dstack((luma, chroma)), cv2.COLOR_YCrCb2BGR)


def to_uint8(image: Tensor) -> Tensor:
    """``round(image * 255)`` as uint8, image in [0, 1]."""
    return (image.float() * 255).round_().clamp_(0, 255).to(torch.uint8)


class Fuser:
    """A ready-to-use fusion model on one device, for 8-bit frames.

    ``fold_bn`` folds BatchNorm into the convolutions (same outputs to 1e-5, fewer passes).
    """

    def __init__(self, model: DIDFuse, fusion: FusionConfig | str = FusionConfig(),
                 device: str | torch.device = "cpu", fold_bn: bool = True):
        self.device = torch.device(device)
        model = fold_model(model) if fold_bn else model.eval()
        self.net = FusionNet(model, fusion).to(self.device).eval()
        self.rule = self.net.fusion.config.rule
        # level / 255 for every 8-bit level, divided on the CPU (see _to_unit_float).
        self._unit_levels = (torch.arange(256, dtype=torch.float32) / 255).to(self.device)

    @classmethod
    def from_weights(cls, weights: str | Path | None = None, fusion: FusionConfig | str = FusionConfig(),
                     device: str | torch.device = "cpu") -> "Fuser":
        model, _ = load_checkpoint(resolve_weights(weights))
        return cls(model, fusion, device)

    @torch.inference_mode()
    def fuse_tensors(self, ir: Tensor, vis: Tensor) -> Tensor:
        """``(B, 1, H, W)`` float in [0, 1] each -> fused ``(B, 1, H, W)`` float in [0, 1]."""
        return self.net(ir.to(self.device), vis.to(self.device))

    def _to_unit_float(self, frames: np.ndarray) -> Tensor:
        """``(B, H, W)`` uint8 -> ``(B, 1, H, W)`` float32 ``level / 255`` on the device.

        The frames travel as bytes and are looked up in a table divided on the CPU: CUDA divides
        by a scalar as a multiply by its reciprocal, one ulp off ``level / 255`` for some levels,
        which the tensor path would then not reproduce.
        """
        if frames.dtype != np.uint8:
            raise StreamFuseError(
                f"frames must be 8-bit (uint8), got {frames.dtype}; bring other depths to 0-255 first "
                "(16-bit: streamfuse.gain.to_8bit(frame))"
            )
        levels = torch.from_numpy(frames).to(self.device)[:, None]
        return self._unit_levels[levels.int()]

    def fuse_luma_batch(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """Stacks of gray frames ``(B, H, W)`` uint8 -> fused ``(B, H, W)`` uint8."""
        ir_tensor, vis_tensor = (self._to_unit_float(frames) for frames in (ir, vis))
        return to_uint8(self.fuse_tensors(ir_tensor, vis_tensor))[:, 0].cpu().numpy()

    def fuse_batch(self, ir_frames: list[np.ndarray], vis_frames: list[np.ndarray]) -> list[np.ndarray]:
        """Same-size pairs (IR gray or BGR, visible gray or BGR) -> fused frames, each gray when its
        visible frame is gray and BGR (visible chroma) when it is colour."""
        lumas, chromas = zip(*(split_luma(v) for v in vis_frames))
        fused = self.fuse_luma_batch(np.stack([to_gray(i) for i in ir_frames]), np.stack(lumas))
        return [merge_luma(y, c) for y, c in zip(fused, chromas)]

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """One pair of 8-bit images of the same size -> the fused image (see :meth:`fuse_batch`)."""
        if ir.shape[:2] != vis.shape[:2]:
            raise StreamFuseError(
                f"IR is {ir.shape[1]}x{ir.shape[0]} but visible is {vis.shape[1]}x{vis.shape[0]}: "
                "register or resize the IR frame first"
            )
        return self.fuse_batch([ir], [vis])[0]
