"""Sinks and their helpers: the video writer's timestamps and sizes, side-by-side view, display
checks, the ZeroMQ sink's end of stream, and the shipped pipeline configs."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from pipeline_helpers import REPO_ROOT, decode_video, ir_scene, vis_scene
from streamfuse.cli import main
from streamfuse.config import load_yaml
from streamfuse.errors import StreamFuseError
from streamfuse.pipeline import wire
from streamfuse.pipeline.config import DisplaySinkConfig, PipelineConfig, ZmqSinkConfig
from streamfuse.pipeline.frames import Frame, FramePair, FusedFrame
from streamfuse.pipeline.sinks import (DisplaySink, VideoFileWriter, ZmqPubSink, draw_fps, pad_to_even,
                                       side_by_side)
from test_wire import free_tcp_url


def test_video_writer_times_frames_at_the_given_rate_and_pads_odd_sizes(tmp_path):
    writer = VideoFileWriter(tmp_path / "out.mp4", fps=25, crf=0)
    times = [10.0, 10.04, 10.08, 10.16, 10.161, 10.24]   # a gap, then a frame too early for its slot
    frames = [ir_scene(t, 47, 63) for t in times]
    for frame, t in zip(frames, times):
        writer.write(frame, t)
    writer.close()
    decoded_times, decoded = decode_video(tmp_path / "out.mp4")
    assert decoded_times == pytest.approx([0.0, 0.04, 0.08, 0.16, 0.20, 0.24])
    assert decoded[0].shape == (48, 64)
    for frame, image in zip(frames, decoded):   # crf 0: lossless luma, replicated edge
        assert np.abs(image[:47, :63].astype(int) - frame).max() <= 1
        assert np.array_equal(image[47, :63], image[46, :63])


def test_video_writer_refuses_unknown_encoders_with_the_setting_name(tmp_path):
    with pytest.raises(StreamFuseError, match=r"^sinks\.video\.codec: FFmpeg has no encoder 'h266'"):
        VideoFileWriter(tmp_path / "x.mp4", 25, codec="h266")


@pytest.mark.parametrize("name, message", [
    ("x.txt", "x.txt: FFmpeg knows no container for a name ending in '.txt'"),
    ("x.webm", "x.webm: FFmpeg's webm container cannot hold libx264 video; name it .mp4 or .mkv, "
               "or pick another sinks.video.codec"),
])
def test_video_writer_refuses_a_container_that_cannot_hold_the_codec(tmp_path, name, message):
    # Before any frame: the old writer failed at the first frame with a bare "ValueError".
    with pytest.raises(StreamFuseError, match="^" + re.escape(f"{tmp_path / message}")):
        VideoFileWriter(tmp_path / name, 25)
    assert list(tmp_path.iterdir()) == []
    # The same container with a codec it does take is fine.
    VideoFileWriter(tmp_path / "x.webm", 25, codec="libvpx-vp9").close()


def test_record_refuses_a_file_name_it_cannot_write_before_waiting_for_frames(tmp_path, capsys):
    # No publisher on this port: a late check would wait out the timeout, then say no frames.
    output = tmp_path / "rec.webm"
    assert main(["record", "tcp://127.0.0.1:5999", "-o", str(output), "--timeout", "20"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"streamfuse record: error: {output}: FFmpeg's webm container cannot hold "
                     "libx264 video; name it .mp4 or .mkv, or pick another --codec")


def test_pad_to_even_leaves_even_images_alone():
    image = vis_scene(0.0)
    assert pad_to_even(image) is image
    assert pad_to_even(image[:47, :63]).shape == (48, 64, 3)


def test_side_by_side_and_fps_overlay():
    ir, vis = ir_scene(0.0), vis_scene(0.0)
    fused = ir_scene(0.5)
    view = side_by_side(ir, vis, fused)
    assert view.shape == (48, 192, 3)
    assert np.array_equal(view[:, :64, 0], ir) and np.array_equal(view[:, 64:128], vis)
    assert np.array_equal(view[:, 128:, 2], fused)
    before = view.copy()
    draw_fps(view, 24.5)
    assert not np.array_equal(view, before) and np.array_equal(view[30:], before[30:])


def test_display_without_a_display_server_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(StreamFuseError, match="sinks.display: no display"):
        DisplaySink(DisplaySinkConfig(), lambda: None)
    assert main(["view", "tcp://127.0.0.1:5599"]) == 2
    assert "no display" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo.yaml", "cameras.yaml", "publish.yaml"])
def test_shipped_pipeline_configs_are_valid(name):
    config = load_yaml(PipelineConfig, REPO_ROOT / "configs" / name)
    assert config.sinks.video or config.sinks.zmq or config.sinks.display
    for section in (config.ir, config.vis):
        if section.kind == "file":
            assert (REPO_ROOT / section.path).is_file()


def test_demo_clip_is_small_and_pairs_30_with_25_fps():
    ir_times, ir = decode_video(REPO_ROOT / "samples" / "demo" / "ir.mp4")
    vis_times, vis = decode_video(REPO_ROOT / "samples" / "demo" / "vis.mp4")
    size = sum(p.stat().st_size for p in (REPO_ROOT / "samples" / "demo").glob("*.mp4"))
    assert size < 2 * 1024 * 1024
    assert ir[0].shape == vis[0].shape
    assert np.median(np.diff(ir_times)) == pytest.approx(1 / 30) and np.median(np.diff(vis_times)) == pytest.approx(1 / 25)


def test_pub_sink_end_message_reaches_a_subscriber_whose_queue_is_full():
    """Frames past the high-water mark are dropped, the end message is not: a subscriber that
    is still draining a full queue when the run ends must learn that the stream is over (a
    socket closed while that queue is full would lose it)."""
    url = free_tcp_url()
    subscriber = wire.connect_subscriber(url, hwm=1)
    sink = ZmqPubSink(ZmqSinkConfig(url=url, hwm=1, wait_subscribers=1, wait_timeout_s=10))
    closer = None
    headers = []
    try:
        image = np.random.default_rng(0).integers(0, 256, (1024, 1280), np.uint8)
        for seq in range(40):   # 52 MB, far more than the socket buffers hold: most are dropped
            frame = Frame(image, seq / 25, time.monotonic(), seq)
            sink.write(FusedFrame(FramePair(frame, frame, seq), image))
        closer = threading.Thread(target=sink.close)
        closer.start()
        while not headers or not headers[-1].get("end"):
            time.sleep(0.02)    # a slow subscriber
            parts = wire.receive(subscriber, timeout=5)
            if parts is None:
                break
            headers.append(wire.decode_message(parts)[0])
    finally:
        subscriber.close(linger=0)    # a StreamFuse subscriber leaves at the end message
        if closer is None:
            sink.close()
        else:
            closer.join()
    assert headers and headers[-1].get("end"), f"no end message after {len(headers)} frames"
    assert headers[-1]["seq"] == 40
    frames_received = len(headers) - 1
    assert frames_received < 40, "no frame was dropped: the queue was never full, nothing was tested"
