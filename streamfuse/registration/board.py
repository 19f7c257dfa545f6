"""Homography (and optionally each camera's intrinsics) from a calibration board seen by both
cameras: a chessboard or a circle grid, in either polarity (a heated board is bright in IR)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.calibration import CameraIntrinsics
from streamfuse.errors import StreamFuseError
from streamfuse.registration.geometry import corner_error, pixel_scaling
from streamfuse.registration.points import PointFit, fit_points

BOARD_KINDS = ("chessboard", "circles", "acircles")


@dataclass
class BoardFit:
    """Result of a board calibration: the point fit (homography IR->visible, per-corner errors),
    views used, and, with intrinsics, each camera's model and RMS reprojection error."""

    fit: PointFit
    views: int
    ir_camera: CameraIntrinsics | None = None
    vis_camera: CameraIntrinsics | None = None
    ir_rms_px: float | None = None
    vis_rms_px: float | None = None


def detect_board(gray: np.ndarray, kind: str, pattern: tuple[int, int]) -> np.ndarray | None:
    """(N, 2) float64 board points of a (H, W) uint8 image in the detector's grid order, trying
    the image and its negative; None when the board is not found. ``pattern`` is (columns, rows)
    of inner corners (chessboard) or circles."""
    for image in (gray, 255 - gray):
        if kind == "chessboard":
            flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | \
                cv2.CALIB_CB_ACCURACY
            found, points = cv2.findChessboardCornersSB(image, pattern, flags=flags)
        else:
            grid = cv2.CALIB_CB_SYMMETRIC_GRID if kind == "circles" else \
                cv2.CALIB_CB_ASYMMETRIC_GRID
            found, points = cv2.findCirclesGrid(image, pattern, flags=grid)
        if found:
            return points.reshape(-1, 2).astype(np.float64)
    return None


def board_object_points(kind: str, pattern: tuple[int, int], spacing: float) -> np.ndarray:
    """(N, 3) float32 board coordinates (z = 0) in the detector's order, ``spacing`` apart."""
    columns, rows = pattern
    points = []
    for row in range(rows):
        for column in range(columns):
            x = (2 * column + row % 2) if kind == "acircles" else column
            points.append((x * spacing, row * spacing, 0.0))
    return np.array(points, dtype=np.float32)


def _grid_orderings(points: np.ndarray, pattern: tuple[int, int]) -> list[np.ndarray]:
    """The board's symmetric re-orderings: the detector may start at another corner in one
    camera (an inverted board looks like the same board turned)."""
    columns, rows = pattern
    grid = points.reshape(rows, columns, 2)
    orderings = [grid, grid[::-1, ::-1]]
    if columns == rows:
        orderings += [np.rot90(grid, 1), np.rot90(grid, 3)]
    return [g.reshape(-1, 2) for g in orderings]


def _consistent_order(ir_points: np.ndarray, vis_points: np.ndarray, pattern: tuple[int, int],
                      ir_size: tuple[int, int], vis_size: tuple[int, int]) -> np.ndarray:
    """The ordering of the IR points whose homography turns the IR image least (a camera rig is
    never mounted upside down relative to its partner)."""
    nominal = pixel_scaling(ir_size, vis_size)
    best, best_error = ir_points, np.inf
    for candidate in _grid_orderings(ir_points, pattern):
        homography, _ = cv2.findHomography(candidate, vis_points, 0)
        if homography is None:
            continue
        error = corner_error(homography, nominal, ir_size)
        if error < best_error:
            best, best_error = candidate, error
    return best


def calibrate_board(pairs: list[tuple[np.ndarray, np.ndarray]], kind: str,
                    pattern: tuple[int, int], intrinsics: bool = False, spacing: float = 1.0,
                    progress=None) -> BoardFit:
    """Fit the IR->visible homography over every frame pair where both cameras see the board.

    ``pairs``: (IR (H_ir, W_ir) uint8, visible (H_vis, W_vis) uint8) frames. With
    ``intrinsics``, each camera is calibrated from its board views (at least 3) and the
    homography is fitted between undistorted points.
    """
    if kind not in BOARD_KINDS:
        raise StreamFuseError(f"--board must be one of {', '.join(BOARD_KINDS)} (got {kind!r})")
    ir_size = (pairs[0][0].shape[1], pairs[0][0].shape[0])
    vis_size = (pairs[0][1].shape[1], pairs[0][1].shape[0])
    views = []
    for ir_frame, vis_frame in pairs:
        ir_points = detect_board(ir_frame, kind, pattern)
        vis_points = detect_board(vis_frame, kind, pattern) if ir_points is not None else None
        if progress is not None:
            progress()
        if ir_points is None or vis_points is None:
            continue
        views.append((_consistent_order(ir_points, vis_points, pattern, ir_size, vis_size),
                      vis_points))
    if not views:
        raise StreamFuseError(
            f"no {kind} board of {pattern[0]}x{pattern[1]} found in both cameras in any of "
            f"{len(pairs)} frame pairs: check --pattern (inner corners / circles per row x "
            f"column), focus and board contrast; no file written")
    ir_all = np.concatenate([ir for ir, _ in views])
    vis_all = np.concatenate([vis for _, vis in views])
    if not intrinsics:
        return BoardFit(fit_points(ir_all, vis_all, threshold_px=2.0, source="board corners"),
                        views=len(views))
    if len(views) < 3:
        raise StreamFuseError(f"--intrinsics needs the board in at least 3 views, found "
                              f"{len(views)}: record the board at more positions and angles")
    objects = [board_object_points(kind, pattern, spacing)] * len(views)
    ir_camera, ir_rms = _calibrate_camera(objects, [ir for ir, _ in views], ir_size)
    vis_camera, vis_rms = _calibrate_camera(objects, [vis for _, vis in views], vis_size)
    fit = fit_points(_undistort(ir_all, ir_camera), _undistort(vis_all, vis_camera),
                     threshold_px=2.0, source="board corners")
    return BoardFit(fit, len(views), ir_camera, vis_camera, ir_rms, vis_rms)


def _calibrate_camera(objects: list[np.ndarray], image_points: list[np.ndarray],
                      size: tuple[int, int]) -> tuple[CameraIntrinsics, float]:
    rms, matrix, distortion, _, _ = cv2.calibrateCamera(
        objects, [p.astype(np.float32).reshape(-1, 1, 2) for p in image_points], size, None, None)
    return CameraIntrinsics(matrix, distortion.ravel()[:5]), float(rms)


def _undistort(points: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    return cv2.undistortPoints(points.reshape(-1, 1, 2), camera.matrix, camera.distortion,
                               P=camera.matrix).reshape(-1, 2).astype(np.float64)
