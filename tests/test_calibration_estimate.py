"""`streamfuse calibrate`: points, board, auto, sync and check on real warps and real videos."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT, read_pair
from streamfuse.calibration import (
    Calibration, IrRegistrar, image_corners, load_calibration, save_calibration, warp_valid_mask,
)
from streamfuse.cli import main
from streamfuse.errors import StreamFuseError
from streamfuse.registration import auto, ecc
from streamfuse.registration.check import gradient_correlation
from streamfuse.registration.geometry import (
    corner_error, pixel_scaling, random_homography, square_pixel_scaling, transform_points,
)
from streamfuse.registration.tasks import TaskPool

# The field-of-view and frame-shape tests cut their camera views with the benches' helpers.
sys.path.insert(0, str(REPO_ROOT))


def _calibrate(*argv) -> int:
    return main(["calibrate", *map(str, argv)])


# --- points -----------------------------------------------------------------------------------

def test_points_with_noise_and_outliers_recover_the_homography(tmp_path, capsys):
    rng = np.random.default_rng(5)
    ir_size = (320, 256)
    # Onto a 400x300 visible frame.
    truth = np.diag([400 / 320, 300 / 256, 1.0]) @ random_homography(rng, ir_size)
    # Clicked points are seen by both cameras: keep those the truth maps into the visible frame.
    ir_points = rng.uniform([0, 0], ir_size, size=(60, 2))
    mapped = transform_points(truth, ir_points)
    ir_points = ir_points[np.all((mapped > 1) & (mapped < (399, 299)), axis=1)][:20]
    vis_points = transform_points(truth, ir_points) + rng.normal(0, 0.5, (20, 2))
    vis_points[3] += (25, -14)  # a mis-clicked point
    csv = tmp_path / "points.csv"
    csv.write_text("ir_x,ir_y,vis_x,vis_y\n" + "\n".join(
        ",".join(f"{v:.3f}" for v in (*a, *b)) for a, b in zip(ir_points, vis_points)))
    output = tmp_path / "pair.yaml"
    assert _calibrate("--points", csv, "--ir-size", "320x256", "--vis-size", "400x300",
                      "-o", output) == 0
    printed = capsys.readouterr().out
    assert printed.count("OUTLIER") == 1 and "    4  " in printed.split("OUTLIER")[0][-80:]
    calibration = load_calibration(output)
    assert calibration.method == "points" and calibration.date
    assert 0.2 < calibration.residual_px < 1.0
    assert corner_error(calibration.homography, truth, ir_size) < 1.0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(0, 0, 1, 1), (10, 0, 11, 1), (0, 10, 1, 11)], "3 correspondences"),
        ([(i, 2 * i, i + 1, 2 * i + 3) for i in range(8)], "on one line"),
    ],
)
def test_degenerate_points_fail_without_writing(tmp_path, capsys, rows, message):
    csv = tmp_path / "points.csv"
    csv.write_text("\n".join(",".join(map(str, row)) for row in rows))
    output = tmp_path / "pair.yaml"
    assert _calibrate("--points", csv, "--ir-size", "64x48", "--vis-size", "64x48",
                      "-o", output) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not output.exists()


# --- board ------------------------------------------------------------------------------------

def _board_image(kind: str) -> np.ndarray:
    """A flat board drawn large (white paper, black squares or dots), 8x6 inner corners,
    7x5 circles or an asymmetric grid of 4x7 circles (every other row shifted by half a step)."""
    board = np.full((700, 900), 255, np.uint8)
    if kind == "chessboard":
        for row in range(7):
            for column in range(9):
                if (row + column) % 2 == 0:
                    top, left = 50 + row * 86, 63 + column * 86
                    board[top:top + 86, left:left + 86] = 0
    elif kind == "acircles":
        for row in range(7):
            for column in range(4):
                centre = (170 + (2 * column + row % 2) * 80, 110 + row * 80)
                cv2.circle(board, centre, 26, 0, -1, cv2.LINE_AA)
    else:
        for row in range(5):
            for column in range(7):
                cv2.circle(board, (150 + column * 100, 150 + row * 100), 30, 0, -1, cv2.LINE_AA)
    return board


def _render(board: np.ndarray, homography: np.ndarray, size: tuple[int, int], rng) -> np.ndarray:
    """The board seen by a camera: warped with ``homography`` (board -> image), a little blur
    and sensor noise, a gray background."""
    warped = cv2.warpPerspective(board.astype(np.float32), homography, size,
                                 flags=cv2.INTER_AREA, borderValue=128)
    warped = cv2.GaussianBlur(warped, (0, 0), 0.8) + rng.normal(0, 2, warped.shape)
    return np.clip(warped, 0, 255).astype(np.uint8)


def _board_views(tmp_path, kind: str, truth: np.ndarray, views: int = 3):
    rng = np.random.default_rng(11)
    board = _board_image(kind)
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    ir_dir.mkdir()
    vis_dir.mkdir()
    for view in range(views):
        to_vis = random_homography(rng, (400, 320), max_shift_px=20) @ \
            np.diag([0.4, 0.4, 1.0]) @ np.array([[1, 0, 50], [0, 1, 20], [0, 0, 1.0]])
        to_ir = np.linalg.inv(truth) @ to_vis
        vis = _render(board, to_vis, (400, 320), rng)
        ir = 255 - _render(board, to_ir, (320, 256), rng)  # heated board: inverted polarity
        cv2.imwrite(str(vis_dir / f"{view:03d}.png"), vis)
        cv2.imwrite(str(ir_dir / f"{view:03d}.png"), ir)
    return ir_dir, vis_dir


@pytest.mark.parametrize(("kind", "pattern"),
                         [("chessboard", "8x6"), ("circles", "7x5"), ("acircles", "4x7")])
def test_board_with_inverted_ir_recovers_the_homography(tmp_path, kind, pattern):
    truth = np.diag([1.25, 1.25, 1.0]) @ random_homography(np.random.default_rng(2), (320, 256),
                                                            max_shift_px=10)
    ir_dir, vis_dir = _board_views(tmp_path, kind, truth)
    output = tmp_path / "pair.yaml"
    assert _calibrate("--board", kind, "--pattern", pattern, "--ir", ir_dir, "--vis", vis_dir,
                      "-o", output) == 0
    calibration = load_calibration(output)
    assert calibration.method == "board" and calibration.residual_px < 0.5
    assert (calibration.ir_size, calibration.vis_size) == ((320, 256), (400, 320))
    assert corner_error(calibration.homography, truth, (320, 256)) < 0.5


def _rotation(rx_deg: float, ry_deg: float, rz_deg: float = 0.0) -> np.ndarray:
    matrix, _ = cv2.Rodrigues(np.deg2rad([rx_deg, ry_deg, rz_deg]))
    return matrix


def _camera_view(board: np.ndarray, matrix: np.ndarray, distortion: np.ndarray,
                 rotation: np.ndarray, translation: np.ndarray, size: tuple[int, int],
                 rng) -> np.ndarray:
    """The board (1 board pixel = 1 mm, z = 0) seen by a pinhole camera with lens distortion:
    every image pixel is undistorted to a ray and traced to the board plane (a real lens
    model, not a homography)."""
    width, height = size
    pixels = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(pixels.astype(np.float64), matrix, distortion).reshape(-1, 2)
    plane_to_rays = np.column_stack([rotation[:, 0], rotation[:, 1], translation])
    board_points = transform_points(np.linalg.inv(plane_to_rays), rays).reshape(height, width, 2)
    image = cv2.remap(board.astype(np.float32), board_points[..., 0].astype(np.float32),
                      board_points[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                      borderValue=128)
    image = cv2.GaussianBlur(image, (0, 0), 0.7) + rng.normal(0, 2, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_board_intrinsics_undistort_both_cameras(tmp_path, capsys):
    """Two cameras with one centre (so one homography relates their undistorted images for
    any scene), the IR lens with strong barrel distortion; the board at 6 tilted poses."""
    rng = np.random.default_rng(21)
    board = _board_image("chessboard")
    ir_matrix = np.array([[330.0, 0, 158], [0, 330.0, 130], [0, 0, 1]])
    ir_distortion = np.array([-0.25, 0.08, 0, 0, 0])
    vis_matrix = np.array([[400.0, 0, 203], [0, 400.0, 158], [0, 0, 1]])
    vis_distortion = np.array([0.05, 0, 0, 0, 0])
    ir_to_vis = _rotation(0.5, 2.0, 1.0)
    truth = vis_matrix @ ir_to_vis @ np.linalg.inv(ir_matrix)
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    ir_dir.mkdir()
    vis_dir.mkdir()
    for view, (rx, ry, rz) in enumerate([(20, 0, 0), (-20, 5, 3), (0, 25, -4), (5, -25, 2),
                                         (15, 15, 8), (-15, -15, -6)]):
        rotation = _rotation(rx, ry, rz)
        # The board centre (450, 350) mm on the optical axis, 1.5 m away.
        translation = np.array([0, 0, 1500.0]) - rotation @ np.array([450, 350, 0.0])
        ir = 255 - _camera_view(board, ir_matrix, ir_distortion, rotation, translation,
                                (320, 256), rng)
        vis = _camera_view(board, vis_matrix, vis_distortion, ir_to_vis @ rotation,
                           ir_to_vis @ translation, (400, 320), rng)
        cv2.imwrite(str(ir_dir / f"{view:03d}.png"), ir)
        cv2.imwrite(str(vis_dir / f"{view:03d}.png"), vis)
    plain, with_intrinsics = tmp_path / "plain.yaml", tmp_path / "intrinsics.yaml"
    common = ["--board", "chessboard", "--pattern", "8x6", "--ir", ir_dir, "--vis", vis_dir]
    assert _calibrate(*common, "-o", plain) == 0
    assert _calibrate(*common, "--intrinsics", "--spacing", 86, "-o", with_intrinsics) == 0
    assert "board found in 6 of 6" in capsys.readouterr().out
    calibration = load_calibration(with_intrinsics)
    ir_camera, vis_camera = calibration.ir_camera, calibration.vis_camera
    assert ir_camera is not None and vis_camera is not None
    np.testing.assert_allclose(ir_camera.matrix[[0, 1, 0, 1], [0, 1, 2, 2]],
                               ir_matrix[[0, 1, 0, 1], [0, 1, 2, 2]], rtol=0.03)
    np.testing.assert_allclose(vis_camera.matrix[[0, 1, 0, 1], [0, 1, 2, 2]],
                               vis_matrix[[0, 1, 0, 1], [0, 1, 2, 2]], rtol=0.03)
    assert calibration.residual_px < 0.5
    # Between undistorted images the pair is exactly one homography; a plain fit between the
    # distorted images is off by the barrel distortion towards the IR image corners.
    assert corner_error(calibration.homography, truth, (320, 256)) < 0.75
    assert corner_error(load_calibration(plain).homography, truth, (320, 256)) > 1.5


def test_board_not_found_fails_without_writing(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("ir", "vis"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "000.png"),
                    cv2.GaussianBlur(rng.integers(0, 256, (120, 160), np.uint8), (0, 0), 3))
    output = tmp_path / "pair.yaml"
    assert _calibrate("--board", "chessboard", "--pattern", "8x6", "--ir", tmp_path / "ir",
                      "--vis", tmp_path / "vis", "-o", output) == 2
    assert "no chessboard board of 8x6 found" in capsys.readouterr().err
    assert not output.exists()


# --- auto -------------------------------------------------------------------------------------

def _small(image: np.ndarray, width: int = 256) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _warped(image: np.ndarray, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = (image.shape[1], image.shape[0])
    valid = cv2.warpPerspective(np.full(image.shape, 255, np.uint8), homography, size,
                                flags=cv2.INTER_NEAREST)
    return cv2.warpPerspective(image, homography, size, flags=cv2.INTER_LINEAR), valid


def _smooth_texture(rng, size=(200, 150)) -> np.ndarray:
    noise = rng.normal(0, 1, (size[1], size[0])).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 3)
    return np.clip(128 + texture / texture.std() * 40, 0, 255).astype(np.float32)


@pytest.mark.parametrize("model", ["homography", "affine"])
@pytest.mark.parametrize("source", ["random", "real"])
def test_ecc_multichannel_matches_opencv_on_one_channel(flir_pair, source, model):
    # Reference: OpenCV's ECC (the same algorithm, one channel) from the same start.
    rng = np.random.default_rng(6)
    if source == "random":
        template = _smooth_texture(rng)
    else:
        template = cv2.GaussianBlur(_small(flir_pair[1], 200).astype(np.float32), (0, 0), 1.5)
    size = (template.shape[1], template.shape[0])
    affine = model == "affine"
    truth = random_homography(rng, size, max_scale=0.02, max_rotation_deg=1.5, max_shift_px=3,
                              max_perspective=0.0 if affine else 0.01)
    # moving(truth x) = template(x): the warp from template to moving pixels is ``truth``.
    moving = cv2.warpPerspective(template, truth, size, flags=cv2.INTER_LINEAR)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
    _, reference = cv2.findTransformECC(
        template, moving, np.eye(3, dtype=np.float32)[:2 if affine else 3],
        cv2.MOTION_AFFINE if affine else cv2.MOTION_HOMOGRAPHY, criteria, None, 1)
    if affine:
        reference = np.vstack([reference, [0, 0, 1]])
    correlation, warp = ecc.ecc_multichannel(template[..., None], moving[..., None], np.eye(3),
                                             model=model, iterations=100, epsilon=1e-6)
    if affine:
        assert np.array_equal(warp[2], [0, 0, 1])  # no perspective term is touched
    assert correlation > 0.98
    tolerance = 0.05  # px at the corners: the same objective, the same optimum
    assert corner_error(warp, reference.astype(np.float64), size) < tolerance
    # Both are pulled a little by the black border of the warped frame (not masked here).
    assert corner_error(warp, truth, size) < 1.0


def _reference_ecc_step(template: np.ndarray, moving: np.ndarray, warp: np.ndarray,
                        basis: np.ndarray) -> tuple[float, np.ndarray]:
    """One ECC Gauss-Newton step (Evangelidis & Psarakis 2008) written out channel by channel in
    float64 over every template pixel, all of them mapping inside ``moving``: the plain reference
    for ``ecc_multichannel``. (H, W, C) template, (H_m, W_m, C) moving, (3, 3) warp from
    template to moving pixels, (8, P) parameter basis -> (correlation before the step, stepped
    warp)."""
    height, width, channels = template.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    kernel = np.array([[-0.5, 0, 0.5]], np.float32)
    ys, xs = np.mgrid[0:height, 0:width]
    x, y = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    w = warp[2, 0] * x + warp[2, 1] * y + 1.0
    u = (warp[0, 0] * x + warp[0, 1] * y + warp[0, 2]) / w
    v = (warp[1, 0] * x + warp[1, 1] * y + warp[1, 2]) / w
    jacobian = np.stack([np.stack([x, y, ones, zeros, zeros, zeros, -x * u, -y * u], 1),
                         np.stack([zeros, zeros, zeros, x, y, ones, -x * v, -y * v], 1)],
                        1) / w[:, None, None]  # (N, 2, 8): d(u, v) / d(h00 .. h21)
    # OpenCV resamples a one-channel image slightly differently from a multi-channel one (by up
    # to 2 % of the step between neighbouring pixels), so the channels are resampled together
    # here too; everything after the resampling is done one channel at a time.
    grad_x, grad_y = (cv2.filter2D(moving, cv2.CV_32F, k, borderType=cv2.BORDER_REPLICATE)
                      for k in (kernel, kernel.T))
    warped, warped_x, warped_y = (
        cv2.warpPerspective(image, warp, (width, height), flags=flags).reshape(-1, channels)
        .astype(np.float64) for image in (moving, grad_x, grad_y))
    images, targets, descents = [], [], []
    for channel in range(channels):
        gradient = np.stack([warped_x[:, channel], warped_y[:, channel]], 1)  # (N, 2)
        descents.append(np.einsum("nk,nkp->np", gradient, jacobian) @ basis)
        images.append(warped[:, channel])
        targets.append(template[..., channel].ravel().astype(np.float64))
    image, target = np.concatenate(images), np.concatenate(targets)
    descent = np.concatenate(descents)  # (N C, P)
    image, target = image - image.mean(), target - target.mean()
    correlation = image @ target / np.linalg.norm(image) / np.linalg.norm(target)
    hessian_inverse = np.linalg.inv(descent.T @ descent)
    image_projection, target_projection = descent.T @ image, descent.T @ target
    scale = (image @ image - image_projection @ hessian_inverse @ image_projection) / (
        image @ target - target_projection @ hessian_inverse @ image_projection)
    step = hessian_inverse @ (descent.T @ (scale * target - image))
    return float(correlation), warp + np.append(basis @ step, 0.0).reshape(3, 3)


@pytest.mark.parametrize("model", ["homography", "similarity"])
@pytest.mark.parametrize("source", ["random", "real"])
def test_ecc_multichannel_step_matches_a_per_channel_reference(flir_pair, source, model):
    # Two channels unlike each other, a template inside the moving frame (every pixel used),
    # one step from a start 2-3 px off: the step must be the reference's to float64 rounding.
    rng = np.random.default_rng(11)
    if source == "random":
        moving = np.dstack([_smooth_texture(rng, (180, 140)), _smooth_texture(rng, (180, 140))])
    else:
        moving, _ = ecc.orientation_features(_small(flir_pair[0], 180), 1.0)
    template = np.ascontiguousarray(moving[12:12 + 100, 15:15 + 140])
    start = np.array([[1.01, 0.004, 17.5], [-0.006, 0.99, 10.2], [2e-5, -1e-5, 1.0]])
    reference_correlation, reference = _reference_ecc_step(
        template, moving, start, ecc._BASES[model])
    correlation, warp = ecc.ecc_multichannel(template, moving, start, model=model,
                                             iterations=1, epsilon=0.0)
    size = (template.shape[1], template.shape[0])
    assert corner_error(reference, start, size) > 0.1  # a real step, not a fixed point
    assert correlation == pytest.approx(reference_correlation, abs=1e-12)
    assert corner_error(warp, reference, size) < 1e-9  # px at the corners


def test_ecc_multichannel_uses_every_channel():
    # Channel 0 has structure only along x (vertical stripes), channel 1 only along y: neither
    # alone pins a 2-D shift, both together do.
    rng = np.random.default_rng(9)
    texture = _smooth_texture(rng, (160, 120))
    stripes_x = np.repeat(texture[:1], 120, axis=0)
    stripes_y = np.repeat(texture[:, :1], 160, axis=1)
    template = np.dstack([stripes_x, stripes_y])
    truth = np.array([[1.0, 0, 2.5], [0, 1.0, -1.5], [0, 0, 1]])  # template -> moving
    moving = cv2.warpPerspective(template, truth, (160, 120), flags=cv2.INTER_LINEAR)
    mask = np.zeros((120, 160), np.uint8)
    mask[10:-10, 10:-10] = 255
    _, warp = ecc.ecc_multichannel(template, moving, np.eye(3), template_mask=mask,
                                   model="similarity", iterations=100, epsilon=1e-4)
    assert corner_error(warp, truth, (160, 120)) < 0.05


def test_orientation_features_ignore_polarity_and_contrast(tno_pair):
    ir = tno_pair[0]
    features, mask = ecc.orientation_features(ir, 1.0)
    inverted, _ = ecc.orientation_features(255 - ir, 1.0)
    fainter, _ = ecc.orientation_features(ir.astype(np.float32) * 0.3 + 20, 1.0)
    assert features.shape == ir.shape + (2,) and mask.all()
    np.testing.assert_allclose(inverted, features, atol=1e-4)  # float32 rounding
    np.testing.assert_allclose(fainter, features, atol=1e-4)
    # About 1 on clear edges, about 0 in flat parts: the weights e / (e + median e).
    weight = np.linalg.norm(features, axis=2)
    assert weight.max() > 0.95 and np.median(weight) == pytest.approx(0.5, abs=0.05)


def test_auto_same_modality_is_close(flir_pair):
    # Issue target: <= 0.05 px (bench/calibration_accuracy.py reports the distribution).
    # Full resolution, as in the bench. Compared at the visible frame's pixels (until session
    # 31), the first warp here ended 0.075 px off on a 320 px copy, the bilinear copy's bias
    # extrapolated over twice the relative distance to the corners; at the IR frame's pixels it
    # ends 0.009 px off at 320 px and 0.011 px at full size.
    vis = flir_pair[1]
    size = (vis.shape[1], vis.shape[0])
    rng = np.random.default_rng(4)
    for _ in range(2):
        warp = random_homography(rng, size, max_shift_px=15)
        moved, valid = _warped(vis, warp)
        result = auto.register_frames([moved], [vis], ir_valid=[valid])
        auto.check_reliable(result)
        assert corner_error(result.homography, np.linalg.inv(warp), size) <= 0.05
        # One pair: its residual is the intensity fit's move with another blur or without
        # the frame's outer band, hundredths of a pixel here.
        assert result.spread_px == 0 and 0 < result.residual_px <= 0.05


@pytest.mark.parametrize(("index", "seed"), [(0, 0), (1, 1)])
def test_intensity_refinement_from_the_truth_stays_there(index, seed):
    # The last same-modality stage, started at the true homography of a full-size real frame
    # warped bilinearly: with bilinear resampling inside ECC (at the visible frame's pixels, as
    # until session 31) its optimum lay 0.059 and 0.062 px (mean corner error) away on these
    # two; bicubic resampling keeps it within 0.013 px.
    vis = read_pair("flir-test", index)[1]
    size = (vis.shape[1], vis.shape[0])
    warp = random_homography(np.random.default_rng(seed), size)
    moved, valid = _warped(vis, warp)
    truth = np.linalg.inv(warp)
    refined = auto.intensity_refinement(moved, vis, truth, valid, auto.AutoSettings())
    assert corner_error(refined, truth, size) <= 0.025  # half the 0.05 px target


@pytest.mark.parametrize(("set_name", "index", "warp"), [
    ("flir-test", 9, [[9.2814613284e-01, -1.0822586858e-02, 6.0444651546e+00],
                      [3.0145803774e-03, 9.4473477655e-01, 1.0585377758e-01],
                      [-6.4931210130e-05, 2.9366109912e-06, 1.0]]),
    ("flir-train", 28, [[8.9746873773e-01, -1.7784499246e-02, 2.9002860050e+00],
                        [8.1681250812e-03, 9.1554382868e-01, 2.9080306404e+01],
                        [-6.8700633862e-05, 9.1247951646e-06, 1.0]])])
def test_intensity_refinement_of_a_shrunk_copy_stays_within_the_target(set_name, index, warp):
    # The bench's two worst bilinear copies, the scene shrunk 6-10 %: the copy aliases, and
    # compared at the visible frame's pixels (until session 31) the last pass, started at the
    # truth, ended 0.118 and 0.105 px off. Compared at the copy's own pixels it stays within
    # the 0.05 px.
    vis = read_pair(set_name, index)[1]
    size = (vis.shape[1], vis.shape[0])
    warp = np.array(warp)
    moved, valid = _warped(vis, warp)
    truth = np.linalg.inv(warp)
    refined = auto.intensity_refinement(moved, vis, truth, valid, auto.AutoSettings())
    assert corner_error(refined, truth, size) <= 0.05


def test_fine_alignment_keeps_the_best_scoring_schedule():
    # TNO 13 (a weak scene) warped: its schedules end at different places (1.25 px apart),
    # and the best full-resolution score is not the first schedule's; the combined fine stage
    # must return the best-scoring end.
    ir, vis = read_pair("tno", 13)
    size = (ir.shape[1], ir.shape[0])
    warp = random_homography(np.random.default_rng(3), size, max_shift_px=15)
    moved, valid = _warped(ir, warp)
    settings = auto.AutoSettings()
    start = auto.coarse_candidates(moved, vis, np.eye(3), valid, settings)[0][0]
    ends = [auto.fine_alignments(moved, vis, start, valid,
                                 dataclasses.replace(settings, fine_schedules=(schedule,)))[0]
            for schedule in settings.fine_schedules]
    scores = [auto.alignment_score(moved, vis, end, valid, settings.score_sigma) for end in ends]
    assert max(corner_error(end, ends[0], size) for end in ends) > 0.5  # they do differ
    assert int(np.argmax(scores)) != 0
    combined = auto.fine_alignments(moved, vis, start, valid, settings)[0]
    assert corner_error(combined, ends[int(np.argmax(scores))], size) < 1e-9


def test_same_modality_candidates_are_scored_on_blurred_intensities():
    # The bench's worst same-modality pair: flir-train 30's visible frame against a bilinearly
    # warped copy. On raw intensities its similarity candidate (0.37 px from the truth)
    # outscored the refined homography (0.007 px), through the smoothing that bilinear
    # resampling applies unequally at different sub-pixel phases.
    vis = read_pair("flir-train", 30)[1]
    size = (vis.shape[1], vis.shape[0])
    warp = np.array([[9.6488766556e-01, -2.4355974979e-02, 2.9329397867e+01],
                     [2.6873999966e-02, 9.6602405916e-01, 9.2307866331e+00],
                     [5.6543470570e-07, 8.6662861738e-06, 1.0]])
    moved, valid = _warped(vis, warp)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    assert result.model == "homography"
    assert corner_error(result.homography, np.linalg.inv(warp), size) <= 0.05


@pytest.mark.parametrize(("set_name", "index"), [("flir-test", 0), ("tno", 7)])
def test_auto_ir_to_visible_and_the_registered_pair_scores_like_the_original(set_name, index):
    # FLIR: a daytime street; TNO 7: a different thermal camera and lens, 256 x 256.
    ir, vis = (_small(image, 320) for image in read_pair(set_name, index))
    size = (ir.shape[1], ir.shape[0])
    warp = random_homography(np.random.default_rng(8), size, max_shift_px=15)
    moved, valid = _warped(ir, warp)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    auto.check_reliable(result)
    # Issue target: 3 px. The source pair is itself aligned only to a few pixels (FLIR parallax),
    # so the reference is the best fit on the unwarped pair composed with the synthetic warp;
    # against the nominal truth the source misalignment adds to it (how much, per pair:
    # unwarped_fit_vs_identity_px in bench/results/calibration_auto.json).
    unwarped_fit = auto.register_frames([ir], [vis], settings=auto.AutoSettings(
        keep_margin=-1.0, min_gain_t=-1e9))
    assert corner_error(result.homography, unwarped_fit.homography @ np.linalg.inv(warp),
                        size) <= 3.0
    assert corner_error(result.homography, np.linalg.inv(warp), size) <= 3.0 + corner_error(
        unwarped_fit.homography, np.eye(3), size)
    calibration = Calibration(ir_size=size, vis_size=size, homography=result.homography)
    registered = IrRegistrar(calibration)(moved)
    inner = cv2.erode(cv2.warpPerspective(valid, result.homography, size), np.ones((9, 9))) > 0
    original = gradient_correlation(ir, vis, inner)
    assert gradient_correlation(registered, vis, inner) > original - 0.05
    assert gradient_correlation(moved, vis, inner) < original - 0.1


def test_auto_keeps_an_aligned_pair(flir_pair):
    ir, vis = (_small(image, 320) for image in flir_pair)
    result = auto.register_frames([ir], [vis])
    assert corner_error(result.homography, np.eye(3), (ir.shape[1], ir.shape[0])) <= 1.0


def test_auto_started_at_its_own_fit_stays_there():
    # Issue target: an aligned pair moves <= 1 px. TNO 7's unwarped pair is offset from its
    # best fit by about 0.6 px; started at that fit (aligned by --auto's own standard) it
    # must not wander off again.
    ir, vis = read_pair("tno", 7)
    size = (ir.shape[1], ir.shape[0])
    best_fit = auto.register_frames([ir], [vis], settings=auto.AutoSettings(
        keep_margin=-1.0, min_gain_t=-1e9)).homography
    again = auto.register_frames([ir], [vis], initial=best_fit)
    assert corner_error(again.homography, best_fit, size) <= 1.0


def test_auto_refuses_a_repetitive_scene():
    # A regular grid of dots (a fence, a tiled wall) matches at every multiple of its period:
    # the coarse candidates end at different places, refined they still score alike.
    ys, xs = np.mgrid[0:160, 0:200]
    dots = 60 + 150 * np.exp(-(((xs % 22) - 11) ** 2 + ((ys % 22) - 11) ** 2) / 18.0)
    vis = dots.astype(np.uint8)
    warp = random_homography(np.random.default_rng(12), (200, 160), max_shift_px=15)
    ir, valid = _warped(255 - vis, warp)
    result = auto.register_frames([ir], [vis], ir_valid=[valid])
    assert result.ambiguous_frames == 1
    with pytest.raises(StreamFuseError, match="several places"):
        auto.check_reliable(result)


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


def test_rivals_and_ambiguity_follow_their_distance_and_score_rules():
    settings = auto.AutoSettings()  # rivals: > 3 px apart, >= 0.9 of the best correlation
    size = (320, 240)
    best, near, far, beside_far, weak = (_shift(0, 0), _shift(2, 0), _shift(10, 0),
                                         _shift(11, 0), _shift(-12, 0))
    coarse = [(best, 0.30), (near, 0.295), (far, 0.28), (beside_far, 0.275), (weak, 0.2)]
    found = auto.rivals(coarse, size, settings)
    assert len(found) == 1 and np.array_equal(found[0], far)
    assert auto.rivals([(best, -0.1), (far, -0.1)], size, settings) == []
    assert auto.ambiguous([(best, 0.30), (far, 0.28)], size, settings)
    assert not auto.ambiguous([(best, 0.30), (far, 0.26)], size, settings)
    assert not auto.ambiguous([(best, 0.30), (near, 0.299)], size, settings)
    assert auto.ambiguous([(best, 0.0)], size, settings)


def test_coarse_stage_fits_sensors_of_another_aspect_ratio():
    # IR and visible sensors of other aspect ratios, resized to one frame size, differ by an
    # unequal scale that no similarity holds (about 9 px at the corners here); the coarse
    # stage must still end close to it, so that the fine stage starts in its basin.
    _, vis = (_small(image, 320) for image in read_pair("flir-train", 3))
    height, width = vis.shape
    stretch = np.array([[1.0, 0, 0], [0, 1.08, -0.04 * height], [0, 0, 1.0]])  # IR -> visible
    ir = cv2.warpPerspective(vis, np.linalg.inv(stretch), (width, height),
                             borderMode=cv2.BORDER_REFLECT)
    candidates = auto.coarse_candidates(ir, vis, np.eye(3), np.full_like(ir, 255),
                                        auto.AutoSettings())
    assert corner_error(candidates[0][0], stretch, (width, height)) <= 1.0


@pytest.mark.parametrize("ir_view_vs_visible", [0.7, 1.4])
def test_auto_aligns_cameras_of_another_field_of_view(ir_view_vs_visible):
    # A thermal camera often sees a much narrower or wider view than the visible one beside it;
    # the search covers views 1.6 times narrower or wider (until session 29 it lost nearly
    # every pair at 0.7 or 1.4). Both views are cut from the real pair and resized to 320 px.
    from bench.calibration_fov import camera_pair, own_fit

    full_ir, full_vis = read_pair("flir-train", 3)
    ir, vis, ir_map, vis_map = camera_pair(full_ir, full_vis, ir_view_vs_visible)
    result = auto.register_frames([ir], [vis])
    auto.check_reliable(result)
    # The reference is the pair's own fit (the source pair is aligned to a few pixels only),
    # carried into the two views.
    reference = vis_map @ own_fit(full_ir, full_vis) @ np.linalg.inv(ir_map)
    assert corner_error(result.homography, reference, (ir.shape[1], ir.shape[0])) <= 3.0


def test_square_pixel_scaling_keeps_the_pixel_shape_and_the_centre():
    ir_size, vis_size = (320, 256), (480, 270)
    scaling = square_pixel_scaling(ir_size, vis_size)
    centre, right, down = transform_points(scaling, np.array(
        [[159.5, 127.5], [160.5, 127.5], [159.5, 128.5]]))
    np.testing.assert_allclose(centre, [239.5, 134.5], atol=1e-9)
    np.testing.assert_allclose(right - centre, [np.sqrt(1.5 * 270 / 256), 0], atol=1e-9)
    np.testing.assert_allclose(down - centre, [0, np.sqrt(1.5 * 270 / 256)], atol=1e-9)
    # Frames of one shape: the same map as resizing one onto the other.
    np.testing.assert_allclose(square_pixel_scaling((320, 256), (640, 512)),
                               pixel_scaling((320, 256), (640, 512)), atol=1e-12)


def test_auto_aligns_frames_of_another_shape():
    # A 5:4 IR camera (320x256) seeing 0.6 of the width of a 16:9 visible one (480x270), both
    # with square pixels: stretched over the visible frame, the IR frame is 1.42 times wider
    # against its height than the scene it shows, and searched about that start only, this
    # pair was refused. The search also runs about a start with square pixels.
    from bench.calibration_aspect import IR_SIZE, VIS_SIZE
    from bench.calibration_fov import overlap_error

    ir, vis, reference = _five_by_four_beside_sixteen_by_nine("flir-test", 0, IR_SIZE, VIS_SIZE)
    result = auto.register_frames([ir], [vis])
    auto.check_reliable(result)
    assert overlap_error(result.homography, reference, IR_SIZE, VIS_SIZE) <= 3.0


def test_auto_aligns_a_low_resolution_ir_camera_beside_an_hd_one():
    # A 160x128 thermal core seeing 0.6 of the width of a 1280x720 visible camera. Fitted at
    # 1280x720, the IR frame is upsampled about 5x and its blurred edges have no counterpart in
    # the visible frame's fine texture: this pair was refused (edge-orientation correlation
    # 0.06). The visible frames are reduced to 382x215 for the fit.
    from bench.calibration_fov import overlap_error

    ir_size, vis_size = (160, 128), (1280, 720)
    ir, vis, reference = _five_by_four_beside_sixteen_by_nine("flir-train", 1, ir_size, vis_size)
    result = auto.register_frames([ir], [vis])
    auto.check_reliable(result)
    assert result.fit_size == (382, 215)
    # 3 px of a 320x180 frame: the IR camera's 160 pixels pin the fit no finer at 1280x720.
    assert overlap_error(result.homography, reference, ir_size, vis_size) <= 3.0 * 1280 / 320


def _five_by_four_beside_sixteen_by_nine(set_name: str, index: int, ir_size: tuple[int, int],
                                         vis_size: tuple[int, int]
                                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IR view, visible view, reference) cut from a real pair as bench/calibration_aspect.py
    cuts them (the IR view 0.6 of the visible one's width), at the given sizes; the reference
    is the pair's own fit carried into the views."""
    from bench.calibration_aspect import view_boxes
    from bench.calibration_fov import cut, own_fit

    full_ir, full_vis = read_pair(set_name, index)
    ir_box, vis_box = view_boxes((full_ir.shape[1], full_ir.shape[0]), 0.6)
    ir, ir_map = cut(full_ir, ir_box, ir_size)
    vis, vis_map = cut(full_vis, vis_box, vis_size)
    return ir, vis, vis_map @ own_fit(full_ir, full_vis) @ np.linalg.inv(ir_map)


