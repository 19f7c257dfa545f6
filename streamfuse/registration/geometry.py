"""Homography helpers shared by the calibration estimators: corner errors, pyramid scaling,
degenerate point sets and the random warps of the accuracy tests."""

from __future__ import annotations

import cv2
import numpy as np

from streamfuse.calibration import image_corners


def transform_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (3, 3) homography -> (N, 2) float64."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(points, np.asarray(homography, dtype=np.float64))[:, 0]


def corner_error(estimate: np.ndarray, truth: np.ndarray, ir_size: tuple[int, int]) -> float:
    """Mean distance, in visible pixels, between where two IR->visible homographies put the
    four corners of the IR image (the usual accuracy measure of an image registration)."""
    corners = image_corners(ir_size)
    moved = transform_points(estimate, corners) - transform_points(truth, corners)
    return float(np.mean(np.linalg.norm(moved, axis=1)))


def pixel_scaling(from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) map from pixel coordinates of an image of ``from_size`` to those of the same view
    resized to ``to_size`` (pixel centres at integers, as cv2.resize samples them)."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def square_pixel_scaling(from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) map from pixel coordinates of an image of ``from_size`` onto one of ``to_size``
    with the same scale in both directions (the geometric mean of the two), centre on centre:
    two cameras with square pixels whose frames differ in shape."""
    scale = np.sqrt(to_size[0] / from_size[0] * to_size[1] / from_size[1])
    return np.array([[scale, 0, (to_size[0] - 1) / 2 - scale * (from_size[0] - 1) / 2],
                     [0, scale, (to_size[1] - 1) / 2 - scale * (from_size[1] - 1) / 2],
                     [0, 0, 1.0]])


def normalised(homography: np.ndarray) -> np.ndarray:
    """The homography scaled so that its bottom-right entry is 1."""
    return homography / homography[2, 2]


def collinear(points: np.ndarray, tolerance_px: float = 1.0) -> bool:
    """True when (N, 2) points lie within ``tolerance_px`` of one straight line (or a point):
    no homography can be fitted to them."""
    centred = points - points.mean(axis=0)
    if len(points) < 3:
        return True
    smallest_spread = np.linalg.svd(centred, compute_uv=False)[-1] / np.sqrt(len(points))
    return bool(smallest_spread < tolerance_px)


def random_homography(rng: np.random.Generator, size: tuple[int, int], max_scale: float = 0.08,
                      max_rotation_deg: float = 5.0, max_shift_px: float = 30.0,
                      max_perspective: float = 0.03) -> np.ndarray:
    """A random (3, 3) homography about the centre of an image of ``size``: scale in
    1 +- max_scale, rotation up to max_rotation_deg, shift up to max_shift_px per axis, and a
    perspective term changing the local scale by up to +-max_perspective at the image edges."""
    width, height = size
    scale = 1 + rng.uniform(-max_scale, max_scale)
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    shift = rng.uniform(-max_shift_px, max_shift_px, size=2)
    perspective = rng.uniform(-max_perspective, max_perspective, size=2) / (np.array(size) / 2)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    to_centre = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1.0]])
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    similarity = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1.0]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [perspective[0], perspective[1], 1.0]])
    back = np.array([[1, 0, centre[0] + shift[0]], [0, 1, centre[1] + shift[1]], [0, 0, 1.0]])
    return normalised(back @ tilt @ similarity @ to_centre)
