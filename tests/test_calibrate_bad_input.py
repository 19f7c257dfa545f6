"""`streamfuse calibrate` on bad input: one-line errors naming the file and the fix, no file
written, and damaged recordings used up to the damage (real PyAV videos, real images)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from streamfuse.calibration import Calibration, load_calibration, save_calibration
from streamfuse.cli import main
from test_calibration_estimate import _scene, _write_video


def _calibrate(*argv) -> int:
    return main(["calibrate", *map(str, argv)])


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def blocker(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_unwritable_output_fails_before_the_estimation(tmp_path, blocker, capsys):
    frames = [_scene(index / 10) for index in range(24)]
    _write_video(tmp_path / "ir.mkv", frames, 10)
    _write_video(tmp_path / "vis.mkv", frames, 10)
    started = time.monotonic()
    assert _calibrate("--auto", "--ir", tmp_path / "ir.mkv", "--vis", tmp_path / "vis.mkv",
                      "-o", blocker / "pair.yaml") == 2
    assert time.monotonic() - started < 5  # --auto on this clip takes far longer
    assert _last_error(capsys) == (f"streamfuse calibrate: error: -o {blocker / 'pair.yaml'}: "
                                   f"{blocker} is a file, not a folder; name a path in a folder")


@pytest.fixture
def scene_and_calibration(tmp_path):
    """A 160x128 scene image and an identity calibration of that size."""
    calibration = tmp_path / "pair.yaml"
    save_calibration(Calibration.identity(160, 128), calibration)
    scene = tmp_path / "scene.png"
    cv2.imwrite(str(scene), _scene(0.3))
    return scene, calibration


def test_check_refuses_blank_frames(tmp_path, scene_and_calibration, capsys):
    scene, calibration = scene_and_calibration
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 160), 40, np.uint8))
    assert _calibrate("--check", calibration, "--ir", blank, "--vis", scene) == 2
    assert _last_error(capsys) == (f"streamfuse calibrate: error: --ir {blank} / --vis {scene}: in the frame "
                                   "pair the IR frame is blank (one uniform gray): nothing to score; use "
                                   "frames in which both cameras see the scene")


def test_check_refuses_an_overlay_it_cannot_write_before_scoring(tmp_path, blocker,
                                                                  scene_and_calibration, capsys):
    scene, calibration = scene_and_calibration
    for overlay, message in [(blocker / "o.png", f"--overlay {blocker / 'o.png'}: {blocker} is a file"),
                             (tmp_path / "o.jpgx", "the overlay is a PNG image; name it e.g. overlay.png")]:
        assert _calibrate("--check", calibration, "--ir", scene, "--vis", scene, "--overlay", overlay) == 2
        captured = capsys.readouterr()
        assert message in captured.err.strip().splitlines()[-1]
        assert "gradient correlation" not in captured.out  # refused before the work


def test_check_names_the_files_of_a_size_mismatch(tmp_path, scene_and_calibration, capsys):
    scene, calibration = scene_and_calibration
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), cv2.resize(_scene(0.3), (200, 150)))
    assert _calibrate("--check", calibration, "--ir", scene, "--vis", other) == 2
    assert _last_error(capsys).startswith(
        f"streamfuse calibrate: error: {calibration} on --ir {scene} / --vis {other}: visible frame is 200x150")


def test_sync_of_blank_recordings_is_refused(tmp_path, capsys):
    blank = [np.full((64, 80), 90, np.uint8)] * 30
    _write_video(tmp_path / "ir.mkv", blank, 10)
    _write_video(tmp_path / "vis.mkv", blank, 10)
    assert _calibrate("--sync", "--ir", tmp_path / "ir.mkv", "--vis", tmp_path / "vis.mkv",
                      "-o", tmp_path / "pair.yaml") == 2
    assert _last_error(capsys).startswith(
        f"streamfuse calibrate: error: --sync: --ir {tmp_path / 'ir.mkv'} has no motion (blank or "
        "still frames): nothing to sync on")
    assert not (tmp_path / "pair.yaml").exists()


def _accelerating_blob(time: float) -> np.ndarray:
    """A blob speeding up steadily: its motion energy is one ramp, the same shape at every lag."""
    ys, xs = np.mgrid[0:128, 0:160]
    x = 20 + 12 * time ** 2
    blob = 150 * np.exp(-((xs - x) ** 2 + (ys - 64) ** 2) / 200)
    return np.clip(60 + blob, 0, 255).astype(np.uint8)


def test_sync_refuses_an_offset_the_motion_does_not_single_out(tmp_path, capsys):
    # As a recording cut short by damage: under a second of visible frames against three of IR.
    _write_video(tmp_path / "ir.mkv", [255 - _accelerating_blob(i / 30) for i in range(90)], 30)
    _write_video(tmp_path / "vis.mkv", [_accelerating_blob(i / 25) for i in range(21)], 25)
    output = tmp_path / "pair.yaml"
    assert _calibrate("--sync", "--ir", tmp_path / "ir.mkv", "--vis", tmp_path / "vis.mkv",
                      "-o", output) == 2
    error = _last_error(capsys)
    assert error.startswith(f"streamfuse calibrate: error: --sync is ambiguous: --ir "
                            f"{tmp_path / 'ir.mkv'} and --vis {tmp_path / 'vis.mkv'} "
                            "correlate about equally")
    assert error.endswith("no file written")
    assert not output.exists()


def test_sync_uses_a_recording_up_to_its_damage(tmp_path, capsys):
    offset = 0.3
    _write_video(tmp_path / "ir.mkv", [(255 - _scene(i / 25 + offset)).astype(np.uint8) for i in range(100)], 25)
    vis = tmp_path / "vis.mp4"  # H.264 reports the damage (FFV1 in Matroska decodes it as noise)
    _write_video(vis, [_scene(i / 25) for i in range(100)], 25, codec="libx264")
    data = bytearray(vis.read_bytes())
    middle = len(data) * 3 // 4
    data[middle:middle + 400] = np.random.default_rng(2).integers(0, 256, 400, dtype=np.uint8).tobytes()
    vis.write_bytes(bytes(data))
    output = tmp_path / "pair.yaml"
    assert _calibrate("--sync", "--ir", tmp_path / "ir.mkv", "--vis", vis, "--max-offset", 1.0,
                      "-o", output) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"warning: {vis}: corrupt after " in warning[0]
    assert abs(load_calibration(output).time_offset - offset) < 0.5 / 25


@pytest.mark.parametrize("size", [(1, 1), (7, 5)])
def test_auto_names_frames_too_small(tmp_path, capsys, size):
    image = tmp_path / "tiny.png"
    cv2.imwrite(str(image), np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0]))
    assert _calibrate("--auto", "--ir", image, "--vis", image, "-o", tmp_path / "p.yaml") == 2
    assert _last_error(capsys) == (f"streamfuse calibrate: error: {image}: {size[0]}x{size[1]} "
                                   "is too small (need at least 8x8)")


@pytest.mark.parametrize("rows, message", [
    ("10,10,12,11\n100,10,101,12\n10,90,11,93\n150,120,149,121\n",
     "point 4 (IR 150,120) lies outside the 120x100 IR frame: fix the point, or --ir-size"),
    ("10,10,12,11\n100,10,101,12\n10,90,11,93\n50,60,149,129\n",
     "point 4 (visible 149,129) lies outside the 160x128 visible frame"),
    ("10,10,12,11\n100,10,nan,12\n10,90,11,93\n50,60,51,62\n",
     "points.csv:2: every value must be a finite number (got 100,10,nan,12)"),
    ("10,10,12,11\n100,10,101\n", "points.csv:2: expected four numbers ir_x, ir_y, vis_x, vis_y (got 3: 100,10,101)"),
])
def test_points_that_cannot_be_right_are_named(tmp_path, capsys, rows, message):
    csv = tmp_path / "points.csv"
    csv.write_text(rows)
    assert _calibrate("--points", csv, "--ir-size", "120x100", "--vis-size", "160x128",
                      "-o", tmp_path / "p.yaml") == 2
    assert message in _last_error(capsys)
    assert not (tmp_path / "p.yaml").exists()
