"""Classical pixel-domain fusion references to compare DIDFuse against: average and two-scale.

Both take aligned (H, W) uint8 infrared and visible images and return an (H, W) uint8 fused
image, rounded to the nearest level (halves to even, as OpenCV's saturate_cast) and clipped
to 0..255.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamfuse.errors import StreamFuseError

# 35x35 mean filter of Bavirisetti & Dhuli's two-scale fusion (paper ref. [37]).
DEFAULT_BASE_RADIUS = 17


def _check_pair(ir: np.ndarray, vis: np.ndarray) -> None:
    for name, image in (("ir", ir), ("vis", vis)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
            if isinstance(image, np.ndarray):
                described = f"{image.dtype} {image.shape}"
            else:
                described = type(image).__name__
            raise StreamFuseError(
                f"fusion input '{name}' is {described}: pass an (H, W) uint8 gray image "
                "(cv2.imread(path, cv2.IMREAD_GRAYSCALE))"
            )
    if ir.shape != vis.shape:
        raise StreamFuseError(
            f"ir {ir.shape} and vis {vis.shape} differ in shape: "
            "register the pair to one size first"
        )


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def average_fusion(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Plain pixel mean ``round((ir + vis) / 2)``: (H, W) uint8, (H, W) uint8 -> (H, W) uint8."""
    _check_pair(ir, vis)
    return cv2.addWeighted(ir, 0.5, vis, 0.5, 0.0)


def _box_sum(image: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) -> (H, W) float64 sum over the (2 radius + 1)^2 box around each pixel.

    Borders are mirrored without repeating the edge pixel (cv2.BORDER_REFLECT_101). Sums of
    uint8 values are integers far below 2^53, so they are exact in float64.
    """
    size = 2 * radius + 1
    return cv2.boxFilter(
        np.asarray(image, dtype=np.float64), cv2.CV_64F, (size, size),
        normalize=False, borderType=cv2.BORDER_REFLECT_101,
    )


def box_base_detail(image: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-scale decomposition (paper Section II-B, as ref. [37]): (H, W) -> base, detail.

    base = mean over the (2 radius + 1)^2 box around each pixel, borders mirrored without
    repeating the edge pixel (cv2.BORDER_REFLECT_101); detail = image - base. Both float64 (H, W).
    """
    area = (2 * radius + 1) ** 2
    base = _box_sum(image, radius) / area
    return base, np.asarray(image, dtype=np.float64) - base


def two_scale_fusion(
    ir: np.ndarray, vis: np.ndarray, radius: int = DEFAULT_BASE_RADIUS
) -> np.ndarray:
    """Two-scale fusion: averaged base layers plus choose-max-abs detail layers.

    Each image is split as :func:`box_base_detail` (box of side 2 radius + 1, default 35 as
    Bavirisetti & Dhuli). Fused base = mean of the two bases; fused detail takes, per pixel, the
    detail of larger magnitude (the standard "absolute maximum" rule of multi-scale fusion, which
    keeps the stronger edge or texture of either source), and the mean of the two where the
    magnitudes are equal, so the result does not depend on the order of the inputs.
    Fused = base + detail, rounded and clipped to uint8.

    Args:
        ir, vis: (H, W) uint8 aligned infrared and visible images.
        radius: box radius in pixels (>= 1).

    Returns:
        (H, W) uint8 fused image.
    """
    _check_pair(ir, vis)
    if radius < 1:
        raise StreamFuseError(f"two-scale radius is {radius}: use a box radius of at least 1 pixel")
    area = (2 * radius + 1) ** 2
    sum_ir = _box_sum(ir, radius)
    sum_vis = _box_sum(vis, radius)
    # Details times the box area are exact integers, so equal magnitudes (common where the two
    # details are mirror images) are found exactly and the tie rule stays symmetric.
    detail_ir = ir * float(area) - sum_ir
    detail_vis = vis * float(area) - sum_vis
    magnitude_ir = np.abs(detail_ir)
    magnitude_vis = np.abs(detail_vis)
    detail = np.where(
        magnitude_ir > magnitude_vis,
        detail_ir,
        np.where(magnitude_vis > magnitude_ir, detail_vis, 0.5 * (detail_ir + detail_vis)),
    )
    return _to_uint8((0.5 * (sum_ir + sum_vis) + detail) / area)
