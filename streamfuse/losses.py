"""The DIDFuse training loss (paper eq. 1-5) and the image terms it is built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from streamfuse.model import Features


@dataclass(frozen=True)
class LossConfig:
    """Weights of eq. 5; defaults are the paper's (the public code used gap='l1', alpha1=0.5)."""

    alpha1: float = 0.05  # detail-gap term (subtracted: detail maps should differ)
    alpha2: float = 2.0  # infrared reconstruction
    alpha3: float = 2.0  # visible reconstruction
    alpha4: float = 10.0  # visible gradient agreement
    ssim_lambda: float = 5.0  # lambda of eq. 3
    gap: Literal["mse", "l1"] = "mse"  # ||.||_2^2 of eq. 1 as a mean; 'l1' as the public code
    ssim_window: int = 11


def gaussian_window(size: int, sigma: float, device=None, dtype=torch.float32) -> Tensor:
    """Normalised 2-D Gaussian kernel ``(1, 1, size, size)``."""
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    return (profile[:, None] * profile[None, :])[None, None]


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM (Wang et al. 2004) of images ``(B, 1, H, W)`` in [0, 1]; Gaussian window,
    C1 = 0.01^2, C2 = 0.03^2, computed over the valid region (no padding). Returns a scalar."""
    window = gaussian_window(window_size, sigma, x.device, x.dtype)
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def sobel_gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical Sobel derivatives (kernels / 8, replicate border) of ``(B, 1, H, W)``."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device, dtype=image.dtype) / 8
    kernels = torch.stack((kx, kx.t()))[:, None]
    grads = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads[:, :1], grads[:, 1:]


def reconstruction_term(image: Tensor, reconstructed: Tensor, config: LossConfig) -> Tensor:
    """f(X, X^) of eq. 3-4: MSE + lambda * (1 - SSIM) / 2."""
    mse = F.mse_loss(reconstructed, image)
    return mse + config.ssim_lambda * (1 - ssim(image, reconstructed, config.ssim_window)) / 2


def _gap(a: Tensor, b: Tensor, kind: str) -> Tensor:
    return (a - b).pow(2).mean() if kind == "mse" else (a - b).abs().mean()


def didfuse_loss(
    ir: Tensor, vis: Tensor, ir_features: Features, vis_features: Features,
    ir_reconstructed: Tensor, vis_reconstructed: Tensor, config: LossConfig,
) -> dict[str, Tensor]:
    """Eq. 5 and its parts. Inputs ``(B, 1, H, W)``; everything is computed in float32."""
    ir, vis = ir.float(), vis.float()
    ir_hat, vis_hat = ir_reconstructed.float(), vis_reconstructed.float()
    base_gap = torch.tanh(_gap(vis_features.base.float(), ir_features.base.float(), config.gap))
    detail_gap = torch.tanh(_gap(vis_features.detail.float(), ir_features.detail.float(), config.gap))
    ir_term = reconstruction_term(ir, ir_hat, config)
    vis_term = reconstruction_term(vis, vis_hat, config)
    gx, gy = sobel_gradients(vis)
    gx_hat, gy_hat = sobel_gradients(vis_hat)
    gradient_term = (gx - gx_hat).abs().mean() + (gy - gy_hat).abs().mean()
    total = (
        base_gap - config.alpha1 * detail_gap + config.alpha2 * ir_term
        + config.alpha3 * vis_term + config.alpha4 * gradient_term
    )
    return {
        "total": total, "base_gap": base_gap, "detail_gap": detail_gap,
        "ir_recon": ir_term, "vis_recon": vis_term, "vis_gradient": gradient_term,
    }
