"""`streamfuse run` end to end on real encoded videos: pairing, fusion, sinks, shutdown, faults.

Every test drives the real thing: PyAV encodes the input videos and decodes the outputs, frames
travel through the real threads and queues, ZeroMQ runs on real sockets, and the expected
fused frames come from :meth:`Fuser.fuse` on the same decoded pairs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline_helpers import (decode_video, free_tcp_url, ir_scene, make_weights, python_process,
                              reference_pairs, vis_scene, write_config, write_video)
from streamfuse.cli import main
from streamfuse.engines import create_fuser
from streamfuse.fuser import Fuser
from streamfuse.pipeline.config import load_pipeline_config
from streamfuse.pipeline.runner import Pipeline, run_pipeline

# The runs set one torch thread in this process (inference.threads: 1); the fixture restores it.
pytestmark = pytest.mark.usefixtures("single_thread")

OFFSET = 0.113          # IR time + OFFSET = visible time (not a multiple of either interval)
IR_FPS, VIS_FPS = 30, 25
TOLERANCE = 0.5 / VIS_FPS


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture(scope="module")
def fuser(weights) -> Fuser:
    return Fuser.from_weights(weights, "saliency+cam")


def make_clips(folder: Path, seconds: float) -> tuple[Path, Path]:
    """IR: H.264 MP4 at 30 fps showing the world at its time + OFFSET. Visible: MPEG-4 part 2
    in Matroska at 25 fps, in colour."""
    ir_frames = [ir_scene(i / IR_FPS + OFFSET) for i in range(int(seconds * IR_FPS))]
    vis_frames = [vis_scene(j / VIS_FPS) for j in range(int(seconds * VIS_FPS))]
    folder.mkdir(parents=True, exist_ok=True)
    ir_path = write_video(folder / "ir.mp4", [(ir_frames, IR_FPS)], codec="h264")
    vis_path = write_video(folder / "vis.mkv", [(vis_frames, VIS_FPS)], codec="mpeg4")
    return ir_path, vis_path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    return make_clips(tmp_path_factory.mktemp("clips"), seconds=2.0)


@pytest.fixture(scope="module")
def decoded(clips):
    """What the pipeline sees: IR decoded to gray (luma), the colour visible stream to BGR."""
    ir_path, vis_path = clips
    return decode_video(ir_path, fmt="gray"), decode_video(vis_path, fmt="bgr24")


def base_config(ir_path, vis_path, weights, inference: dict | None = None, **sections) -> dict:
    """Two video files, the known offset, the tiny checkpoint on one CPU thread; ``sections``
    replace top-level keys, ``inference`` adds to that section."""
    return {
        "ir": {"kind": "file", "path": str(ir_path)},
        "vis": {"kind": "file", "path": str(vis_path)},
        "sync": {"offset": OFFSET},
        # eager fp32: the outputs are compared with Fuser.fuse to the gray level
        "inference": {"weights": str(weights), "threads": 1, "engine": "eager", "precision": "fp32",
                      **(inference or {})},
        "sinks": {},
        **sections,
    }


def run_cli(tmp_path, config: dict, *extra: str) -> tuple[int, dict | None]:
    config_path = write_config(tmp_path / "run.yaml", config)
    stats_path = tmp_path / "stats.json"
    code = main(["run", str(config_path), "--stats", str(stats_path), "--no-progress", *extra])
    return code, json.loads(stats_path.read_text()) if stats_path.exists() else None


def read_pngs(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_file_run_fuses_every_synchronisable_pair_once_in_order(tmp_path, clips, decoded, weights, fuser):
    (ir_times, ir_images), (vis_times, vis_images) = decoded
    expected = reference_pairs(ir_times, vis_times, OFFSET, TOLERANCE)
    distances = [abs(ir_times[i] + OFFSET - t) for t in vis_times for i in range(len(ir_times))]
    assert min(abs(d - TOLERANCE) for d in distances) > 1e-4, "a pair sits on the tolerance edge"
    assert 40 <= len(expected) < len(vis_times) < len(ir_times)

    config = base_config(*clips, weights, inference={"batch_size": 4},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    code, stats = run_cli(tmp_path, config)
    assert code == 0

    outputs = read_pngs(tmp_path / "fused")
    assert len(outputs) == len(expected)
    for output, (i, j) in zip(outputs, expected):
        assert max_difference(output, fuser.fuse(ir_images[i], vis_images[j])) <= 1
    # The check can tell neighbouring IR frames apart: pairing one frame off would fail it.
    i, j = expected[len(expected) // 2]
    assert max_difference(outputs[len(expected) // 2], fuser.fuse(ir_images[i + 1], vis_images[j])) > 1
    assert stats["sync"]["pairs"] == len(expected)
    assert stats["frames_written"] == len(expected) and stats["errors"] == []
    assert stats["sources"]["vis"]["fps"] == VIS_FPS and stats["sources"]["ir"]["fps"] == IR_FPS
    assert all(q["dropped"] == 0 and q["max_depth"] <= q["capacity"] for q in stats["queues"].values())


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="OpenVINO is not installed (pip install 'streamfuse[openvino]')")


class BatchSizeRecorder:
    """The real engine, with the number of pairs of each call it gets written down."""

    def __init__(self, fuser):
        self.fuser = fuser
        self.engine = getattr(fuser, "engine", None)
        self.batch_sizes: list[int] = []

    def fuse_batch(self, ir_frames, vis_frames):
        self.batch_sizes.append(len(ir_frames))
        return self.fuser.fuse_batch(ir_frames, vis_frames)


@needs_openvino
def test_short_batches_are_filled_to_the_batch_size_and_the_filling_is_not_written(
        tmp_path, clips, decoded, weights, fuser):
    (ir_times, ir_images), (vis_times, vis_images) = decoded
    expected = reference_pairs(ir_times, vis_times, OFFSET, TOLERANCE)
    batch_size = 8
    assert len(expected) % batch_size != 0  # the last batch of the file is short at least
    # No wait for a batch to fill: most batches leave short.
    config = base_config(*clips, weights, inference={"batch_size": batch_size, "batch_timeout_ms": 0},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    # OpenVINO builds per input shape; fp32 matches the eager reference within 1e-3.
    recorder = BatchSizeRecorder(create_fuser(weights, "saliency+cam", "openvino", "fp32", "cpu",
                                              cache_dir=tmp_path / "cache"))
    result = Pipeline(load_pipeline_config(write_config(tmp_path / "run.yaml", config)), recorder).run(False)

    assert result.errors == [] and result.summary["frames_written"] == len(expected)
    # One shape for the engine: every call has batch_size pairs, padding included.
    assert set(recorder.batch_sizes) == {batch_size} and len(recorder.batch_sizes) * batch_size > len(expected)
    outputs = read_pngs(tmp_path / "fused")
    assert len(outputs) == len(expected)
    for output, (i, j) in zip(outputs, expected):
        assert max_difference(output, fuser.fuse(ir_images[i], vis_images[j])) <= 1


@needs_openvino
def test_an_engine_that_builds_per_size_says_so_once_per_frame_size(tmp_path, clips, weights, caplog):
    config = base_config(*clips, weights, inference={"engine": "openvino", "batch_size": 2},
                         limits={"frames": 6}, sinks={"folder": {"path": str(tmp_path / "fused")}})
    caplog.set_level(logging.INFO, logger="streamfuse")
    code, stats = run_cli(tmp_path, config)
    assert code == 0 and stats["frames_written"] >= 6
    height, width = cv2.imread(str(next((tmp_path / "fused").glob("*.png")))).shape[:2]
    notices = [r.getMessage() for r in caplog.records if "builds its network" in r.getMessage()]
    assert notices == [f"inference: the openvino engine builds its network for {width}x{height} frames, "
                       "batch 2 (once per frame size; up to a minute or two the first time, less from its cache)"]


def test_eager_gets_short_batches_as_they_are(tmp_path, clips, weights):
    config = base_config(*clips, weights, inference={"batch_size": 8, "batch_timeout_ms": 0},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    recorder = BatchSizeRecorder(create_fuser(weights, "saliency+cam", "eager", "fp32", "cpu"))
    result = Pipeline(load_pipeline_config(write_config(tmp_path / "run.yaml", config)), recorder).run(False)
    # Eager builds nothing per shape: filling would only add work.
    assert result.errors == [] and sum(recorder.batch_sizes) == result.summary["frames_written"]


def last_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return lines[-1]


def test_unknown_fusion_rule_in_config_names_file_line_and_rules(tmp_path, clips, weights, capsys):
    config = base_config(*clips, weights, inference={"fusion": "salency"},
                         sinks={"folder": {"path": str(tmp_path / "out")}})
    code, _ = run_cli(tmp_path, config)
    message = last_error_line(capsys)
    assert code == 2 and message.startswith(f"streamfuse run: error: {tmp_path / 'run.yaml'}:")
    assert "'inference.fusion'" in message and "'salency'" in message and "saliency+cam" in message


def test_bad_config_is_a_one_line_error_naming_file_line_and_key(tmp_path, clips, weights, capsys):
    config = base_config(*clips, weights, sinks={"folder": {"path": str(tmp_path / "out")}})
    config["sinks"]["vidoe"] = {"path": "x.mp4"}
    code, _ = run_cli(tmp_path, config)
    message = last_error_line(capsys)
    assert code == 2
    assert message.startswith(f"streamfuse run: error: {tmp_path / 'run.yaml'}:")
    assert "unknown key 'sinks.vidoe'" in message and "video" in message


def test_wrong_type_names_its_line(tmp_path, clips, weights, capsys):
    config_path = tmp_path / "bad.yaml"
    config_path.write_text(f"ir: {{path: {clips[0]}}}\nvis: {{path: {clips[1]}}}\n"
                           "inference:\n  batch_size: four\nsinks: {folder: {path: out}}\n")
    assert main(["run", str(config_path)]) == 2
    assert last_error_line(capsys) == (f"streamfuse run: error: {config_path}:4: key 'inference.batch_size' "
                                       "must be an integer, got 'four'")


def test_missing_calibration_and_missing_video_are_one_line_errors(tmp_path, clips, weights, capsys):
    config = base_config(*clips, weights, calibration=str(tmp_path / "nope.yaml"),
                         sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    message = last_error_line(capsys)
    assert "calibration: no such file" in message and "nope.yaml" in message
    config = base_config(tmp_path / "missing.mp4", clips[1], weights, sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    assert "ir.path: no such video file" in last_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, clips, weights, capsys,
                                                              monkeypatch):
    # The shipped configs name samples/... from the repository root; run elsewhere, a user must
    # learn that paths start from the current directory.
    monkeypatch.chdir(tmp_path)
    config = base_config("samples/demo/ir.mp4", clips[1], weights,
                         sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    message = last_error_line(capsys)
    assert "ir.path: no such video file: samples/demo/ir.mp4" in message
    assert f"current directory {tmp_path}" in message and "absolute paths" in message
    config = base_config(*clips, weights, calibration="calibration/demo.yaml",
                         sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    assert f"calibration/demo.yaml (looked for in the current directory {tmp_path}" in (
        last_error_line(capsys))


def test_a_file_that_is_not_a_video_is_a_one_line_error(tmp_path, clips, weights, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    config = base_config(garbage, clips[1], weights, sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    assert "garbage.mp4: cannot open the ir video" in last_error_line(capsys)


def test_unopenable_videos_say_why_they_most_likely_are(tmp_path, clips, weights, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.mp4"  # a recording stopped before MP4 wrote its index (at the end)
    data = write_video(tmp_path / "whole.mp4", [([ir_scene(i / 10) for i in range(20)], 10)]).read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    for video, hint in [(empty, ": the file is empty"), (cut, "an MP4 whose recording stopped before its index")]:
        config = base_config(video, clips[1], weights, sinks={"folder": {"path": str(tmp_path / "out")}})
        assert run_cli(tmp_path, config)[0] == 2
        message = last_error_line(capsys)
        assert message.startswith(f"streamfuse run: error: {video}: cannot open the ir video") and hint in message


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_video_ends_its_stream_with_an_error_and_keeps_what_was_fused(tmp_path, weights, capsys, damage):
    ir_frames = [ir_scene(i / 25) for i in range(50)]
    vis_frames = [vis_scene(i / 25) for i in range(50)]
    ir_path = write_video(tmp_path / "ir.mkv", [(ir_frames, 25)], codec="ffv1", pix_fmt="gray")
    vis_path = write_video(tmp_path / "vis.mkv", [(vis_frames, 25)], codec="ffv1", pix_fmt="bgr0")
    data = bytearray(ir_path.read_bytes())
    middle = len(data) // 2
    if damage == "corrupt":
        data[middle:middle + 300] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    else:
        del data[middle:]
    ir_path.write_bytes(bytes(data))
    config = base_config(ir_path, vis_path, weights, sync={"offset": 0.0},
                         sinks={"folder": {"path": str(tmp_path / "out")}})
    code, stats = run_cli(tmp_path, config)
    message = last_error_line(capsys)
    assert code == 2
    assert message.startswith(f"streamfuse run: error: {ir_path}: the ir video ")
    assert ("corrupt after" if damage == "corrupt" else "truncated") in message
    written = len(list((tmp_path / "out").glob("*.png")))
    assert 5 < written < 50 and written == stats["frames_written"]


def test_ir_and_visible_of_different_sizes_need_a_calibration(tmp_path, clips, weights, capsys):
    small = write_video(tmp_path / "small.mp4", [([vis_scene(i / 25, 32, 40) for i in range(10)], 25)])
    config = base_config(clips[0], small, weights, sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    message = last_error_line(capsys)
    assert "IR frames are 64x48 but visible frames are 40x32" in message and "calibration" in message


SUBSCRIBER = """
import json, sys
import numpy as np
import streamfuse
received = []
for header, frame in streamfuse.subscribe(sys.argv[1], timeout=60):
    received.append({"header": header, "shape": list(frame.shape), "sum": int(frame.astype(np.int64).sum())})