def test_a_reduced_fit_is_returned_and_judged_in_visible_pixels():
    settings = auto.AutoSettings()  # the IR frame upsampled at most 2x (by area)
    assert auto.working_size((160, 128), (1280, 720), settings) == (382, 215)
    assert auto.working_size((320, 256), (640, 512), settings) == (640, 512)
    assert auto.working_size((640, 512), (320, 256), settings) == (320, 256)
    to_fit = pixel_scaling((1280, 720), (382, 215))
    in_fit = np.array([[2.0, 0.05, 30.0], [0.01, 1.9, 20.0], [1e-5, 2e-5, 1.0]])
    reduced = auto.AutoResult(homography=in_fit, confidence=0.3, spread_px=0.0, frames_used=1,
                              per_frame=[in_fit], start_confidence=0.1, model="homography",
                              uncertainty_px=1.4, structured_patches=40, agreeing_patches=20,
                              sensitivity_px=2.0)
    result = auto.in_visible_pixels(reduced, to_fit, (382, 215))
    corners = image_corners((160, 128))
    np.testing.assert_allclose(
        transform_points(to_fit, transform_points(result.homography, corners)),
        transform_points(in_fit, corners), atol=1e-9)
    pixel = np.sqrt(1280 / 382 * 720 / 215)
    assert result.fit_size == (382, 215) and result.fit_pixel_px == pytest.approx(pixel)
    assert result.uncertainty_px == pytest.approx(1.4 * pixel)
    assert result.residual_px == pytest.approx(2.0 * pixel)
    # Thresholds hold in the pixels the fit was made at: 1.4 < 1.5 there passes, and the
    # same result read as a full-size fit (4.7 px > 1.5 px) is refused.
    auto.check_reliable(result, settings)
    assert auto.residual_warning(result, settings) is None
    with pytest.raises(StreamFuseError, match="equally good fits"):
        auto.check_reliable(dataclasses.replace(result, fit_pixel_px=1.0), settings)


