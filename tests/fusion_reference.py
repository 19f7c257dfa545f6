"""Plain float64 NumPy references for the filter and fusion tests, written from the equations.

Nothing here imports streamfuse: these are the slow, literal versions (loops where the
equation has a sum over a window) that the tensor code is checked against.
"""

from __future__ import annotations

import numpy as np


def _window(y: int, x: int, radius: int) -> tuple[slice, slice]:
    """The (2r+1)x(2r+1) window around (y, x); NumPy slicing cuts it at the image border."""
    return slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1)


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """(..., H, W) -> mean over the in-image part of each window, one pixel at a time."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for y in range(x.shape[-2]):
        for col in range(x.shape[-1]):
            rows, cols = _window(y, col, radius)
            out[..., y, col] = x[..., rows, cols].mean(axis=(-2, -1))
    return out


def box_mean_integral(x: np.ndarray, radius: int) -> np.ndarray:
    """Same as ``box_mean`` for large (H, W) images: float64 integral images, exact enough."""
    x = np.asarray(x, dtype=np.float64)
    height, width = x.shape

    def window_sums(values: np.ndarray) -> np.ndarray:
        integral = np.zeros((height + 1, width + 1))
        integral[1:, 1:] = values.cumsum(0).cumsum(1)
        top = np.clip(np.arange(height) - radius, 0, height)
        bottom = np.clip(np.arange(height) + radius + 1, 0, height)
        left = np.clip(np.arange(width) - radius, 0, width)
        right = np.clip(np.arange(width) + radius + 1, 0, width)
        return (
            integral[bottom][:, right]
            - integral[top][:, right]
            - integral[bottom][:, left]
            + integral[top][:, left]
        )

    return window_sums(x) / window_sums(np.ones_like(x))


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He, Sun, Tang's guided filter solved from its cost function, window by window.

    For every window w_k: (a_k, b_k) = argmin sum_{i in w_k} (a I_i + b - p_i)^2 + eps a^2,
    solved as its 2x2 normal equations; the output at i is the mean of a_k I_i + b_k over the
    windows w_k that contain i (windows cut at the border, as in He's reference code).
    ``guide`` (..., 1 or C, H, W) broadcasts against ``src`` (..., C, H, W).
    """
    guide, src = np.broadcast_arrays(
        np.asarray(guide, dtype=np.float64), np.asarray(src, dtype=np.float64)
    )
    lead = src.shape[:-2]
    height, width = src.shape[-2:]
    slope = np.empty(src.shape)
    offset = np.empty(src.shape)
    for y in range(height):
        for x in range(width):
            rows, cols = _window(y, x, radius)
            g = guide[..., rows, cols].reshape(*lead, -1)
            p = src[..., rows, cols].reshape(*lead, -1)
            count = g.shape[-1]
            g_sum = g.sum(-1)
            normal = np.empty((*lead, 2, 2))
            normal[..., 0, 0] = (g * g).sum(-1) + count * eps
            normal[..., 0, 1] = g_sum
            normal[..., 1, 0] = g_sum
            normal[..., 1, 1] = count
            rhs = np.stack([(g * p).sum(-1), p.sum(-1)], axis=-1)[..., None]
            solution = np.linalg.solve(normal, rhs)[..., 0]
            slope[..., y, x] = solution[..., 0]
            offset[..., y, x] = solution[..., 1]
    out = np.empty(src.shape)
    for y in range(height):
        for x in range(width):
            rows, cols = _window(y, x, radius)
            out[..., y, x] = (
                slope[..., rows, cols].mean(axis=(-2, -1)) * guide[..., y, x]
                + offset[..., rows, cols].mean(axis=(-2, -1))
            )
    return out


def share(own: np.ndarray, other: np.ndarray, eps: float) -> np.ndarray:
    """The project's guarded ratio own / (own + other): 0.5 when both are 0."""
    return (own + eps) / (own + other + 2 * eps)


