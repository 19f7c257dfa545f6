"""Homography from hand-picked point correspondences (a CSV of IR x, y -> visible x, y)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import StreamFuseError
from streamfuse.registration.geometry import collinear, normalised, transform_points


@dataclass
class PointFit:
    """A fitted (3, 3) homography IR->visible, each point's error in visible pixels (N,), the
    inlier mask (N,) and the RMS error of the inliers."""

    homography: np.ndarray
    errors: np.ndarray
    inliers: np.ndarray
    rms_px: float


def read_points_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) IR and (N, 2) visible points from a CSV with four numbers a row
    (ir_x, ir_y, vis_x, vis_y); a header row and '#' comment lines are allowed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StreamFuseError(f"{path}: points file not found") from None
    rows = []
    for line_number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in row]
        except ValueError:
            if not rows:
                continue  # a header row before the first numbers
            raise StreamFuseError(f"{path}:{line_number}: expected four numbers ir_x, ir_y, "
                                  f"vis_x, vis_y (got {','.join(row)})") from None
        if len(values) != 4:
            raise StreamFuseError(f"{path}:{line_number}: expected four numbers ir_x, ir_y, "
                                  f"vis_x, vis_y (got {len(values)}: {','.join(row)})")
        if not np.all(np.isfinite(values)):
            raise StreamFuseError(f"{path}:{line_number}: every value must be a finite number "
                                  f"(got {','.join(row)})")
        rows.append(values)
    points = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return points[:, :2], points[:, 2:]


def check_inside(points: np.ndarray, size: tuple[int, int], camera: str, size_flag: str,
                 source: str) -> None:
    """Raise naming the first of the (N, 2) ``points`` (numbered from 1, as the fit's table)
    outside a ``size`` = (width, height) frame. Tools put pixel centres or pixel corners at whole
    numbers, so a frame spans -0.5 .. width - 0.5 or 0 .. width; half a pixel more on each side
    allows for both and for the click."""
    width, height = size
    outside = ((points[:, 0] < -1) | (points[:, 0] > width)
               | (points[:, 1] < -1) | (points[:, 1] > height))
    if outside.any():
        index = int(np.argmax(outside))
        x, y = points[index]
        raise StreamFuseError(f"{source}: point {index + 1} ({camera} {x:g},{y:g}) lies outside "
                              f"the {width}x{height} {camera} frame: fix the point, or "
                              f"{size_flag} if the frame is larger")


def fit_points(ir_points: np.ndarray, vis_points: np.ndarray, threshold_px: float = 3.0,
               source: str = "points") -> PointFit:
    """RANSAC homography over (N, 2) IR -> (N, 2) visible points, refitted on the inliers."""
    count = len(ir_points)
    if count < 4:
        raise StreamFuseError(f"{source}: {count} correspondences, a homography needs at least "
                              f"4 (spread over the image, not on one line): add points")
    if collinear(ir_points) or collinear(vis_points):
        raise StreamFuseError(f"{source}: the points lie on one line, a homography needs points "
                              f"spread over the image: add points off that line")
    homography, mask = cv2.findHomography(ir_points, vis_points, cv2.RANSAC, threshold_px,
                                          maxIters=10000, confidence=0.999)
    if homography is None:
        raise StreamFuseError(f"{source}: no homography fits these points (mixed up columns?)")
    inliers = mask.ravel().astype(bool)
    if inliers.sum() < 4 or collinear(ir_points[inliers]):
        raise StreamFuseError(f"{source}: only {int(inliers.sum())} points agree on one "
                              f"homography: check the outliers and add points")
    refined, _ = cv2.findHomography(ir_points[inliers], vis_points[inliers], 0)
    homography = normalised(refined if refined is not None else homography)
    errors = np.linalg.norm(transform_points(homography, ir_points) - vis_points, axis=1)
    rms = float(np.sqrt(np.mean(errors[inliers] ** 2)))
    return PointFit(homography, errors, inliers, rms)