def _unwarped_fit(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """The pair's own best fit, as the bench's reference: never kept at the start, never
    refused as ambiguous."""
    return auto.register_frames([ir], [vis], settings=auto.AutoSettings(
        keep_margin=-1.0, min_gain_t=-1e9, ambiguity_ratio=2.0,
        measure_sensitivity=False)).homography


def test_auto_moves_off_a_start_that_scores_below_the_refusal_floor():
    # TNO 39 with the bench's warp for it: the start (identity) scores 0.07, the fit 0.26, yet
    # the fit's per-tile gains are under 3 standard errors (much of the frame is flat). The
    # significance test protects only a start that could itself be written: this one could
    # not, so the fit is taken; it must agree with the best fit on the unwarped pair.
    ir, vis = read_pair("tno", 39)
    size = (ir.shape[1], ir.shape[0])
    warp = np.array([[1.0258402301588543, 0.056590108237813935, -4.320756218389558],
                     [-0.06376044156533325, 1.040840323236107, 18.423615082835756],
                     [-5.082295678773319e-05, 1.1543112397851168e-05, 1.0]])
    moved, valid = _warped(ir, warp)
    settings = auto.AutoSettings()
    fit = auto.fit_pair(moved, vis, np.eye(3), valid, settings)
    assert fit.start_score < settings.min_confidence
    assert not auto.significantly_better(fit.tile_gains, settings)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    auto.check_reliable(result)
    assert result.model != "start"
    assert corner_error(result.homography, _unwarped_fit(ir, vis) @ np.linalg.inv(warp),
                        size) <= 1.5


def test_fine_ends_are_settled_at_full_width():
    # TNO 13 (night, little shared structure) with the bench's warp: ECC creeps along flat
    # directions, and after the schedules' 40 iterations per level their ends lie 10-14 px
    # from the pair's own best fit, pixels apart at about equal scores. Run on to convergence
    # they meet, near that fit.
    ir, vis = read_pair("tno", 13)
    size = (ir.shape[1], ir.shape[0])
    warp = np.array([[0.8639118204470265, -0.02320688778419157, 56.548253100915666],
                     [-0.027377083793475022, 0.8581030823288983, 19.182908757786493],
                     [-5.6798898753704516e-05, -0.00011463029999421005, 1.0]])
    moved, valid = _warped(ir, warp)
    settings = auto.AutoSettings()
    target = _unwarped_fit(ir, vis) @ np.linalg.inv(warp)
    start = auto.coarse_candidates(moved, vis, np.eye(3), valid, settings)[0][0]
    unsettled, _, unsettled_spread = auto.fine_alignments(
        moved, vis, start, valid, dataclasses.replace(settings, settle_iterations=0))
    settled, _, spread = auto.fine_alignments(moved, vis, start, valid, settings)
    assert corner_error(unsettled, target, size) > 5.0
    assert unsettled_spread > settings.max_uncertainty_px
    assert corner_error(settled, target, size) <= 3.0
    assert spread <= settings.max_uncertainty_px


WEAK_AND_SHARP_SCENES = [
    # flir-test 35: a weak scene (orientation correlation 0.27), where --auto writes a file
    # 4.1 px from the unwarped fit: cutting what its warp pushes out of view moves the optimum.
    ("flir-test", 35, [[1.0281612121719839, -0.047195312903943555, -4.173236668295857],
                       [0.06310062694237757, 1.0292964453138769, -41.41506855931818],
                       [3.243711604644033e-05, 7.55356111819963e-05, 1.0]], True),
    # TNO 7: sharp shared outlines; the same cut leaves the optimum where it was.
    ("tno", 7, [[0.9078621308784104, 0.017711665071007895, 11.559757369349922],
                [-0.05329094102805189, 0.9143132556179159, -10.260584775069008],
                [-0.00015768183307894682, -0.00014295710759006469, 1.0]], False),
]


@pytest.mark.parametrize("set_name, index, warp, moves", WEAK_AND_SHARP_SCENES)
def test_settled_optimum_moves_with_the_content_only_on_a_weak_scene(set_name, index, warp,
                                                                     moves):
    # bench/calibration_determinacy.py's measure: how far the pair's own optimum moves when only
    # the IR content that survives the bench's warp is used.
    ir, vis = read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    settings = auto.AutoSettings()
    full = np.full(ir.shape, 255, np.uint8)
    optimum = auto.settled(ir, vis, _unwarped_fit(ir, vis), full, settings)
    assert corner_error(auto.settled(ir, vis, optimum, full, settings), optimum, size) <= 0.05
    _, warped_valid = _warped(ir, np.array(warp))
    surviving = cv2.warpPerspective(warped_valid, np.linalg.inv(warp), size,
                                    flags=cv2.INTER_NEAREST)
    assert (surviving == 0).mean() > 0.08  # the warp cuts a real part of the frame
    move = corner_error(auto.settled(ir, vis, optimum, surviving, settings), optimum, size)
    assert (move > 2.0) if moves else (move < 0.5)


@pytest.mark.parametrize("set_name, index, warp, weak", WEAK_AND_SHARP_SCENES)
def test_one_pair_residual_says_how_firmly_the_scene_pins_the_fit(set_name, index, warp, weak):
    # One frame pair has no second estimate to disagree with; its residual is how far the fit
    # moves with another feature blur or without the frame's outer band (auto.sensitivity).
    # flir-test 35's file is wrong by 4.1 px, and its residual says as much; TNO 7's is right.
    ir, vis = read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    warp = np.array(warp)
    moved, valid = _warped(ir, warp)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    assert result.frames_used == 1 and result.spread_px == 0
    assert result.residual_px == result.sensitivity_px > 0
    error = corner_error(result.homography, _unwarped_fit(ir, vis) @ np.linalg.inv(warp), size)
    if weak:
        assert error > 3.0 and result.residual_px >= error
    else:
        assert error < 1.0 and result.residual_px < 1.0
    # The CLI writes the file with a warning when the residual passes 3 px.
    assert (auto.residual_warning(result) is not None) == weak


def test_auto_writes_the_residual_of_one_pair(tmp_path, capsys):
    ir, vis = (_small(image, 320) for image in read_pair("tno", 7))
    size = (ir.shape[1], ir.shape[0])
    warp = random_homography(np.random.default_rng(8), size, max_shift_px=15)
    cv2.imwrite(str(tmp_path / "ir.png"), cv2.warpPerspective(ir, warp, size,
                                                              borderMode=cv2.BORDER_REFLECT))
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    output = tmp_path / "pair.yaml"
    assert _calibrate("--auto", "--ir", tmp_path / "ir.png", "--vis", tmp_path / "vis.png",
                      "-o", output) == 0
    captured = capsys.readouterr()
    printed = captured.out
    calibration = load_calibration(output)
    # One pair has no disagreement to measure; a residual of 0 would claim a perfect fit.
    assert 0 < calibration.residual_px < 3
    assert "warning" not in captured.err
    assert f"residual {calibration.residual_px:.3f} px (how far the fit moves" in printed
    assert "residual: how far the fit moves" in calibration.notes


def test_auto_warns_when_the_residual_of_one_pair_passes_3_px(tmp_path, capsys):
    # flir-test 35 under the bench's warp (borders reflected, as a camera shows no black band):
    # the file is written, since nothing refuses it, but the user is told to look at it.
    set_name, index, warp, _ = WEAK_AND_SHARP_SCENES[0]
    ir, vis = read_pair(set_name, index)
    size = (ir.shape[1], ir.shape[0])
    cv2.imwrite(str(tmp_path / "ir.png"), cv2.warpPerspective(ir, np.array(warp), size,
                                                              borderMode=cv2.BORDER_REFLECT))
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    output = tmp_path / "weak.yaml"
    assert _calibrate("--auto", "--ir", tmp_path / "ir.png", "--vis", tmp_path / "vis.png",
                      "-o", output) == 0
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert load_calibration(output).residual_px > 3
    assert warning.startswith("warning: this fit may be more than 3 px off")
    assert f"--check {output} --ir {tmp_path / 'ir.png'}" in warning


def test_auto_leaves_out_a_pair_with_a_blank_frame():
    # A camera still starting (one uniform frame) next to a good pair: the estimate comes from
    # the good pair alone, the same as without the blank one.
    ir, vis = (_small(image, 320) for image in read_pair("tno", 7))
    warp = random_homography(np.random.default_rng(8), (ir.shape[1], ir.shape[0]), max_shift_px=15)
    moved, valid = _warped(ir, warp)
    blank = np.full_like(moved, 90)
    alone = auto.register_frames([moved], [vis], ir_valid=[valid])
    with_blank = auto.register_frames([blank, moved], [vis, vis], ir_valid=[valid, valid])
    assert with_blank.frames_used == 1 and with_blank.ambiguous_frames == 0
    np.testing.assert_allclose(with_blank.homography, alone.homography, rtol=0, atol=1e-9)


def test_auto_in_worker_processes_returns_what_one_process_does():
    # --auto fits a clip's frame pairs in parallel processes; each pair's fit is deterministic,
    # so the result must be the same to the bit, blank pairs still left out and counted.
    truth = random_homography(np.random.default_rng(5), (160, 128), max_shift_px=8)
    vis_frames = [_scene(index / 10) for index in (0, 3, 6)]
    ir_frames = [cv2.warpPerspective(255 - frame, np.linalg.inv(truth), (160, 128),
                                     borderMode=cv2.BORDER_REFLECT) for frame in vis_frames]
    ir_frames[1] = np.full_like(ir_frames[1], 90)
    results, calls = [], []
    for workers in (1, 2):
        calls.append(0)

        def progress() -> None:
            calls[-1] += 1

        results.append(auto.register_frames(ir_frames, vis_frames, progress=progress,
                                            workers=workers))
    one, several = results
    assert calls == [3, 3] and one.frames_used == several.frames_used == 2
    assert one.model != "start"  # the fits themselves moved, not only the kept start
    np.testing.assert_array_equal(several.homography, one.homography)
    np.testing.assert_array_equal(np.stack(several.per_frame), np.stack(one.per_frame))
    assert (several.confidence, several.spread_px, several.uncertainty_px) == (
        one.confidence, one.spread_px, one.uncertainty_px)


def _process_and_square(number: int) -> tuple[int, int]:
    return os.getpid(), number * number


def test_task_pool_runs_tasks_in_other_processes_in_order():
    numbers = list(range(7))
    with TaskPool(2) as pool:
        mapped = pool.map(_process_and_square, numbers)
        completed = dict(pool.as_completed(_process_and_square, numbers))
    assert [square for _, square in mapped] == [n * n for n in numbers]
    assert sorted(completed) == numbers and all(completed[n][1] == n * n for n in numbers)
    assert os.getpid() not in {pid for pid, _ in [*mapped, *completed.values()]}
    with TaskPool(1) as pool:  # one process: everything runs here
        assert {pid for pid, _ in pool.map(_process_and_square, numbers)} == {os.getpid()}


def test_auto_spreads_one_pair_over_worker_processes_with_the_same_result():
    # A single pair has no other pairs to run beside it: its coarse starts, fine schedules and
    # sensitivity variants go to the workers instead, and must come back the same to the bit.
    truth = random_homography(np.random.default_rng(8), (160, 128), max_shift_px=8)
    vis = _scene(0.2)
    ir = cv2.warpPerspective(255 - vis, np.linalg.inv(truth), (160, 128),
                             borderMode=cv2.BORDER_REFLECT)
    valid = np.full_like(ir, 255)
    settings = auto.AutoSettings()
    batches = []
    with TaskPool(2) as pool:
        def recorded_map(function, items):
            batches.append(len(items))
            return pool.map(function, items)

        spread = auto.fit_pair(ir, vis, np.eye(3), valid, settings, recorded_map)
    alone = auto.fit_pair(ir, vis, np.eye(3), valid, settings)
    assert len(batches) == 3 and batches[-1] % len(settings.fine_schedules) == 0
    assert spread.model == alone.model == "homography"
    np.testing.assert_array_equal(spread.homography, alone.homography)
    np.testing.assert_array_equal(spread.tile_gains, alone.tile_gains)
    assert (spread.score, spread.uncertainty_px, spread.ambiguous) == (
        alone.score, alone.uncertainty_px, alone.ambiguous)
    one, several = (auto.register_frames([ir], [vis], ir_valid=[valid], workers=workers)
                    for workers in (1, 2))
    np.testing.assert_array_equal(several.homography, one.homography)
    assert one.sensitivity_px > 0
    assert (several.sensitivity_px, several.confidence, several.agreeing_patches) == (
        one.sensitivity_px, one.confidence, one.agreeing_patches)
    assert corner_error(one.homography, truth, (160, 128)) < 1.0


def test_auto_refuses_blank_frames_without_writing(tmp_path, capsys):
    blank = np.full((96, 128), 40, np.uint8)
    cv2.imwrite(str(tmp_path / "ir.png"), blank)
    cv2.imwrite(str(tmp_path / "vis.png"), blank)
    cv2.imwrite(str(tmp_path / "scene.png"), _scene(0.3, (128, 96)))
    output = tmp_path / "pair.yaml"
    for ir, vis, side in [("ir.png", "vis.png", "the IR and the visible frames are"),
                          ("ir.png", "scene.png", "the IR frame is"),
                          ("scene.png", "vis.png", "the visible frame is")]:
        assert _calibrate("--auto", "--ir", tmp_path / ir, "--vis", tmp_path / vis,
                          "-o", output) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
        assert error == (f"streamfuse calibrate: error: --ir {tmp_path / ir} / --vis "
                         f"{tmp_path / vis}: in the frame pair {side} blank (one uniform gray): "
                         "no file written; use frames in which both cameras see the scene")
        assert not output.exists()


# --- videos: sync, auto over a clip, check ------------------------------------------------------

def _scene(time: float, size=(160, 128)) -> np.ndarray:
    """A scene at ``time`` seconds: textured background and blobs whose speed changes
    irregularly (so the motion energy has a unique shape in time)."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    image = 60 + 30 * np.sin(xs / 9.0) * np.cos(ys / 13.0)
    for k, (speed, phase) in enumerate([(1.7, 0.3), (0.6, 2.0), (2.9, 4.1)]):
        x = width / 2 + width * 0.35 * np.sin(speed * time + phase + np.sin(3.1 * time * (k + 1)))
        y = height / 2 + height * 0.3 * np.cos(0.8 * speed * time + phase)
        image = image + 150 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * (6 + 3 * k) ** 2))
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_video(path, frames, fps: int, codec: str = "ffv1") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "gray" if codec == "ffv1" else "yuv420p"
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="gray")
            container.mux(stream.encode(video_frame.reformat(format=stream.pix_fmt)))
        container.mux(stream.encode())


def test_sync_names_a_missing_recording(tmp_path, capsys):
    _write_video(tmp_path / "ir.mkv", [_scene(index / 10) for index in range(3)], 10)
    assert _calibrate("--sync", "--ir", tmp_path / "ir.mkv", "--vis", tmp_path / "vis.mkv",
                      "-o", tmp_path / "pair.yaml") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"streamfuse calibrate: error: --vis {tmp_path / 'vis.mkv'}: no such video file")
    assert not (tmp_path / "pair.yaml").exists()


@pytest.mark.parametrize("frozen", [False, True])
def test_sync_recovers_a_known_offset(tmp_path, frozen):
    offset = 0.37  # IR time + offset = visible time
    ir_frames = []
    for index in range(90):
        # Thermal look: inverted, lower contrast; frozen during "flat-field correction".
        shown = index - (index - 30) % 8 if frozen and 30 <= index < 38 else index
        ir_frames.append((255 - _scene(shown / 30 + offset) * 0.6).astype(np.uint8))
    vis_frames = [_scene(index / 25) for index in range(75)]
    _write_video(tmp_path / "ir.mkv", ir_frames, 30)
    _write_video(tmp_path / "vis.mp4", vis_frames, 25, codec="libx264")
    output = tmp_path / "pair.yaml"
    assert _calibrate("--sync", "--ir", tmp_path / "ir.mkv", "--vis", tmp_path / "vis.mp4",
                      "--max-offset", 1.0, "-o", output) == 0
    calibration = load_calibration(output)
    assert calibration.method == "sync"
    assert abs(calibration.time_offset - offset) < 0.5 / 30


def test_auto_over_a_clip_and_check(tmp_path, capsys):
    frames = [_scene(index / 10) for index in range(24)]
    truth = random_homography(np.random.default_rng(3), (160, 128), max_shift_px=8)
    inverse = np.linalg.inv(truth)
    ir_frames = [cv2.warpPerspective(255 - frame, inverse, (160, 128),
                                     borderMode=cv2.BORDER_REFLECT) for frame in frames]
    _write_video(tmp_path / "ir.mkv", ir_frames, 10)
    _write_video(tmp_path / "vis.mkv", frames, 10)
    output = tmp_path / "pair.yaml"
    assert _calibrate("--auto", "--ir", tmp_path / "ir.mkv", "--vis", tmp_path / "vis.mkv",
                      "-o", output) == 0
    calibration = load_calibration(output)
    assert calibration.method == "auto"
    # Issue target for a pooled clip: 1.5 px.
    assert corner_error(calibration.homography, truth, (160, 128)) <= 1.5
    overlay = tmp_path / "overlay.png"
    capsys.readouterr()
    assert _calibrate("--check", output, "--ir", tmp_path / "ir.mkv", "--vis",
                      tmp_path / "vis.mkv", "--overlay", overlay) == 0
    printed = capsys.readouterr().out
    before = float(printed.split("before ")[1].split(",")[0])
    after = float(printed.split("after ")[1].split(" ")[0])
    assert after > before + 0.1
    image = cv2.imread(str(overlay))
    assert image.shape == (128, 320, 3)
    assert ((image[..., 2] == 255) & (image[..., 1] == 0)).sum() > 100  # red IR edges drawn


def test_overlay_draws_ir_edges_only_where_the_ir_camera_sees():
    # A narrow IR camera registered into the visible frame: outside its view the registered
    # frame repeats its edge pixels, and those streaks were drawn as IR edges.
    from streamfuse.registration.check import edge_overlay

    vis_frame = _scene(0.4, (240, 180))
    homography = np.array([[1.0, 0, 70], [0, 1.0, 50], [0, 0, 1]])  # IR -> visible
    ir_frame = np.ascontiguousarray(255 - vis_frame[50:130, 70:170])
    calibration = Calibration(ir_size=(100, 80), vis_size=(240, 180), homography=homography)
    registered = IrRegistrar(calibration)(ir_frame)
    view = warp_valid_mask(calibration)

    def red(overlay: np.ndarray) -> np.ndarray:
        return (overlay[..., 2] == 255) & (overlay[..., 1] == 0) & (overlay[..., 0] == 0)

    unmasked = edge_overlay(registered, vis_frame)
    assert red(unmasked)[~view].sum() > 50  # the streaks, drawn as edges without the view
    overlay = edge_overlay(registered, vis_frame, view)
    assert red(overlay)[~view].sum() == 0 and red(overlay)[view].sum() > 50
    outline = (overlay[..., 0] == 0) & (overlay[..., 1] == 255) & (overlay[..., 2] == 255)
    rows, columns = np.nonzero(outline)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (50, 129, 70, 169)


def test_shipped_demo_calibration_registers_the_demo_clip(capsys):
    """The demo clip's source pair, TNO 001, is itself 1-3 px off at the clip's size; the
    calibration shipped for it (written by --auto on the clip) must register the clip better
    than leaving it as it is, and the demo config must use it."""
    demo = REPO_ROOT / "samples" / "demo"
    calibration = REPO_ROOT / "calibration" / "demo.yaml"
    assert load_calibration(calibration).method == "auto"
    assert "calibration: calibration/demo.yaml" in (REPO_ROOT / "configs" / "demo.yaml").read_text()
    capsys.readouterr()
    assert _calibrate("--check", calibration, "--ir", demo / "ir.mp4", "--vis", demo / "vis.mp4") == 0
    printed = capsys.readouterr().out
    before = float(printed.split("before ")[1].split(",")[0])
    after = float(printed.split("after ")[1].split(" ")[0])
    assert after > before + 0.1


def test_check_refuses_a_frame_of_another_size(tmp_path, capsys):
    calibration = tmp_path / "pair.yaml"
    save_calibration(Calibration.identity(64, 48), calibration)
    cv2.imwrite(str(tmp_path / "ir.png"), np.zeros((60, 80), np.uint8))
    cv2.imwrite(str(tmp_path / "vis.png"), np.zeros((60, 80), np.uint8))
    assert _calibrate("--check", calibration, "--ir", tmp_path / "ir.png", "--vis",
                      tmp_path / "vis.png") == 2
    assert "vis_size is 64x48" in capsys.readouterr().err


def test_auto_refuses_a_chance_alignment_that_few_patches_support():
    # flir-test 20's IR and visible frames show two different streets. Warped as in the bench,
    # --auto lines up their road edges and horizon (edge-orientation correlation 0.18, above the
    # 0.15 floor), 39 px from the synthetic truth; few patches agree with that on their own.
    ir, vis = read_pair("flir-test", 20)
    warp = np.array([[1.0153965348e+00, 2.0598700868e-02, 1.3290265690e+01],
                     [1.5028142783e-02, 1.0564767188e+00, -3.4710983754e+01],
                     [-6.0763899467e-05, 1.5514727560e-04, 1.0]])
    moved, valid = _warped(ir, warp)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    assert result.confidence >= auto.AutoSettings().min_confidence
    assert result.agreement < auto.AutoSettings().min_agreement
    with pytest.raises(StreamFuseError, match="structured patches"):
        auto.check_reliable(result)


def test_auto_refuses_a_fit_whose_equally_good_alternatives_lie_apart():
    # TNO 31 warped as in the bench: before this check --auto wrote a file 3.6 px from the
    # pair's own best fit. Its fine schedules end 6.8 px apart at scores within 0.005.
    ir, vis = read_pair("tno", 31)
    warp = np.array([[9.5229702511e-01, 3.8888947772e-02, 3.0258005555e+01],
                     [-4.4860466979e-03, 9.7043162451e-01, -7.3877758819e-01],
                     [7.6620186796e-06, 6.8446613341e-05, 1.0]])
    moved, valid = _warped(ir, warp)
    result = auto.register_frames([moved], [vis], ir_valid=[valid])
    assert result.uncertainty_px > auto.AutoSettings().max_uncertainty_px
    with pytest.raises(StreamFuseError, match="equally good fits"):
        auto.check_reliable(result)


def test_local_agreement_of_a_true_and_a_shifted_alignment():
    # TNO 7 is aligned to about half a pixel: nearly all of its structured patches agree with
    # the identity, hardly any with the identity shifted by 5 px.
    ir, vis = read_pair("tno", 7)
    valid = np.full(ir.shape, 255, np.uint8)
    settings = auto.AutoSettings()
    structured, agreeing = auto.local_agreement(ir, vis, np.eye(3), valid, settings)
    assert structured >= 30 and agreeing >= 0.9 * structured
    shifted = np.array([[1, 0, 5.0], [0, 1, 0], [0, 0, 1]])
    structured, agreeing = auto.local_agreement(ir, vis, shifted, valid, settings)
    assert agreeing <= 0.2 * structured


def _bench_module(name: str):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_matching_reference_recovers_a_known_misalignment():
    # The bench's second view of the source alignment (no ECC step): the visible frame of a real
    # pair against a copy sheared and shifted like a parallax misalignment (x moves by 2 px at
    # the top and 8 px at the bottom); the matches' homography must find it.
    vis = read_pair("flir-test", 5)[1]
    size = (vis.shape[1], vis.shape[0])
    misalignment = np.array([[1.0, 6.0 / size[1], 2.0], [0, 1, -1.5], [0, 0, 1]])
    moved = cv2.warpPerspective(vis, misalignment, size, flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT)
    fit, matches = _bench_module("calibration_accuracy").block_matching_fit(moved, vis)
    assert matches >= 8
    assert corner_error(fit, np.linalg.inv(misalignment), size) < 0.5
    assert corner_error(np.eye(3), np.linalg.inv(misalignment), size) > 4


def test_bench_renders_a_view_where_its_homography_puts_it():
    # The two-view same-modality truth: a smooth blob seen through a scaled, shifted view must
    # have its intensity centroid where the homography maps the blob's centre. A plain factor 2
    # for the supersampling (session 30 and before) put it a quarter pixel down and right.
    height, width = 80, 96
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    centre = np.array([40.0, 30.0])
    scene = np.exp(-((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (2 * 4.0 ** 2))
    homography = np.array([[0.8, 0, 5.0], [0, 0.8, 3.0], [0, 0, 1]])
    view = _bench_module("calibration_accuracy").render_view(scene, homography)
    centroid = np.array([(view * cols).sum(), (view * rows).sum()]) / view.sum()
    expected = homography[:2, :2] @ centre + homography[:2, 2]
    assert np.abs(centroid - expected).max() < 0.02


def test_bench_counts_the_files_the_cli_warns_about():
    # The bench's count of warned files uses the CLI's threshold: residuals at or under 3 px
    # pass quietly, above it they are warned, right (<= 3 px off) or wrong alike.
    counts = _bench_module("calibration_accuracy").warned_files(
        errors=[4.1, 0.5, 3.5, 0.2, 1.0], residuals=[4.6, 3.2, 2.5, 0.1, 3.0])
    assert counts == {"threshold_px": auto.AutoSettings().warn_residual_px, "written": 5,
                      "wrong": 2, "warned": 2, "warned_wrong": 1}
