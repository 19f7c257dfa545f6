"""Gain control of deep (16-bit, 12-bit) frames: the window arithmetic against float64 and NumPy
references, the stream's smoothing against its recurrence, and raw thermal counts through real
16-bit PNGs, FFV1 videos, `streamfuse fuse` and the pipeline's sources."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from pipeline_helpers import decode_video, write_video
from streamfuse.cli import main
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import Fuser
from streamfuse.gain import (HIGH_PERCENTILE, LOW_PERCENTILE, MIN_SPAN, SMOOTHING_S, Gain,
                             GainControl, apply_window, counts_format, percentile_window, to_8bit)
from streamfuse.images import read_image
from streamfuse.pipeline.config import SourceConfig
from streamfuse.pipeline.sources import FolderSource, VideoFileSource
from streamfuse.registration.frames import read_video_gray

SAMPLES = REPO_ROOT / "samples" / "pairs"


def real_ir() -> np.ndarray:
    """A real 8-bit IR frame shipped in the repository (TNO), as the scene."""
    return cv2.imread(str(SAMPLES / "ir" / "tno_005.png"), cv2.IMREAD_GRAYSCALE)


def radiometric(scene: np.ndarray, seed: int = 0, base: int = 7400, per_level: int = 3) -> np.ndarray:
    """The scene as a radiometric camera's 16-bit counts: a narrow band of the range plus
    sensor noise (sigma 1 count)."""
    noise = np.random.default_rng(seed).normal(0, 1, scene.shape)
    return np.round(base + per_level * scene.astype(np.float64) + noise).astype(np.uint16)


def window_reference(counts: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.round((counts.astype(np.float64) - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)


def test_window_matches_a_float64_reference_on_random_and_real_counts():
    rng = np.random.default_rng(1)
    real = radiometric(real_ir())
    frames = [rng.integers(0, 65536, (37, 53), dtype=np.uint16), real]
    windows = [(1234.5, 60000.25), (float(np.percentile(real, 2)), float(np.percentile(real, 98)))]
    for counts, (low, high) in zip(frames, windows):
        mapped = apply_window(counts, low, high)
        assert mapped.dtype == np.uint8
        np.testing.assert_array_equal(mapped, window_reference(counts, low, high))  # exact: tolerance 0
        assert mapped.min() == 0 and mapped.max() == 255  # the window cuts into both frames


def test_percentile_window_is_numpys_inverted_cdf():
    rng = np.random.default_rng(2)
    for counts in [rng.integers(0, 65536, (64, 80), dtype=np.uint16),
                   rng.normal(20000, 300, (101, 67)).astype(np.uint16), radiometric(real_ir(), 3)]:
        expected = np.percentile(counts, [LOW_PERCENTILE, HIGH_PERCENTILE], method="inverted_cdf")
        assert percentile_window(counts) == tuple(float(value) for value in expected)


def test_raw_thermal_counts_get_their_contrast_back():
    scene = real_ir()
    counts = radiometric(scene)
    # Scaling the whole 16-bit range (what image libraries do) leaves the frame nearly flat.
    full = to_8bit(counts, Gain("full"))
    assert int(full.max()) - int(full.min()) <= 4
    np.testing.assert_array_equal(full, window_reference(counts, 0, 65535))
    automatic = to_8bit(counts)
    assert np.corrcoef(automatic.ravel(), scene.ravel())[0, 1] > 0.99
    assert len(np.unique(automatic)) > 200
    # About 0.5 % of the pixels at or below the window's low end and above its high end
    # (plus the pixels that round to the ends).
    assert 0.002 < (automatic == 0).mean() < 0.01 and 0.002 < (automatic == 255).mean() < 0.01
    fixed = to_8bit(counts, Gain.parse("7400:8165", "--gain"))
    np.testing.assert_array_equal(fixed, window_reference(counts, 7400, 8165))


def test_a_featureless_frame_is_not_stretched_to_full_contrast():
    noise = np.random.default_rng(4).normal(0, 2, (64, 80))
    flat = np.round(8000 + noise).astype(np.uint16)  # a lens cap: sensor noise only
    mapped = to_8bit(flat)
    # At most 255 / MIN_SPAN levels per count: noise of 2 counts stays near 16 levels.
    assert mapped.std() < 2 * 255 / MIN_SPAN * 1.2 and 100 < mapped.mean() < 155
    for level in (0, 8000, 65535):  # uniform frames, at both ends of the range too
        uniform = to_8bit(np.full((8, 8), level, np.uint16))
        assert len(np.unique(uniform)) == 1
    assert to_8bit(np.full((8, 8), 0, np.uint16))[0, 0] == 0
    assert to_8bit(np.full((8, 8), 65535, np.uint16))[0, 0] == 255


def test_eight_bit_frames_are_never_changed():
    scene = real_ir()
    for gain in (Gain(), Gain("full"), Gain("window", 10, 20)):
        assert to_8bit(scene, gain) is scene


def test_a_stream_follows_a_scene_change_with_its_time_constant():
    scene = real_ir()
    cool, hot = radiometric(scene, 5, per_level=2), radiometric(scene, 6, base=7000, per_level=8)
    control = GainControl()
    interval = 0.1
    frames = [cool] * 3 + [hot] * 12
    expected = None
    for index, counts in enumerate(frames):
        mapped = control(counts, index * interval)
        target = percentile_window(counts)
        if expected is None:
            expected = target  # the first frame takes its own window
        else:
            keep = math.exp(-interval / SMOOTHING_S)
            expected = tuple(target_end + keep * (old - target_end)
                             for old, target_end in zip(expected, target))
        assert control.window == pytest.approx(expected, rel=1e-12)
        np.testing.assert_array_equal(mapped, apply_window(counts, *expected))
    # Right after the change the hot frame is still shown through the cool window (saturated);
    # after 12 frames (2.4 time constants) the window is within 10 % of the hot frame's.
    hot_window = percentile_window(hot)
    assert abs(control.window[1] - hot_window[1]) < 0.1 * (hot_window[1] - hot_window[0])
    # A jump back in time (a replay) and a frame without time start afresh.
    np.testing.assert_array_equal(control(cool, 0.0), to_8bit(cool))
    np.testing.assert_array_equal(GainControl()(hot, None), to_8bit(hot))


def test_sixteen_bit_pngs_are_read_through_the_gain(tmp_path):
    counts = radiometric(real_ir(), 7)
    gray_path, colour_path = tmp_path / "ir16.png", tmp_path / "rgb16.png"
    cv2.imwrite(str(gray_path), counts)
    cv2.imwrite(str(colour_path), np.dstack([counts] * 3))
    np.testing.assert_array_equal(read_image(gray_path, gray=True), to_8bit(counts))
    np.testing.assert_array_equal(read_image(colour_path, gray=True), to_8bit(counts))
    colour = read_image(colour_path)
    assert colour.shape == counts.shape + (3,) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour[:, :, 1], to_8bit(counts))
    np.testing.assert_array_equal(read_image(gray_path, gray=True, gain=Gain("full")),
                                  window_reference(counts, 0, 65535))


def test_gain_settings_that_cannot_work_are_named():
    assert Gain.parse("7000:8200", "--gain") == Gain("window", 7000, 8200)
    assert Gain.parse([7000, 8200], "gain") == Gain("window", 7000, 8200)
    assert str(Gain.parse("full", "--gain")) == "full" and str(Gain("window", 1, 2)) == "1:2"
    with pytest.raises(StreamFuseError, match=r"^--gain: 'hot' is not a gain; give auto, full, or"):
        Gain.parse("hot", "--gain")
    with pytest.raises(StreamFuseError, match=r"^--gain: window 8200:7000 must have 0 <= LOW < HIGH"):
        Gain.parse("8200:7000", "--gain")
    with pytest.raises(StreamFuseError, match=r"window 0:70000 must have"):
        Gain.parse([0, 70000], "gain")
    with pytest.raises(ValueError, match=r"'gain': \[1, 2, 3\] is not a gain"):
        SourceConfig(kind="file", path="x.mkv", gain=[1, 2, 3])
    # YAML turns 10:30 into 630; the message says so rather than leave the user puzzled.
    with pytest.raises(StreamFuseError, match=r"'630' is not a gain; .*base-60 number: write \[LOW, HIGH\]"):
        Gain.parse("630", "--set ir.gain")


def test_deep_gray_video_formats_are_read_as_counts():
    assert counts_format("gray16be") == ("gray16le", 65535)
    assert counts_format("gray12le") == ("gray12le", 4095)
    assert counts_format("gray10be") == ("gray10le", 1023)
    for shallow in ("gray", "yuv420p", "grayf32le", "ya16le", "bgr24"):
        assert counts_format(shallow)[0] is None


@pytest.mark.parametrize("pix_fmt, full_scale", [("gray16le", 65535), ("gray12le", 4095)])
def test_a_deep_video_source_gives_the_stream_gain_of_its_counts(tmp_path, pix_fmt, full_scale):
    # FFV1 is lossless: the source's frames must be exactly the stream gain of the counts written.
    scene = real_ir()[:96, :128]
    counts = [radiometric(np.roll(scene, 4 * index, axis=1), index, base=1800 + 40 * index)
              for index in range(8)]
    path = write_video(tmp_path / "ir.mkv", [(counts, 10)], codec="ffv1", pix_fmt=pix_fmt)
    source = VideoFileSource(path, "ir")
    reference = GainControl(Gain(), full_scale)
    try:
        for index, frame_counts in enumerate(counts):
            frame = source.read()
            assert frame.timestamp == pytest.approx(index / 10)
            np.testing.assert_array_equal(frame.image, reference(frame_counts, index / 10))
        assert source.read() is None
    finally:
        source.close()
    # full: the format's own range (a 12-bit video's 4095, not 65535).
    source = VideoFileSource(path, "ir", gain=Gain("full"))
    try:
        np.testing.assert_array_equal(source.read().image,
                                      window_reference(counts[0], 0, full_scale))
    finally:
        source.close()


def test_a_folder_source_smooths_the_gain_over_its_frames(tmp_path):
    scene = real_ir()
    counts = [radiometric(scene, 0), radiometric(scene, 1, base=6000, per_level=9)]
    files = []
    for index, frame_counts in enumerate(counts):
        files.append(tmp_path / f"{index:03d}.png")
        cv2.imwrite(str(files[-1]), frame_counts)
    source = FolderSource(files, "ir", fps=5.0)
    reference = GainControl()
    for index, frame_counts in enumerate(counts):
        np.testing.assert_array_equal(source.read().image, reference(frame_counts, index / 5.0))


def test_fuse_takes_a_sixteen_bit_ir_image(tmp_path):
    scene = real_ir()
    vis = cv2.imread(str(SAMPLES / "vis" / "tno_005.png"), cv2.IMREAD_GRAYSCALE)
    counts = radiometric(scene, 8)
    cv2.imwrite(str(tmp_path / "ir16.png"), counts)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "ir8.png"), to_8bit(counts))
    outputs = {}
    for name, ir, extra in [("auto", "ir16.png", []), ("eight_bit", "ir8.png", []),
                            ("full", "ir16.png", ["--gain", "full"])]:
        outputs[name] = tmp_path / f"{name}.png"
        assert main(["fuse", "--ir", str(tmp_path / ir), "--vis", str(tmp_path / "vis.png"),
                     "-o", str(outputs[name]), *extra]) == 0
    fused = {name: cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for name, path in outputs.items()}
    # The 16-bit file fuses exactly as its auto-gained 8-bit frame does ...
    np.testing.assert_array_equal(fused["auto"], fused["eight_bit"])
    # ... and the IR's structure is in the fused image, which the full-range scaling loses.
    structure = {name: np.corrcoef(image.ravel().astype(float), scene.ravel())[0, 1]
                 for name, image in fused.items()}
    assert structure["auto"] > structure["full"] + 0.2, structure


def test_fuse_of_a_sixteen_bit_thermal_video(tmp_path):
    scene = real_ir()[:96, :128]
    vis_scene = cv2.imread(str(SAMPLES / "vis" / "tno_005.png"), cv2.IMREAD_GRAYSCALE)[:96, :128]
    counts = [radiometric(np.roll(scene, 3 * index, axis=0), index) for index in range(10)]
    ir_path = write_video(tmp_path / "ir.mkv", [(counts, 10)], codec="ffv1", pix_fmt="gray16le")
    vis_path = write_video(tmp_path / "vis.mkv", [([vis_scene] * 10, 10)], codec="ffv1", pix_fmt="gray")
    out = tmp_path / "fused.mkv"
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(out),
                 "--engine", "eager", "--precision", "fp32"]) == 0
    _, fused = decode_video(out)
    assert len(fused) == 10
    fuser = Fuser.from_weights(None, "saliency+cam")
    stream_gain = GainControl()
    for index, frame_counts in enumerate(counts):
        expected = fuser.fuse(stream_gain(frame_counts, index / 10), vis_scene)
        flat = fuser.fuse(to_8bit(frame_counts, Gain("full")), vis_scene)
        error = np.abs(fused[index].astype(float) - expected).mean()
        # H.264 at crf 20 is lossy (2.6-3.0 levels on this noisy texture); fusing the flat
        # full-range frame is off by about 38.
        assert error < 4 and np.abs(fused[index].astype(float) - flat).mean() > 8 * error


def test_calibration_reads_deep_video_with_the_stream_gain(tmp_path):
    scene = real_ir()[:96, :128]
    counts = [radiometric(np.roll(scene, 5 * index, axis=1), index) for index in range(5)]
    # PNG frames store big-endian 16-bit counts: the byte order is converted on reading.
    path = write_video(tmp_path / "ir.mov", [(counts, 10)], codec="png", pix_fmt="gray16be")
    reference = GainControl()
    frames = list(read_video_gray(path))
    assert len(frames) == 5
    for index, ((time, frame), frame_counts) in enumerate(zip(frames, counts)):
        assert time == pytest.approx(index / 10)
        np.testing.assert_array_equal(frame, reference(frame_counts, index / 10))


def test_a_float_image_is_refused_with_what_to_give_instead(tmp_path):
    temperatures = (20 + real_ir() / 25.0).astype(np.float32)  # degrees C, as radiometric tools export
    path = tmp_path / "celsius.tiff"
    assert cv2.imwrite(str(path), temperatures)
    with pytest.raises(StreamFuseError, match=rf"^{path}: unsupported pixel type float32 \(need 8 or "
                       r"16-bit integers\): a radiometric export of temperatures\? save the camera's "
                       r"raw counts as 16-bit PNG/TIFF instead$"):
        read_image(path, gray=True)