print(json.dumps(received))
"""


def test_zmq_subscriber_and_recorder_in_other_processes_get_every_frame(tmp_path, clips, decoded, weights):
    (ir_times, _), (vis_times, _) = decoded
    expected = reference_pairs(ir_times, vis_times, OFFSET, TOLERANCE)
    url = free_tcp_url()
    subscriber = python_process(["-c", SUBSCRIBER, url])
    recorder = python_process(["-m", "streamfuse.cli", "record", url, "-o", str(tmp_path / "recorded.mp4"), "--timeout", "60"])
    try:
        config = base_config(*clips, weights, sinks={
            "folder": {"path": str(tmp_path / "fused")},
            # hwm: the subscribers run beside the pipeline on busy CPUs; keep every frame for them.
            "zmq": {"url": url, "hwm": 1000, "wait_subscribers": 2, "wait_timeout_s": 60},
        })
        code, _ = run_cli(tmp_path, config)
        out, err = subscriber.communicate(timeout=60)
        recorder.communicate(timeout=60)
    finally:
        subscriber.kill()
        recorder.kill()
    assert code == 0 and subscriber.returncode == 0, err
    received = json.loads(out)
    fused = read_pngs(tmp_path / "fused")
    assert len(received) == len(expected) == len(fused)
    for seq, (message, (i, j), png) in enumerate(zip(received, expected, fused)):
        header = message["header"]
        assert header["seq"] == seq
        assert header["ir_time"] == pytest.approx(ir_times[i]) and header["vis_time"] == pytest.approx(vis_times[j])
        assert header["time"] == header["vis_time"] and header["fps"] == VIS_FPS
        assert (header["shape"], header["dtype"], header["encoding"]) == ([48, 64, 3], "uint8", "raw")
        assert message["shape"] == [48, 64, 3] and message["sum"] == int(png.astype(np.int64).sum())
    assert recorder.returncode == 0
    recorded_times, recorded = decode_video(tmp_path / "recorded.mp4", fmt="bgr24")
    assert len(recorded) == len(expected)
    assert recorded_times == pytest.approx([vis_times[j] - vis_times[expected[0][1]] for _, j in expected])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_a_playable_mp4_with_every_fused_frame(tmp_path, weights, signum):
    ir_path, vis_path = make_clips(tmp_path / "long", seconds=6.0)
    config = base_config(ir_path, vis_path, weights, sinks={
        "folder": {"path": str(tmp_path / "fused")}, "video": {"path": str(tmp_path / "fused.mp4")}})
    config["ir"]["realtime"] = config["vis"]["realtime"] = True   # play at 25/30 fps, as if live
    config_path = write_config(tmp_path / "run.yaml", config)
    stats_path = tmp_path / "stats.json"
    process = python_process(["-m", "streamfuse.cli", "run", str(config_path), "--stats", str(stats_path)])
    try:
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "fused").glob("*.png"))) < 10 and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.05)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    stats = json.loads(stats_path.read_text())
    written = stats["frames_written"]
    assert stats["interrupted"] is True and stats["errors"] == []
    assert 10 <= written < 6 * VIS_FPS - 10
    pngs = read_pngs(tmp_path / "fused")
    times, frames = decode_video(tmp_path / "fused.mp4", fmt="bgr24")
    assert len(frames) == len(pngs) == written
    # H.264 4:2:0 loses detail on a 64x48 colour checkerboard, but each decoded frame is still
    # nearest to its own lossless PNG: same frames, same order.
    errors = np.array([[np.abs(f.astype(int) - p).mean() for p in pngs] for f in frames])
    assert list(errors.argmin(axis=1)) == list(range(written)) and errors.diagonal().max() < 10
    assert np.allclose(np.diff(times), 1 / VIS_FPS)                                     # visible frame rate


def test_live_source_faster_than_inference_drops_oldest_with_bounded_queues_and_latency(tmp_path, clips, weights, caplog):
    # OpenCV reads a file as fast as it decodes (and reopens it at the end, as it would a
    # camera that dropped out): a live source far faster than inference. The ZeroMQ sink has
    # no subscriber: it must neither block nor hold frames.
    config = base_config(*clips, weights, sync={}, queues={"capture": 2, "pairs": 2, "fused": 2},
                         limits={"frames": 40}, stats_interval_s=0.2,
                         sinks={"folder": {"path": str(tmp_path / "fused")}, "zmq": {"url": free_tcp_url()}})
    for side in ("ir", "vis"):
        config[side] = {"kind": "camera", "uri": config[side]["path"], "reconnect_delay_s": 0.01}
    code, stats = run_cli(tmp_path, config)
    assert code == 0 and stats["live"] is True
    assert stats["frames_written"] >= 40
    queues = stats["queues"]
    assert all(q["policy"] == "drop-oldest" and q["max_depth"] <= q["capacity"] for q in queues.values())
    captured = stats["stages"]["capture_ir"]["items"] + stats["stages"]["capture_vis"]["items"]
    dropped = sum(q["dropped"] for q in queues.values())
    assert dropped > 0 and captured > 2 * stats["frames_written"]
    assert stats["sources"]["ir"]["reconnects"] >= 1
    # Stated bound: a frame waits at most for the queues ahead of it to empty, one batch each,
    # plus the batch it is in; 250 ms covers thread scheduling on busy shared CPUs.
    slots = sum(q["capacity"] for q in queues.values()) + 2
    bound_ms = slots * stats["batch_ms"]["p99"] + 250
    assert stats["latency_ms"]["p99"] < bound_ms
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fps: capture_ir")]
    assert reports and "latency ms: p50" in reports[-1] and "queues: ir " in reports[-1]


def test_live_source_that_is_missing_at_start_is_reopened_while_the_other_runs(tmp_path, clips, weights):
    late_ir = tmp_path / "late_ir.mp4"
    config = base_config(*clips, weights, sync={}, limits={"frames": 10},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    config["ir"] = {"kind": "camera", "uri": str(late_ir), "reconnect_delay_s": 0.05, "reconnect_max_s": 0.2}
    config["vis"] = {"kind": "camera", "uri": str(clips[1]), "reconnect_delay_s": 0.01}
    pipeline_config = load_pipeline_config(write_config(tmp_path / "run.yaml", config))
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(run_pipeline(pipeline_config, progress=False)))
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and not list((tmp_path / "fused").glob("*.png"))
    late_ir.write_bytes(clips[0].read_bytes())     # the IR camera comes back
    thread.join(timeout=60)
    stats = results[0].summary
    assert results[0].errors == [] and stats["frames_written"] >= 10
    assert stats["sources"]["ir"]["reconnects"] >= 2
    assert stats["stages"]["capture_vis"]["items"] > stats["frames_written"]   # kept running meanwhile
    assert stats["drops"]["vis_queue"] > 0


def test_camera_that_never_gives_a_frame_ends_the_run_with_one_line_on_time(tmp_path, clips, weights, capsys):
    # A wrong device index or URL: OpenCV cannot open it. The run must end (the visible
    # "camera" replays its file for ever), with the IR camera's error as its last line, when
    # asked: backoff delays of 0.6, 1.2, 2.4 s would end it at 4.2 s, so the last one is cut.
    camera = tmp_path / "no-such-camera"
    config = base_config(*clips, weights, sync={}, sinks={"folder": {"path": str(tmp_path / "fused")}})
    config["ir"] = {"kind": "camera", "uri": str(camera), "reconnect_delay_s": 0.6,
                    "reconnect_max_s": 5.0, "open_timeout_s": 2.0}
    config["vis"] = {"kind": "camera", "uri": str(clips[1]), "reconnect_delay_s": 0.01}
    code, stats = run_cli(tmp_path, config)
    assert code == 2
    assert last_error_line(capsys) == (
        f"streamfuse run: error: ir camera {camera}: no frame within 2 s of the start (ir.open_timeout_s); "
        "check the device index or URL (ir.uri), or allow longer with ir.open_timeout_s")
    # A behaviour check of the timeout, with room for a slow machine: 2 s asked, 4.2 s uncut.
    assert stats["duration_s"] >= 1.9 and stats["duration_s"] < 3.5
    assert stats["sources"]["ir"]["reconnects"] >= 3 and stats["frames_written"] == 0


def test_camera_lost_longer_than_lost_timeout_ends_the_run_and_keeps_the_frames(tmp_path, clips, weights, capsys):
    import shutil
    import threading

    camera = tmp_path / "ir-camera.mp4"  # OpenCV opens a file path as it opens a stream URL
    shutil.copy(clips[0], camera)
    fused = tmp_path / "fused"
    config = base_config(*clips, weights, sync={}, sinks={"folder": {"path": str(fused)}})
    config["ir"] = {"kind": "camera", "uri": str(camera), "reconnect_delay_s": 0.05, "reconnect_max_s": 0.2,
                    "lost_timeout_s": 1.0}
    config["vis"] = {"kind": "camera", "uri": str(clips[1]), "reconnect_delay_s": 0.01}

    def unplug_after_the_first_frames():
        deadline = time.monotonic() + 60
        while not list(fused.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.02)
        camera.unlink()  # the open capture plays to its end, then every reopen fails

    unplug = threading.Thread(target=unplug_after_the_first_frames)
    unplug.start()
    code, stats = run_cli(tmp_path, config)
    unplug.join()
    message = last_error_line(capsys)
    assert code == 2
    assert message.startswith(f"streamfuse run: error: ir camera {camera}: lost, no frame for 1 s "
                              "(ir.lost_timeout_s) after ")
    assert "ir.lost_timeout_s: null" in message
    written = len(list(fused.glob("*.png")))
    assert written > 0 and written == stats["frames_written"]
    assert stats["sources"]["ir"]["reconnects"] >= 2


def test_folder_run_skips_an_unreadable_image_and_names_it(tmp_path, weights, capsys):
    for side, scene in (("ir", ir_scene), ("vis", vis_scene)):
        (tmp_path / side).mkdir()
        for index in range(5):
            cv2.imwrite(str(tmp_path / side / f"{index:03d}.png"), scene(index / 10))
    broken = tmp_path / "ir" / "002.png"
    broken.write_bytes(b"not a png")
    config = base_config(tmp_path / "ir", tmp_path / "vis", weights, sync={},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    for side in ("ir", "vis"):
        config[side] = {"kind": "folder", "path": str(tmp_path / side), "fps": 10}
    code, stats = run_cli(tmp_path, config)
    assert code == 2
    assert last_error_line(capsys) == f"streamfuse run: error: {broken}: cannot decode the image (corrupt or unsupported format); skipped"
    assert stats["frames_written"] == 4 and len(list((tmp_path / "fused").glob("*.png"))) == 4


def test_one_file_with_two_video_streams(tmp_path, weights, fuser):
    ir_frames = [ir_scene(i / IR_FPS + OFFSET) for i in range(30)]
    vis_frames = [vis_scene(j / VIS_FPS) for j in range(25)]
    both = write_video(tmp_path / "both.mkv", [(ir_frames, IR_FPS), (vis_frames, VIS_FPS)])
    config = base_config(both, both, weights, sinks={"folder": {"path": str(tmp_path / "fused")}})
    config["vis"]["stream"] = 1
    assert run_cli(tmp_path, config)[0] == 0
    ir_times, ir_images = decode_video(both, 0, "gray")
    vis_times, vis_images = decode_video(both, 1, "bgr24")
    expected = reference_pairs(ir_times, vis_times, OFFSET, TOLERANCE)
    outputs = read_pngs(tmp_path / "fused")
    assert len(outputs) == len(expected) > 15
    for output, (i, j) in zip(outputs, expected):
        assert max_difference(output, fuser.fuse(ir_images[i], vis_images[j])) <= 1


def test_image_folders_pair_by_file_name_and_fuse_like_fuse(tmp_path, weights, fuser):
    from streamfuse.images import read_image

    sample = Path(__file__).resolve().parents[1] / "samples" / "pairs"
    sizes = {"flir_001": (64, 48), "flir_002": (64, 48), "tno_005": (40, 40), "tno_007": (64, 48)}
    for side in ("ir", "vis"):
        (tmp_path / side).mkdir()
        for path in sorted((sample / side).iterdir()):   # real pairs, made small for a CPU test
            cv2.imwrite(str(tmp_path / side / f"{path.stem}.png"), cv2.resize(read_image(path), sizes[path.stem]))
    cv2.imwrite(str(tmp_path / "ir" / "only_ir.png"), np.zeros((48, 64), np.uint8))
    config = base_config(tmp_path / "ir", tmp_path / "vis", weights, sync={}, inference={"batch_size": 4},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    for side in ("ir", "vis"):
        config[side] = {"kind": "folder", "path": str(tmp_path / side), "fps": 10}
    assert run_cli(tmp_path, config)[0] == 0
    outputs = read_pngs(tmp_path / "fused")
    assert len(outputs) == 4
    for output, stem in zip(outputs, sorted(sizes)):
        ir = read_image(tmp_path / "ir" / f"{stem}.png", gray=True)
        vis = read_image(tmp_path / "vis" / f"{stem}.png")
        assert max_difference(output, fuser.fuse(ir, vis)) <= 1


def test_calibration_warps_ir_into_the_visible_geometry_and_sets_the_time_offset(tmp_path, weights, fuser):
    from streamfuse.calibration import (
        Calibration, IrRegistrar, save_calibration, visible_outside_ir_view, warp_valid_mask,
    )

    # The IR camera sees the scene at 80x60, shifted; the calibration maps it onto the 64x48
    # visible frame and carries the clock offset (the config sets none). Its view misses the
    # visible frame's top rows and right columns: there the output is the visible frame.
    homography = np.array([[0.8, 0.0, -3.0], [0.0, 0.8, 2.0], [0.0, 0.0, 1.0]])
    calibration = Calibration(ir_size=(80, 60), vis_size=(64, 48), homography=homography,
                              time_offset=OFFSET, method="points")
    save_calibration(calibration, tmp_path / "pair.yaml")
    ir_frames = [ir_scene(i / IR_FPS + OFFSET, 60, 80) for i in range(30)]
    vis_frames = [vis_scene(j / VIS_FPS) for j in range(25)]
    ir_path = write_video(tmp_path / "ir.mp4", [(ir_frames, IR_FPS)])
    vis_path = write_video(tmp_path / "vis.mp4", [(vis_frames, VIS_FPS)])
    config = base_config(ir_path, vis_path, weights, sync={}, calibration=str(tmp_path / "pair.yaml"),
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    code, stats = run_cli(tmp_path, config)
    assert code == 0 and stats["sync"]["offset_s"] == OFFSET
    registrar = IrRegistrar(calibration)
    ir_times, ir_images = decode_video(ir_path)
    vis_times, vis_images = decode_video(vis_path, fmt="bgr24")
    expected = reference_pairs(ir_times, vis_times, OFFSET, TOLERANCE)
    outputs = read_pngs(tmp_path / "fused")
    assert len(outputs) == len(expected) > 15
    outside = ~warp_valid_mask(calibration)
    assert outside.sum() > 100
    for output, (i, j) in zip(outputs, expected):
        fused = fuser.fuse(registrar(ir_images[i]), vis_images[j])
        assert max_difference(output, visible_outside_ir_view(fused, vis_images[j],
                                                              registrar.view_weight)) <= 1
        assert max_difference(output[outside], vis_images[j][outside]) <= 1


def test_invalid_calibration_file_is_a_one_line_error(tmp_path, clips, weights, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nir_size: [64, 48]\nvis_size: [64, 48]\nhomography: [[1, 0], [0, 1]]\n")
    config = base_config(*clips, weights, calibration=str(bad), sinks={"folder": {"path": str(tmp_path / "out")}})
    assert run_cli(tmp_path, config)[0] == 2
    message = last_error_line(capsys)
    assert str(bad) in message and "homography" in message


def test_zmq_sources_fuse_frames_sent_by_another_publisher(tmp_path, weights, fuser):
    import threading

    import zmq

    from streamfuse.pipeline import wire

    ir_frames = [ir_scene(k / 20) for k in range(30)]
    vis_frames = [vis_scene(k / 20) for k in range(30)]
    urls = {"ir": free_tcp_url(), "vis": free_tcp_url()}
    sockets = {side: zmq.Context.instance().socket(zmq.XPUB) for side in urls}
    for side, socket in sockets.items():
        socket.bind(urls[side])

    def publish():
        for socket in sockets.values():      # both pipeline sources have subscribed
            if socket.poll(20000):
                socket.recv()
        for k in range(30):
            sockets["ir"].send_multipart(wire.encode_frame(ir_frames[k], k, time=k / 20))
            sockets["vis"].send_multipart(wire.encode_frame(vis_frames[k], k, time=k / 20, encoding="jpeg", jpeg_quality=100))
            time.sleep(1 / 20)
        time.sleep(0.3)
        for socket in sockets.values():
            socket.send_multipart(wire.end_message(30))

    config = base_config(None, None, weights, sync={}, limits={"seconds": 30},
                         sinks={"folder": {"path": str(tmp_path / "fused")}})
    config["ir"] = {"kind": "zmq", "uri": urls["ir"], "fps": 20}
    config["vis"] = {"kind": "zmq", "uri": urls["vis"], "fps": 20}
    pipeline_config = load_pipeline_config(write_config(tmp_path / "run.yaml", config))
    thread = threading.Thread(target=publish)
    thread.start()
    try:
        result = run_pipeline(pipeline_config, progress=False)
    finally:
        thread.join()
        for socket in sockets.values():
            socket.close(linger=0)
    assert result.errors == [] and not result.interrupted
    outputs = read_pngs(tmp_path / "fused")
    assert len(outputs) >= 20      # live: a few may be dropped on busy CPUs, never reordered
    vis_received = [wire.decode_message(wire.encode_frame(v, 0, 0.0, encoding="jpeg", jpeg_quality=100))[1]
                    for v in vis_frames]
    expected = [fuser.fuse(ir, vis) for ir, vis in zip(ir_frames, vis_received)]
    matched = []
    for output in outputs:
        candidates = [k for k in range(30) if max_difference(output, expected[k]) <= 1]
        assert candidates, "an output is not the fusion of any sent pair"
        matched.append(candidates[0])
    assert matched == sorted(set(matched))


def test_set_overrides_config_keys(tmp_path, clips, weights):
    config = base_config(*clips, weights)     # no sink in the file
    code, stats = run_cli(tmp_path, config, "--set", f"sinks.folder.path={tmp_path / 'fused'}",
                          "--set", "limits.frames=5")
    assert code == 0 and stats["frames_written"] >= 5
    assert 5 <= len(list((tmp_path / "fused").glob("*.png"))) < 47
