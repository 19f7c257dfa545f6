"""The calibration file format (load / validate / save) and the IR registrar."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from streamfuse.calibration import (
    VIEW_FEATHER_PX, Calibration, CameraIntrinsics, IrRegistrar, load_calibration,
    save_calibration, visible_outside_ir_view, warp_valid_mask,
)
from streamfuse.errors import StreamFuseError
from streamfuse.registration.geometry import random_homography

REPO = Path(__file__).resolve().parents[1]
VALID = (
    "version: 1\n"
    "ir_size: [64, 48]\n"
    "vis_size: [80, 60]\n"
    "homography:\n"
    "  - [1.2, 0.0, 3.0]\n"
    "  - [0.0, 1.2, 2.0]\n"
    "  - [0.0, 0.0, 1.0]\n"
)


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    calibration = Calibration(
        ir_size=(640, 512), vis_size=(1280, 720),
        homography=random_homography(rng, (640, 512)) * rng.uniform(0.5, 2),
        time_offset=-1 / 30,
        ir_camera=CameraIntrinsics(np.array([[801.3, 0, 320.1], [0, 799.9, 255.7], [0, 0, 1]]),
                                   rng.normal(0, 1e-5, 5)),
        vis_camera=CameraIntrinsics(np.array([[1500.0, 0, 640], [0, 1500.0, 360], [0, 0, 1]]),
                                    rng.normal(0, 0.1, 8)),
        method="board", residual_px=0.1234, date="2025-05-01T10:00:00+00:00",
        notes='lab rig "A"\nsecond line, ünïcode',
    )
    path = tmp_path / "pair.yaml"
    save_calibration(calibration, path)
    assert path.read_text().startswith("# StreamFuse")
    loaded = load_calibration(path)
    assert loaded == calibration
    assert loaded.homography.tobytes() == calibration.homography.tobytes()


def test_identity_example_is_identity():
    calibration = load_calibration(REPO / "calibration" / "identity.yaml")
    assert calibration.is_identity
    frame = np.random.default_rng(0).integers(0, 256, (512, 640), dtype=np.uint8)
    assert IrRegistrar(calibration)(frame) is frame  # fast path: no copy, no warp
    built = Calibration.identity(640, 512)
    assert built.is_identity and built.homography.tolist() == np.eye(3).tolist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID.replace("version: 1", "version: 3"), ":1: field 'version'"),
        (VALID.replace("  - [0.0, 0.0, 1.0]\n", ""), ":4: field 'homography' must be a 3x3 list "
                                                     "of finite numbers (got 2 rows)"),
        (VALID.replace("[0.0, 0.0, 1.0]", "[0.0, 0.0, .nan]"), ":4: field 'homography'"),
        (VALID.replace("[0.0, 1.2, 2.0]", "[1.2, 0.0, 3.0]"), "singular"),
        (VALID.replace("[0.0, 0.0, 1.0]", "[-0.05, 0.0, 1.0]"), "infinity"),
        (VALID.replace("ir_size: [64, 48]", "ir_size: [64, 0]"), ":2: field 'ir_size'"),
        (VALID.replace("vis_size: [80, 60]", "vis_size: [80.5, 60]"), ":3: field 'vis_size'"),
        (VALID + "time_ofset: 0.1\n", ":8: field 'time_ofset' is not a calibration field"),
        (VALID + "time_offset: soon\n", ":8: field 'time_offset'"),
        (VALID + "version: 1\n", ":8: field 'version' appears twice"),
        (VALID + "ir_camera:\n  matrix: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\n"
                 "  distortion: [0.1, 0.2, 0.3]\n", ":10: field 'ir_camera.distortion'"),
        (VALID + "vis_camera:\n  matrix: [[1, 0, 0], [0, 1, 0]]\n  distortion: [0, 0, 0, 0]\n",
         ":9: field 'vis_camera.matrix'"),
        (VALID + "vis_camera:\n  distortion: [0, 0, 0, 0]\n", "field 'vis_camera' needs 'matrix'"),
        (VALID.replace("ir_size: [64, 48]\n", ""), "field 'ir_size' is missing"),
        ("version: 1\nir_size: [64, 48\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a YAML mapping"),
    ],
)
def test_invalid_files_fail_with_one_line_naming_file_line_and_field(tmp_path, text, expected):
    path = tmp_path / "pair.yaml"
    path.write_text(text)
    with pytest.raises(StreamFuseError) as error:
        load_calibration(path)
    message = str(error.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(StreamFuseError, match="pair.yaml: calibration file not found"):
        load_calibration(tmp_path / "pair.yaml")


def test_an_image_or_a_folder_given_as_calibration_is_named(tmp_path):
    image = tmp_path / "ir.png"
    cv2.imwrite(str(image), np.arange(64, dtype=np.uint8).reshape(8, 8))
    with pytest.raises(StreamFuseError, match=r"ir.png: not a calibration file \(binary, not YAML text\)"):
        load_calibration(image)
    with pytest.raises(StreamFuseError, match=rf"^{tmp_path}: is a folder; give the calibration YAML"):
        load_calibration(tmp_path)


def _bilinear_reference(image: np.ndarray, homography: np.ndarray,
                        vis_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward float64 inverse warp: (image, valid) for every visible pixel. A pixel
    that sees no IR content (not valid) takes the IR frame's edge: its sampling point is moved
    onto the frame first."""
    width, height = vis_size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.linalg.inv(homography) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    px, py = points[0] / points[2], points[1] / points[2]
    h, w = image.shape
    valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    px, py = np.clip(px, 0, w - 1), np.clip(py, 0, h - 1)
    x0 = np.clip(np.floor(px).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(py).astype(int), 0, h - 2)
    fx, fy = px - x0, py - y0
    img = image.astype(np.float64)
    value = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
             + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)
    return value.reshape(height, width), valid.reshape(height, width)