def l1_activity(x: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B, 1, H, W) channel-wise l1 norm."""
    return np.abs(np.asarray(x, dtype=np.float64)).sum(axis=1, keepdims=True)


def l1_weights(ir: np.ndarray, vis: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 7 with psi = 3x3 box blur."""
    activity_ir = box_mean(l1_activity(ir), 1)
    activity_vis = box_mean(l1_activity(vis), 1)
    weight_ir = share(activity_ir, activity_vis, eps)
    return weight_ir, 1 - weight_ir


def scaled_activity(activity: np.ndarray) -> np.ndarray:
    """(B, 1, H, W) -> min-max scaled per sample to [0, 255], float64, before rounding.

    Spans under 1e-3 of the peak count as 1e-3 of the peak (float noise is not stretched);
    a constant map gives zeros.
    """
    out = np.zeros_like(activity, dtype=np.float64)
    for b in range(activity.shape[0]):
        low, high = activity[b].min(), activity[b].max()
        span = max(high - low, 1e-3 * high)
        if span > 0:
            out[b] = (activity[b] - low) / span * 255
    return out


def saliency_map(levels: np.ndarray) -> np.ndarray:
    """Eq. 9 literally: S(p) = sum_{k=0}^{255} H(k) |m(p) - k|, H the sample's histogram."""
    levels = np.asarray(levels)
    out = np.zeros(levels.shape)
    for b in range(levels.shape[0]):
        histogram = np.bincount(levels[b].ravel(), minlength=256) / levels[b].size
        for k in range(256):
            out[b] += histogram[k] * np.abs(levels[b] - k)
    return out


def saliency_weights(
    levels_ir: np.ndarray, levels_vis: np.ndarray, radius: int, eps: float, div_eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 9-11 from the two cameras' 8-bit levels, gray guides levels / 255."""
    raw_ir = share(saliency_map(levels_ir), saliency_map(levels_vis), div_eps)
    refined_ir = np.maximum(guided_filter(levels_ir / 255.0, raw_ir, radius, eps), 0)
    refined_vis = np.maximum(guided_filter(levels_vis / 255.0, 1 - raw_ir, radius, eps), 0)
    weight_ir = share(refined_ir, refined_vis, div_eps)
    return weight_ir, 1 - weight_ir


def cam_weights(ir: np.ndarray, vis: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 14-15 with global pooling = mean |x| per channel: (B, C, 1, 1) each."""
    pooled_ir = np.abs(np.asarray(ir, dtype=np.float64)).mean(axis=(2, 3), keepdims=True)
    pooled_vis = np.abs(np.asarray(vis, dtype=np.float64)).mean(axis=(2, 3), keepdims=True)
    weight_ir = share(pooled_ir, pooled_vis, eps)
    return weight_ir, 1 - weight_ir


def fuse(
    ir: np.ndarray,
    vis: np.ndarray,
    rule: str,
    gamma: float,
    radius: int,
    guided_eps: float,
    eps: float,
    levels: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One map pair fused by ``rule``: eq. 8/12/13 (SAM), eq. 16 (CAM), eq. 17 (both).

    ``levels`` are the two cameras' 8-bit activity levels, needed by the saliency rules.
    """
    ir = np.asarray(ir, dtype=np.float64)
    vis = np.asarray(vis, dtype=np.float64)
    if rule == "sum":
        return ir + vis
    spatial_name, _, with_cam = rule.partition("+")
    fused_by_cam = None
    if spatial_name == "cam" or with_cam:
        lam_ir, lam_vis = cam_weights(ir, vis, eps)
        fused_by_cam = lam_ir * ir + lam_vis * vis
        if spatial_name == "cam":
            return fused_by_cam
    if spatial_name == "average":
        w_ir, w_vis = 0.5, 0.5
    elif spatial_name == "weighted":
        w_ir, w_vis = gamma, 1 - gamma
    elif spatial_name == "l1":
        w_ir, w_vis = l1_weights(ir, vis, eps)
    else:
        w_ir, w_vis = saliency_weights(levels[0], levels[1], radius, guided_eps, eps)
    fused_by_sam = w_ir * ir + w_vis * vis
    if fused_by_cam is None:
        return fused_by_sam
    return 0.5 * (fused_by_sam + fused_by_cam)
