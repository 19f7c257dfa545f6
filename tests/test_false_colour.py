"""IR in a false-colour palette (ironbow, rainbow) is fused as its brightness: every way IR comes
in warns once, on real IR frames coloured with OpenCV's palettes and real H.264 video."""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from pipeline_helpers import decode_video, free_tcp_url, write_video
from streamfuse.cli import main
from streamfuse.images import is_false_colour
from streamfuse.pipeline import wire
from streamfuse.pipeline.sources import CaptureSource, FolderSource, VideoFileSource, ZmqSource

SAMPLES = REPO_ROOT / "samples" / "pairs"
PALETTES = [cv2.COLORMAP_INFERNO, cv2.COLORMAP_JET, cv2.COLORMAP_HOT, cv2.COLORMAP_TURBO]


def real_ir() -> np.ndarray:
    return cv2.imread(str(SAMPLES / "ir" / "tno_005.png"), cv2.IMREAD_GRAYSCALE)[:96, :128].copy()


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if "false-colour palette" in record.getMessage()]


def test_palettes_are_told_from_gray_frames(tmp_path):
    for stem in ("tno_005.png", "tno_007.png", "flir_001.jpg", "flir_002.jpg"):
        ir = cv2.imread(str(SAMPLES / "ir" / stem), cv2.IMREAD_GRAYSCALE)
        for palette in PALETTES:
            assert is_false_colour(cv2.applyColorMap(ir, palette)), (stem, palette)
        assert not is_false_colour(cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR))
        assert not is_false_colour(ir)
    # Gray frames through H.264 in 4:2:0 pick up a little chroma, far below the threshold.
    path = write_video(tmp_path / "gray.mp4", [([real_ir()] * 3, 10)])
    _, decoded = decode_video(path, fmt="bgr24")
    assert not any(is_false_colour(frame) for frame in decoded)


@pytest.mark.parametrize("role, coloured, warned", [("ir", True, 1), ("ir", False, 0), ("vis", True, 0)])
def test_a_video_source_warns_once_for_palette_ir(tmp_path, caplog, role, coloured, warned):
    scene = real_ir()
    frames = [np.roll(scene, 4 * index, axis=1) for index in range(5)]
    if coloured:
        frames = [cv2.applyColorMap(frame, cv2.COLORMAP_INFERNO) for frame in frames]
    path = write_video(tmp_path / "ir.mp4", [(frames, 10)])
    source = VideoFileSource(path, role)
    with caplog.at_level(logging.WARNING, logger="streamfuse.pipeline"):
        try:
            while source.read() is not None:
                pass
        finally:
            source.close()
    assert warnings_of(caplog) == [f"{path}: the IR frames are in colour (a false-colour palette?); "
                                   "they are fused as their brightness, which a palette need not make "
                                   "follow temperature: switch the camera to a gray palette (white-hot) "
                                   "if you can"] * warned


def test_a_folder_source_warns_once_for_palette_ir(tmp_path, caplog):
    files = []
    for index in range(3):
        files.append(tmp_path / f"{index:03d}.png")
        cv2.imwrite(str(files[-1]), cv2.applyColorMap(np.roll(real_ir(), index, axis=0), cv2.COLORMAP_JET))
    source = FolderSource(files, "ir", fps=5.0)
    with caplog.at_level(logging.WARNING, logger="streamfuse.pipeline"):
        frames = [source.read() for _ in files]
    assert all(frame.image.ndim == 2 for frame in frames)  # fused as gray, as before
    assert len(warnings_of(caplog)) == 1 and str(tmp_path) in warnings_of(caplog)[0]


def test_fuse_warns_for_a_palette_ir_image(tmp_path, capsys):
    vis = cv2.imread(str(SAMPLES / "vis" / "tno_005.png"), cv2.IMREAD_GRAYSCALE)[:96, :128]
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    cv2.imwrite(str(tmp_path / "ironbow.png"), cv2.applyColorMap(real_ir(), cv2.COLORMAP_INFERNO))
    cv2.imwrite(str(tmp_path / "gray.png"), real_ir())
    for ir, warned in (("ironbow.png", True), ("gray.png", False)):
        assert main(["fuse", "--ir", str(tmp_path / ir), "--vis", str(tmp_path / "vis.png"),
                     "-o", str(tmp_path / f"fused-{ir}")]) == 0
        warning = f"warning: {tmp_path / ir}: the IR frames are in colour (a false-colour palette?)"
        assert (warning in capsys.readouterr().err) == warned


def test_a_camera_warns_once_for_palette_ir(tmp_path, caplog):
    # A video file opened through OpenCV's capture, as a camera URL would be.
    frames = [cv2.applyColorMap(np.roll(real_ir(), 3 * index, axis=1), cv2.COLORMAP_TURBO) for index in range(4)]
    camera = write_video(tmp_path / "camera.mp4", [(frames, 10)])
    source = CaptureSource(str(camera), "ir", threading.Event(), open_timeout_s=10)
    with caplog.at_level(logging.WARNING, logger="streamfuse.pipeline"):
        try:
            images = [source.read().image for _ in frames]
        finally:
            source.close()
    assert all(image.ndim == 2 for image in images)
    assert len(warnings_of(caplog)) == 1 and warnings_of(caplog)[0].startswith(f"ir camera {camera}: ")


def test_a_zmq_source_warns_once_for_palette_ir(caplog):
    import zmq

    url = free_tcp_url()
    publisher = zmq.Context.instance().socket(zmq.XPUB)
    publisher.bind(url)
    frames = [cv2.applyColorMap(np.roll(real_ir(), index, axis=0), cv2.COLORMAP_JET) for index in range(3)]

    def publish():
        if publisher.poll(20000):
            publisher.recv()  # the source has subscribed
        for index, frame in enumerate(frames):
            publisher.send_multipart(wire.encode_frame(frame, index, time=index / 10))
        publisher.send_multipart(wire.end_message(len(frames)))

    source = ZmqSource(url, "ir", threading.Event(), fps=10)
    thread = threading.Thread(target=publish)
    thread.start()
    with caplog.at_level(logging.WARNING, logger="streamfuse.pipeline"):
        try:
            images = [source.read().image for _ in frames]
            assert source.read() is None
        finally:
            thread.join()
            source.close()
            publisher.close(linger=0)
    assert all(image.ndim == 2 for image in images)
    assert len(warnings_of(caplog)) == 1 and warnings_of(caplog)[0].startswith(f"ir source {url}: ")