@pytest.mark.parametrize("source", ["random", "real"])
def test_registrar_matches_float64_reference(source, tno_pair):
    rng = np.random.default_rng(7)
    if source == "random":
        ir = cv2.GaussianBlur(rng.integers(0, 256, (120, 160), dtype=np.uint8), (0, 0), 1.5)
    else:
        ir = cv2.resize(tno_pair[0], (192, 144), interpolation=cv2.INTER_AREA)
    ir_size = (ir.shape[1], ir.shape[0])
    vis_size = (200, 150)
    homography = np.diag([200 / ir_size[0], 150 / ir_size[1], 1.0]) @ \
        random_homography(rng, ir_size)
    calibration = Calibration(ir_size=ir_size, vis_size=vis_size, homography=homography)
    registered = IrRegistrar(calibration)(ir)
    reference, valid = _bilinear_reference(ir, homography, vis_size)
    # remap samples at 1/32 pixel and rounds to uint8: within 1.5 gray levels on average-sized
    # gradients; stated tolerance: mean < 0.5 and 99.9th percentile <= 3 levels.
    inner = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    difference = np.abs(registered.astype(np.float64) - reference)
    assert registered.shape == (150, 200) and registered.dtype == np.uint8
    assert difference.mean() < 0.5
    assert np.percentile(difference, 99.9) <= 3
    assert np.array_equal(warp_valid_mask(calibration)[inner], valid[inner])
    # Outside the IR frame's view: its edge, extended, not black.
    outside = ~valid
    assert outside.sum() > 500
    assert difference[outside].max() <= 3 and registered[outside].mean() > 20


