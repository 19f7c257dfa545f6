"""The calibration file of a camera pair (YAML) and the registrar that warps IR frames into the
visible frame's geometry.

A calibration says how an infrared pixel maps to a visible pixel (a 3x3 homography, optionally
between undistorted images of two cameras with known intrinsics) and how the two clocks relate
(IR time + ``time_offset`` = visible time). ``load_calibration`` validates a file and fails with
one line naming the file, the line, the field and the fix; ``IrRegistrar`` applies it.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from streamfuse.errors import StreamFuseError

SUPPORTED_VERSIONS = (1,)
# OpenCV accepts these distortion vector lengths (k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [tx ty]]]]).
DISTORTION_LENGTHS = (4, 5, 8, 12, 14)
# Above this condition number (of the homography in normalised [-1, 1] image coordinates) the
# warp squashes the image onto a line: such a file is a mistake, never a real camera pair.
MAX_CONDITION = 1e6
# The fused frame gives way to the visible frame over this many pixels inside the edge of the IR
# camera's view: the network's seven 3x3 layers and the fusion layer's guided filter (radius 7)
# carry what lies beyond that edge about this far in.
VIEW_FEATHER_PX = 8

_TOP_LEVEL_KEYS = (
    "version", "ir_size", "vis_size", "homography", "time_offset", "ir_camera", "vis_camera",
    "method", "residual_px", "date", "notes",
)
_CAMERA_KEYS = ("matrix", "distortion")


@dataclass
class CameraIntrinsics:
    """One camera's pinhole model in OpenCV's convention.

    ``matrix`` is the (3, 3) camera matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels;
    ``distortion`` the 4, 5, 8, 12 or 14 coefficients (k1, k2, p1, p2, k3, ...).
    """

    matrix: np.ndarray
    distortion: np.ndarray

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64).reshape(3, 3)
        self.distortion = np.asarray(self.distortion, dtype=np.float64).ravel()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CameraIntrinsics)
            and np.array_equal(self.matrix, other.matrix)
            and np.array_equal(self.distortion, other.distortion)
        )


@dataclass(kw_only=True)
class Calibration:
    """The registration of an IR/visible camera pair.

    ``homography`` (3, 3) float64 maps IR pixel coordinates (x, y, 1) to visible pixel
    coordinates; when intrinsics are given it relates the *undistorted* images of both cameras.
    Sizes are (width, height). ``time_offset`` is in seconds: IR time + offset = visible time.
    """

    version: int = 1
    ir_size: tuple[int, int]
    vis_size: tuple[int, int]
    homography: np.ndarray = field(default_factory=lambda: np.eye(3))
    time_offset: float = 0.0
    ir_camera: CameraIntrinsics | None = None
    vis_camera: CameraIntrinsics | None = None
    method: str = "identity"
    residual_px: float | None = None
    date: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        self.ir_size = (int(self.ir_size[0]), int(self.ir_size[1]))
        self.vis_size = (int(self.vis_size[0]), int(self.vis_size[1]))
        self.homography = np.asarray(self.homography, dtype=np.float64).reshape(3, 3)
        self.time_offset = float(self.time_offset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, name), getattr(other, name))
            if name == "homography"
            else getattr(self, name) == getattr(other, name)
            for name in _TOP_LEVEL_KEYS
        )

    @classmethod
    def identity(cls, width: int, height: int) -> Calibration:
        """Pre-aligned cameras of one size: no warp, no time offset."""
        return cls(ir_size=(width, height), vis_size=(width, height), method="identity")

    @property
    def is_identity(self) -> bool:
        """True when applying this calibration leaves an IR frame untouched."""
        return (
            self.ir_size == self.vis_size
            and self.ir_camera is None
            and self.vis_camera is None
            and self.homography[2, 2] != 0
            and np.array_equal(self.homography, np.eye(3) * self.homography[2, 2])
        )


def today() -> str:
    """The date written into estimated calibrations (ISO 8601, UTC, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------------------------
# Loading and validation


class _Fields:
    """Field lookup with the YAML line of every key, so errors can point at the line."""

    def __init__(self, path: Path, node: yaml.MappingNode, prefix: str = ""):
        self.path = path
        self.prefix = prefix
        self.lines: dict[str, int] = {}
        self.nodes: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in self.nodes:
                self.fail(key, f"appears twice (line {self.lines[key]} and "
                               f"{key_node.start_mark.line + 1}): keep one", key_node)
            self.lines[key] = key_node.start_mark.line + 1
            self.nodes[key] = value_node
        self.values = yaml.safe_load(yaml.serialize(node)) or {}

    def fail(self, key: str, message: str, node: yaml.Node | None = None) -> None:
        line = node.start_mark.line + 1 if node is not None else self.lines.get(key)
        where = f"{self.path}:{line}" if line else str(self.path)
        raise StreamFuseError(f"{where}: field '{self.prefix}{key}' {message}")

    def reject_unknown(self, allowed: tuple[str, ...]) -> None:
        for key in self.nodes:
            if key not in allowed:
                self.fail(key, f"is not a calibration field: remove it (allowed: "
                               f"{', '.join(allowed)})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matrix(fields: _Fields, key: str, rows: int, cols: int) -> np.ndarray:
    value = fields.values[key]
    shape = f"a {rows}x{cols} list of finite numbers"
    if not isinstance(value, list):
        fields.fail(key, f"must be {shape} (got {type(value).__name__})")
    if len(value) != rows:
        fields.fail(key, f"must be {shape} (got {len(value)} rows)")
    for index, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            fields.fail(key, f"must be {shape} (row {index + 1} has {got})")
        if not all(_is_number(v) for v in row):
            fields.fail(key, f"must be {shape} (row {index + 1} is {row})")
    return np.array(value, dtype=np.float64)


def _size(fields: _Fields, key: str) -> tuple[int, int]:
    value = fields.values[key]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        fields.fail(key, f"must be [width, height], two positive integers (got {value!r})")
    return int(value[0]), int(value[1])


def _camera(fields: _Fields, key: str) -> CameraIntrinsics | None:
    value = fields.values.get(key)
    if value is None:
        return None
    node = fields.nodes[key]
    if not isinstance(node, yaml.MappingNode):
        fields.fail(key, "must be a mapping with 'matrix' and 'distortion' (or be left out)")
    camera = _Fields(fields.path, node, prefix=f"{key}.")
    camera.reject_unknown(_CAMERA_KEYS)
    for required in _CAMERA_KEYS:
        if required not in camera.values:
            fields.fail(key, f"needs '{required}': add it (see calibration/README.md)")
    matrix = _matrix(camera, "matrix", 3, 3)
    if not (matrix[0, 0] > 0 and matrix[1, 1] > 0 and np.array_equal(matrix[2], [0, 0, 1])):
        camera.fail("matrix", "must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    distortion = camera.values["distortion"]
    if not isinstance(distortion, list) or not all(_is_number(v) for v in distortion):
        camera.fail("distortion", f"must be a list of finite numbers (got {distortion!r})")
    if len(distortion) not in DISTORTION_LENGTHS:
        allowed = ", ".join(map(str, DISTORTION_LENGTHS[:-1])) + f" or {DISTORTION_LENGTHS[-1]}"
        camera.fail("distortion", f"must have {allowed} coefficients (got {len(distortion)})")
    return CameraIntrinsics(matrix, np.array(distortion, dtype=np.float64))


def homography_problem(homography: np.ndarray, ir_size: tuple[int, int],
                       vis_size: tuple[int, int]) -> str | None:
    """Why ``homography`` cannot register an IR image of ``ir_size``, or None when it can.

    Scale-free test: the homography is expressed between normalised [-1, 1] coordinates of both
    images, where a sensible camera pair has a condition number near 1; the IR image corners
    must also stay on the visible side of the horizon (no point mapped to infinity).
    """
    if not np.all(np.isfinite(homography)):
        return "has non-finite values"
    to_ir = _normalising_inverse(ir_size)
    from_vis = np.linalg.inv(_normalising_inverse(vis_size))
    normalised = from_vis @ homography @ to_ir
    if np.linalg.det(normalised) == 0 or np.linalg.cond(normalised) > MAX_CONDITION:
        return "is singular (it squashes the IR image onto a line or point)"
    corners = image_corners(ir_size)
    w = (homography @ np.column_stack([corners, np.ones(4)]).T)[2]
    if not (np.all(w > 0) or np.all(w < 0)):
        return "maps part of the IR image to infinity (perspective terms too large)"
    return None


def _normalising_inverse(size: tuple[int, int]) -> np.ndarray:
    """(3, 3) matrix taking [-1, 1] normalised coordinates to pixels of an image of ``size``."""
    width, height = size
    return np.array([[width / 2, 0, (width - 1) / 2], [0, height / 2, (height - 1) / 2], [0, 0, 1]])


def image_corners(size: tuple[int, int]) -> np.ndarray:
    """(4, 2) float64 pixel coordinates of the outer corners of an image of (width, height)."""
    width, height = size
    return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration YAML; every problem is a one-line ``StreamFuseError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StreamFuseError(f"{path}: calibration file not found: check the path, or leave "
                              f"the calibration out for pre-aligned cameras (identity)") from None
    except UnicodeDecodeError:
        raise StreamFuseError(f"{path}: not a calibration file (binary, not YAML text); give the "
                              "YAML that `streamfuse calibrate` writes") from None
    except IsADirectoryError:
        raise StreamFuseError(f"{path}: is a folder; give the calibration YAML file in it") from None
    except OSError as error:
        raise StreamFuseError(f"{path}: cannot read calibration file ({error.strerror or error})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise StreamFuseError(f"{where}: not valid YAML ({problem}): fix the syntax") from None
    if not isinstance(root, yaml.MappingNode):
        raise StreamFuseError(f"{path}: a calibration must be a YAML mapping of fields "
                              f"(see calibration/README.md)")
    fields = _Fields(path, root)
    fields.reject_unknown(_TOP_LEVEL_KEYS)
    for required in ("version", "ir_size", "vis_size", "homography"):
        if required not in fields.values:
            raise StreamFuseError(f"{path}: field '{required}' is missing: add it "
                                  f"(see calibration/README.md)")

    version = fields.values["version"]
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        fields.fail("version", f"must be one of {list(SUPPORTED_VERSIONS)} (got {version!r}): "
                               f"this StreamFuse reads version 1 files")
    ir_size = _size(fields, "ir_size")
    vis_size = _size(fields, "vis_size")
    homography = _matrix(fields, "homography", 3, 3)
    problem = homography_problem(homography, ir_size, vis_size)
    if problem:
        fields.fail("homography", f"{problem}: re-run `streamfuse calibrate`")

    time_offset = fields.values.get("time_offset", 0.0)
    if not _is_number(time_offset):
        fields.fail("time_offset", f"must be a finite number of seconds (got {time_offset!r})")
    residual = fields.values.get("residual_px")
    if residual is not None and not (_is_number(residual) and residual >= 0):
        fields.fail("residual_px", f"must be a number >= 0 or be left out (got {residual!r})")
    texts = {}
    for key in ("method", "date", "notes"):
        value = fields.values.get(key)
        if isinstance(value, (datetime.date, datetime.datetime)):
            value = value.isoformat()
        if value is not None and not isinstance(value, str):
            fields.fail(key, f"must be text (got {value!r}): quote it")
        texts[key] = value

    return Calibration(
        version=int(version),
        ir_size=ir_size,
        vis_size=vis_size,
        homography=homography,
        time_offset=float(time_offset),
        ir_camera=_camera(fields, "ir_camera"),
        vis_camera=_camera(fields, "vis_camera"),
        method=texts["method"] or "unknown",
        residual_px=None if residual is None else float(residual),
        date=texts["date"],
        notes=texts["notes"] or "",
    )


# ----------------------------------------------------------------------------------------------
# Saving


def _number(value: float) -> str:
    """A float as YAML 1.1 reads it back bit-exactly (PyYAML needs '1.0e-05', not '1e-05')."""
    text = repr(float(value))
    mantissa, _, exponent = text.partition("e")
    if exponent and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def _row(values: np.ndarray) -> str:
    return "[" + ", ".join(_number(v) for v in values) + "]"


def _text(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar, escapes included.
    return json.dumps(value)


def _camera_lines(key: str, camera: CameraIntrinsics | None, what: str) -> list[str]:
    if camera is None:
        return [f"# {key}: not given ({what} pixels are used as they are)"]
    return [
        f"{key}:",
        "  matrix:",
        *(f"    - {_row(row)}" for row in camera.matrix),
        f"  distortion: {_row(camera.distortion)}",
    ]


def calibration_yaml(calibration: Calibration) -> str:
    """The YAML text ``save_calibration`` writes: commented, one field per line."""
    cal = calibration
    lines = [
        "# StreamFuse camera-pair calibration (see calibration/README.md for every field).",
        "# homography maps IR pixel (x, y, 1) to visible pixel coordinates;",
        "# time_offset: IR timestamp + time_offset = visible timestamp, in seconds.",
        f"version: {int(cal.version)}",
        f"ir_size: [{cal.ir_size[0]}, {cal.ir_size[1]}]    # width, height",
        f"vis_size: [{cal.vis_size[0]}, {cal.vis_size[1]}]    # width, height",
        "homography:",
        *(f"  - {_row(row)}" for row in cal.homography),
        f"time_offset: {_number(cal.time_offset)}",
        *_camera_lines("ir_camera", cal.ir_camera, "IR"),
        *_camera_lines("vis_camera", cal.vis_camera, "visible"),
        f"method: {_text(cal.method)}",
    ]
    if cal.residual_px is not None:
        lines.append(f"residual_px: {_number(cal.residual_px)}")
    if cal.date is not None:
        lines.append(f"date: {_text(cal.date)}")
    lines.append(f"notes: {_text(cal.notes)}")
    return "\n".join(lines) + "\n"


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    """Write ``calibration`` as YAML; ``load_calibration`` reads back an equal object."""
    problem = homography_problem(calibration.homography, calibration.ir_size,
                                 calibration.vis_size)
    if problem:
        raise StreamFuseError(f"{path}: refusing to write a homography that {problem}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside and rename, so a failure never leaves a half-written calibration behind.
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(calibration_yaml(calibration), encoding="utf-8")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Applying


def ir_sampling_points(calibration: Calibration) -> np.ndarray:
    """(H_vis, W_vis, 2) float64: for every visible pixel, the IR pixel (x, y) it shows.

    Visible pixel -> undistorted visible pixel -> inverse homography -> undistorted IR pixel ->
    distorted IR pixel; each step is skipped when its camera has no intrinsics.
    """
    width, height = calibration.vis_size
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    vis = calibration.vis_camera
    if vis is not None:
        points = cv2.undistortPoints(points[:, None], vis.matrix, vis.distortion,
                                     P=vis.matrix)[:, 0].astype(np.float64)
    points = cv2.perspectiveTransform(points[:, None], np.linalg.inv(calibration.homography))
    points = points[:, 0]
    ir = calibration.ir_camera
    if ir is not None:
        normalised = cv2.undistortPoints(points[:, None], ir.matrix, None)[:, 0]
        rays = np.column_stack([normalised, np.ones(len(normalised))])
        points = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), ir.matrix,
                                   ir.distortion)[0][:, 0].astype(np.float64)
    return points.reshape(height, width, 2)


def _inside_ir_frame(points: np.ndarray, ir_size: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) IR sampling points -> (H, W) bool: those inside the IR frame."""
    width, height = ir_size
    return (
        (points[..., 0] >= 0) & (points[..., 0] <= width - 1)
        & (points[..., 1] >= 0) & (points[..., 1] <= height - 1)
    )


def warp_valid_mask(calibration: Calibration) -> np.ndarray:
    """(H_vis, W_vis) bool: the visible pixels that receive IR content after registration."""
    return _inside_ir_frame(ir_sampling_points(calibration), calibration.ir_size)


def ir_view_weight(valid: np.ndarray, feather_px: float = VIEW_FEATHER_PX) -> np.ndarray | None:
    """(H_vis, W_vis) float32 in [0, 1]: how much of the fused frame to show at each visible
    pixel, from the (H_vis, W_vis) bool :func:`warp_valid_mask`. 0 where the IR camera sees
    nothing, rising to 1 over ``feather_px`` inside the edge of its view; None when it sees the
    whole visible frame."""
    if valid.all():
        return None
    distance = cv2.distanceTransform(valid.astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(distance / feather_px, 0.0, 1.0).astype(np.float32)


def visible_outside_ir_view(fused: np.ndarray, vis_frame: np.ndarray, weight: np.ndarray,
                            vis_weight: np.ndarray | None = None) -> np.ndarray:
    """The fused frame where the IR camera sees, the visible frame where it does not: (H, W) or
    (H, W, 3) uint8 ``fused`` and ``vis_frame`` (same shape), (H, W) float32 ``weight`` from
    :func:`ir_view_weight` -> ``round(weight * fused + (1 - weight) * vis_frame)``, uint8.
    ``vis_weight``: ``1 - weight`` when the caller keeps it (it is the same for every frame).

    It runs once per frame, so it is ``cv2.blendLinear``, one pass over the frames (the same
    within a gray level as the float formula, exact where the weight is 0 or 1)."""
    if vis_weight is None:
        vis_weight = (1.0 - weight).astype(np.float32)
    return cv2.blendLinear(fused, vis_frame, weight, vis_weight)


class IrRegistrar:
    """Warps IR frames into the visible frame's geometry with maps computed once.

    ``registrar(ir_frame)``: (H_ir, W_ir) or (H_ir, W_ir, C) uint8 -> (H_vis, W_vis[, C]) uint8.
    Pixels that see no IR content (:func:`warp_valid_mask` is False) take the nearest pixel of
    the IR frame's edge: a black fill would be a hard edge the fusion network reads as
    structure, and it darkened a band of the fused frame. The pipeline shows the visible frame
    there instead of the fused one (``view_weight`` and ``vis_weight``, None where the IR view
    covers the visible frame; :func:`visible_outside_ir_view`). An
    identity calibration returns the frame itself.
    """

    def __init__(self, calibration: Calibration):
        self.calibration = calibration
        self.ir_size = calibration.ir_size
        self.is_identity = calibration.is_identity
        self._map_xy: np.ndarray | None = None
        self._map_frac: np.ndarray | None = None
        self.view_weight: np.ndarray | None = None
        self.vis_weight: np.ndarray | None = None
        if not self.is_identity:
            points = ir_sampling_points(calibration)
            self.view_weight = ir_view_weight(_inside_ir_frame(points, self.ir_size))
            if self.view_weight is not None:
                self.vis_weight = (1.0 - self.view_weight).astype(np.float32)
            points = points.astype(np.float32)
            # Fixed-point maps: remap's fastest form, 1/32 pixel interpolation steps.
            self._map_xy, self._map_frac = cv2.convertMaps(
                points[..., 0], points[..., 1], cv2.CV_16SC2
            )

    def outside_view(self, fused: np.ndarray, vis_frame: np.ndarray) -> np.ndarray:
        """The fused frame of a registered pair, with the visible frame where the IR camera sees
        nothing (:func:`visible_outside_ir_view`); the fused frame itself where it sees all."""
        if self.view_weight is None:
            return fused
        return visible_outside_ir_view(fused, vis_frame, self.view_weight, self.vis_weight)

    def __call__(self, ir_frame: np.ndarray) -> np.ndarray:
        height, width = ir_frame.shape[:2]
        if (width, height) != self.ir_size:
            raise StreamFuseError(
                f"IR frame is {width}x{height} but the calibration's ir_size is "
                f"{self.ir_size[0]}x{self.ir_size[1]}: use the calibration made for this camera"
            )
        if self.is_identity:
            return ir_frame
        return cv2.remap(ir_frame, self._map_xy, self._map_frac, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
