"""How well a calibration registers a real pair: gradient correlation before and after, and an
overlay image (edges of the IR frame in red over the visible frame) a person can judge."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamfuse.calibration import Calibration, IrRegistrar, warp_valid_mask
from streamfuse.errors import StreamFuseError
from streamfuse.images import write_png
from streamfuse.registration.ecc import gradient_magnitude


def gradient_correlation(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None,
                         sigma: float = 1.0) -> float:
    """Correlation coefficient of the gradient magnitudes of two (H, W) uint8 images over the
    (H, W) bool ``mask`` (default: everywhere). 1 = same edges, about 0 = unrelated."""
    a, _ = gradient_magnitude(first, sigma)
    b, _ = gradient_magnitude(second, sigma)
    if mask is None:
        mask = np.ones(a.shape, bool)
    if mask.sum() < 16 or a[mask].std() == 0 or b[mask].std() == 0:
        return 0.0
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def check_sizes(calibration: Calibration, ir_frame: np.ndarray, vis_frame: np.ndarray) -> None:
    """Raise unless the frames have the sizes ``calibration`` was made for."""
    for camera, field, frame, size in (("visible", "vis_size", vis_frame, calibration.vis_size),
                                       ("IR", "ir_size", ir_frame, calibration.ir_size)):
        if (frame.shape[1], frame.shape[0]) != tuple(size):
            raise StreamFuseError(f"{camera} frame is {frame.shape[1]}x{frame.shape[0]} but the "
                                  f"calibration's {field} is {size[0]}x{size[1]}: use the "
                                  "calibration of this camera pair")


def check_scores(calibration: Calibration, ir_frame: np.ndarray, vis_frame: np.ndarray
                 ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(score before, score after, IR frame stretched to the visible size, registered IR frame)
    for one (H_ir, W_ir) / (H_vis, W_vis) uint8 pair; both scores over the pixels the
    registered IR frame covers."""
    check_sizes(calibration, ir_frame, vis_frame)
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    registered = IrRegistrar(calibration)(ir_frame)
    stretched = cv2.resize(ir_frame, vis_size, interpolation=cv2.INTER_LINEAR)
    mask = cv2.erode(warp_valid_mask(calibration).astype(np.uint8), np.ones((7, 7), np.uint8),
                     borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0
    return (gradient_correlation(stretched, vis_frame, mask),
            gradient_correlation(registered, vis_frame, mask), stretched, registered)


# The overlay draws the IR frame's edges whose gradient is among its strongest 10 % (Canny's high
# threshold; the low one is half of it).
EDGE_PERCENTILE = 90


def edge_overlay(ir_frame: np.ndarray, vis_frame: np.ndarray,
                 ir_view: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the visible frame, dimmed, with the IR frame's edges in red.
    Both inputs (H, W) uint8 of the same size. ``ir_view``: (H, W) bool, the pixels that show IR
    content (default: all); edges are drawn only there, and its outline in yellow."""
    if ir_view is None:
        ir_view = np.ones(ir_frame.shape, bool)
    # A registered frame is filled outside the IR camera's view by repeating its edge pixels;
    # the streaks that makes are no edges of the scene. Edges within 3 px of the view's border
    # are left out with them.
    inside = cv2.erode(ir_view.astype(np.uint8), np.ones((7, 7), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0
    blurred = cv2.GaussianBlur(ir_frame, (5, 5), 0)
    # Thresholds from the frame's own gradients (Canny's L1 Sobel magnitude): its strongest edges
    # are drawn whatever its brightness; a threshold from the median gray level drew none on a
    # bright, smooth thermal frame.
    magnitude = (np.abs(cv2.Sobel(blurred, cv2.CV_32F, 1, 0))
                 + np.abs(cv2.Sobel(blurred, cv2.CV_32F, 0, 1)))
    shown = magnitude[inside] if inside.any() else magnitude.ravel()
    high = max(float(np.percentile(shown, EDGE_PERCENTILE)), 1.0)
    edges = (cv2.Canny(blurred, 0.5 * high, high) > 0) & inside
    overlay = cv2.cvtColor((vis_frame * 0.7).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if not ir_view.all():
        outline, _ = cv2.findContours(ir_view.astype(np.uint8), cv2.RETR_EXTERNAL,
                                      cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, outline, -1, (0, 255, 255), 1)
    overlay[edges] = (0, 0, 255)
    return overlay


def write_overlay(path: str | Path, before: np.ndarray, after: np.ndarray,
                  vis_frame: np.ndarray, after_view: np.ndarray | None = None) -> None:
    """PNG with two panels, before | after registration, each labelled; ``after_view``: the
    pixels of the visible frame the registered IR frame shows (``warp_valid_mask``)."""
    panels = []
    for label, ir, view in (("before", before, None), ("after", after, after_view)):
        panel = edge_overlay(ir, vis_frame, view)
        cv2.putText(panel, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
        panels.append(panel)
    write_png(path, np.hstack(panels))