def test_outside_the_ir_view_the_visible_frame_shows_with_a_feathered_edge():
    # A narrow IR camera: its 64x48 frame covers the centre of the 160x120 visible frame.
    calibration = Calibration(ir_size=(64, 48), vis_size=(160, 120),
                              homography=np.array([[1.5, 0, 32], [0, 1.5, 24], [0, 0, 1.0]]))
    valid = warp_valid_mask(calibration)
    weight = IrRegistrar(calibration).view_weight
    assert weight.shape == (120, 160) and weight.dtype == np.float32
    assert np.all(weight[~valid] == 0) and weight[60, 80] == 1
    # It rises over VIEW_FEATHER_PX inside the edge of the view: 1 px in, 1/8; 8 px in, 1.
    first = int(np.argmax(valid[60]))
    assert weight[60, first] == pytest.approx(1 / VIEW_FEATHER_PX, abs=0.02)
    assert weight[60, first + VIEW_FEATHER_PX - 1] == pytest.approx(1.0, abs=0.02)
    assert np.all(np.diff(weight[60, : 80]) >= 0)
    rng = np.random.default_rng(1)
    for shape in ((120, 160), (120, 160, 3)):
        fused = rng.integers(0, 256, shape, dtype=np.uint8)
        vis = rng.integers(0, 256, shape, dtype=np.uint8)
        shown = visible_outside_ir_view(fused, vis, weight)
        per_pixel = weight.astype(np.float64)[..., None] if len(shape) == 3 else weight
        reference = np.rint(per_pixel * fused + (1 - per_pixel) * vis.astype(np.float64))
        assert shown.dtype == np.uint8 and np.abs(shown - reference).max() <= 1
        assert np.array_equal(shown[~valid], vis[~valid])
        assert np.array_equal(shown[weight == 1], fused[weight == 1])
    # Identity and a view that covers the visible frame: nothing to blend.
    assert IrRegistrar(Calibration.identity(64, 48)).view_weight is None
    covering = Calibration(ir_size=(64, 48), vis_size=(64, 48), homography=np.diag([1.1, 1.1, 1.0]))
    assert IrRegistrar(covering).view_weight is None


def test_registrar_colour_frames_and_wrong_size():
    calibration = Calibration(ir_size=(64, 48), vis_size=(80, 60),
                              homography=np.diag([1.25, 1.25, 1.0]))
    registrar = IrRegistrar(calibration)
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    colour = registrar(frame)
    assert colour.shape == (60, 80, 3)
    for channel in range(3):
        assert np.array_equal(colour[..., channel], registrar(np.ascontiguousarray(
            frame[..., channel])))
    with pytest.raises(StreamFuseError, match="IR frame is 48x64 but .* ir_size is 64x48"):
        registrar(np.zeros((64, 48), np.uint8))


def test_intrinsics_undistort_before_the_homography():
    # With zero distortion the camera matrices cancel out: same as no intrinsics.
    homography = np.array([[1.1, 0.02, 4.0], [-0.01, 1.05, 3.0], [0, 0, 1.0]])
    matrix = np.array([[90.0, 0, 31.5], [0, 90.0, 23.5], [0, 0, 1]])
    plain = Calibration(ir_size=(64, 48), vis_size=(80, 60), homography=homography)
    pinhole = Calibration(ir_size=(64, 48), vis_size=(80, 60), homography=homography,
                          ir_camera=CameraIntrinsics(matrix, np.zeros(5)),
                          vis_camera=CameraIntrinsics(matrix, np.zeros(5)))
    frame = cv2.GaussianBlur(np.random.default_rng(3).integers(0, 256, (48, 64), np.uint8),
                             (0, 0), 1)
    assert np.abs(IrRegistrar(plain)(frame).astype(int)
                  - IrRegistrar(pinhole)(frame).astype(int)).max() <= 1
    # With IR barrel distortion, a distorted IR point lands where the homography puts its
    # undistorted position.
    distortion = np.array([-0.3, 0.05, 0, 0, 0])
    distorted = Calibration(ir_size=(64, 48), vis_size=(80, 60), homography=homography,
                            ir_camera=CameraIntrinsics(matrix, distortion))
    ir_frame = np.zeros((48, 64), np.uint8)
    ir_frame[5:8, 5:8] = 255  # a bright dot near the corner, where distortion is strong
    registered = IrRegistrar(distorted)(ir_frame).astype(np.float64)
    ys, xs = np.mgrid[0:60, 0:80]
    found = np.array([(xs * registered).sum(), (ys * registered).sum()]) / registered.sum()
    undistorted = cv2.undistortPoints(np.array([[[6.0, 6.0]]]), matrix, distortion, P=matrix)
    expected = cv2.perspectiveTransform(undistorted, homography)[0, 0]
    assert np.linalg.norm(found - expected) < 0.5
