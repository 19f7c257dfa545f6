"""Where fused frames go: a ZeroMQ PUB socket, a display window, a video file, an image folder.

A sink has ``write(fused)`` and ``close()``; ``close()`` finalises the output (flushes the video
encoder, sends the end-of-stream message) and is always called, also after Ctrl-C or an error.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np
import zmq

from streamfuse.errors import StreamFuseError
from streamfuse.images import write_png
from streamfuse.outputs import check_writable_file, check_writable_folder
from streamfuse.pipeline import wire
from streamfuse.pipeline.config import (DisplaySinkConfig, FolderSinkConfig, SinksConfig,
                                        VideoSinkConfig, ZmqSinkConfig)
from streamfuse.pipeline.frames import FusedFrame

log = logging.getLogger("streamfuse.pipeline")

# Encoders that take the x264/x265 constant-quality option.
_CRF_CODECS = {"libx264", "libx265", "libx264rgb"}


def to_bgr(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` uint8 -> ``(H, W, 3)`` BGR."""
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def side_by_side(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """IR | visible | fused, each ``(H, W[, 3])`` uint8 of one size -> ``(H, 3W, 3)`` BGR."""
    return np.hstack([to_bgr(ir), to_bgr(vis), to_bgr(fused)])


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """Writes ``"{fps:.1f} fps"`` in the top-left corner of a BGR ``(H, W, 3)`` image (in place)."""
    scale = max(0.4, image.shape[0] / 480)
    origin = (8, int(24 * scale) + 4)
    text = f"{fps:.1f} fps"
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 255), 1, cv2.LINE_AA)
    return image


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """4:2:0 video needs even width and height: replicate the last row/column when odd."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)


def display_available() -> bool:
    """OpenCV's Qt/GTK window needs a display server on Linux; without one it aborts the process."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class RateMeter:
    """Frames per second, smoothed over the last few frames."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing = smoothing
        self.fps = 0.0
        self._last: float | None = None

    def tick(self) -> float:
        now = time.monotonic()
        if self._last is not None and now > self._last:
            instant = 1.0 / (now - self._last)
            self.fps = instant if self.fps == 0 else self.smoothing * self.fps + (1 - self.smoothing) * instant
        self._last = now
        return self.fps


# How long a closing PUB sink waits for subscribers to take the end of the stream.
END_LINGER_MS = 2000
# How often the end message is repeated meanwhile.
END_REPEAT_S = 0.05


class ZmqPubSink:
    """Publishes each fused frame (see :mod:`.wire`) on an XPUB socket bound to ``url``.

    ZeroMQ keeps at most ``hwm`` frames per subscriber and drops the rest, so a slow or absent
    subscriber never makes the pipeline wait or buffer without bound. The XPUB side also hears
    subscriptions and unsubscriptions, so it knows how many subscribers are connected: a run can
    wait for its first ``wait_subscribers`` listeners, and closing waits (at most
    ``END_LINGER_MS``) until every subscriber has taken the end message and left.
    """

    def __init__(self, config: ZmqSinkConfig, fps: float | None = None):
        self.config = config
        self.fps = fps
        self.sent = 0
        self.subscribers = 0
        self._socket = zmq.Context.instance().socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, config.hwm)
        # Pass on every subscription and unsubscription (one per subscriber, also for the same
        # topic), so that counting them counts subscribers.
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)
        try:
            self._socket.bind(config.url)
        except zmq.ZMQError as error:
            self._socket.close(linger=0)
            raise StreamFuseError(
                f"sinks.zmq.url: cannot bind {config.url} ({error}); pick a free port, e.g. tcp://127.0.0.1:5556"
            ) from None
        if config.wait_subscribers:
            self._wait_for_subscribers(config.wait_subscribers, config.wait_timeout_s)

    def _wait_for_subscribers(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.subscribers < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000)):
                log.warning("zmq sink: %d of %d subscribers joined within %.0f s; starting anyway",
                            self.subscribers, count, timeout_s)
                return
            self._count_subscriptions()

    def _count_subscriptions(self) -> None:
        """Reads the (un)subscription messages waiting on the socket into ``subscribers``."""
        while self._socket.poll(0):
            kind = self._socket.recv()[:1]
            if kind == b"\x01":
                self.subscribers += 1
            elif kind == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

    def write(self, fused: FusedFrame) -> None:
        self._count_subscriptions()
        pair = fused.pair
        parts = wire.encode_frame(fused.fused, seq=pair.seq, time=pair.vis.timestamp,
                                  ir_time=pair.ir.timestamp, vis_time=pair.vis.timestamp, fps=self.fps,
                                  encoding=self.config.encoding, jpeg_quality=self.config.jpeg_quality)
        self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
        self.sent += 1

    def close(self) -> None:
        try:
            self._send_end_message()
        finally:
            self._socket.close(linger=0)

    def _send_end_message(self) -> None:
        """Frames may be dropped, the end message must not: a subscriber would wait for it.

        ZeroMQ drops on both sides of a full queue: here at ``hwm``, and in a subscriber that
        is not reading fast enough at its own receive high-water mark. So the end message is
        repeated every ``END_REPEAT_S`` until every subscriber has left (a StreamFuse subscriber
        disconnects at the first end message it reads) or ``END_LINGER_MS`` passed; the socket
        stays open meanwhile, since closing it would discard what is still queued.
        ``XPUB_NODROP`` makes a send to a full queue fail with EAGAIN instead of dropping.
        """
        message = wire.end_message(self.sent)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        deadline = time.monotonic() + END_LINGER_MS / 1000
        next_send = time.monotonic()
        while True:
            self._count_subscriptions()
            now = time.monotonic()
            if now >= next_send:
                try:
                    self._socket.send_multipart(message, flags=zmq.NOBLOCK)
                    next_send = now + END_REPEAT_S
                except zmq.Again:
                    pass
                if self.subscribers == 0:
                    return
            if now >= deadline:
                break
            time.sleep(0.005)
        log.warning("zmq sink: %d subscriber(s) still connected %d ms after the end of the stream; "
                    "they may miss its end message", self.subscribers, END_LINGER_MS)


class DisplaySink:
    """An OpenCV window showing the fused frame (or IR | visible | fused) with an fps overlay.
    Pressing q or Esc, or closing the window, stops the run."""

    def __init__(self, config: DisplaySinkConfig, request_stop: Callable[[], None]):
        if not display_available():
            raise StreamFuseError(
                "sinks.display: no display (DISPLAY/WAYLAND_DISPLAY unset); remove sinks.display "
                "or publish with sinks.zmq and run `streamfuse view URL` on a desktop"
            )
        self.config = config
        self._request_stop = request_stop
        self._rate = RateMeter()
        cv2.namedWindow(config.window, cv2.WINDOW_NORMAL)

    def write(self, fused: FusedFrame) -> None:
        if self.config.side_by_side:
            image = side_by_side(fused.pair.ir.image, fused.pair.vis.image, fused.fused)
        else:
            image = to_bgr(fused.fused).copy()
        fps = self._rate.tick()
        if self.config.show_fps:
            draw_fps(image, fps)
        cv2.imshow(self.config.window, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.config.window, cv2.WND_PROP_VISIBLE) < 1:
            self._request_stop()

    def close(self) -> None:
        cv2.destroyWindow(self.config.window)
        cv2.waitKey(1)


def check_video_output(path: Path, codec: str, pix_fmt: str = "yuv420p", setting: str = "sinks.video."
                       ) -> str:
    """Raise a one-line StreamFuseError unless FFmpeg can write ``codec`` video in ``pix_fmt`` to
    the container ``path``'s name asks for; return the encoder's name. The container is tried on
    a scratch file, so a wrong name fails before any frame is processed (FFmpeg's own rules
    decide: .webm takes VP8/VP9/AV1, not H.264). ``setting`` prefixes option names."""
    check_writable_file(path, setting + "path" if setting.endswith(".") else "-o")
    try:
        encoder = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise StreamFuseError(f"{setting}codec: FFmpeg has no encoder {codec!r}; use h264, hevc, mpeg4 or ffv1") from None
    if pix_fmt not in {f.name for f in encoder.video_formats or []}:
        raise StreamFuseError(f"{setting}pix_fmt: encoder {encoder.name} does not take {pix_fmt!r}")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            container = av.open(str(Path(scratch) / f"probe{path.suffix}"), "w")
        except ValueError:
            raise StreamFuseError(f"{path}: FFmpeg knows no container for a name ending in "
                                  f"{path.suffix or '(nothing)'!r}; name the video e.g. fused.mp4 or fused.mkv") from None
        try:
            container.add_stream(encoder.name, rate=25)
        except ValueError:
            raise StreamFuseError(f"{path}: FFmpeg's {container.format.name} container cannot hold {encoder.name} video; "
                                  f"name it .mp4 or .mkv, or pick another {setting}codec") from None
        finally:
            container.close()
    return encoder.name


class VideoFileWriter:
    """Frames into a video file with PyAV at ``fps``; each frame's time gives its PTS.

    ``setting`` prefixes the option names in error messages (``sinks.video.`` or ``--``).
    The container opens at the first frame (its size decides the stream's). Times are rounded to
    whole frame intervals; a frame that would not advance the clock gets the next slot, so PTS
    always increases.
    """

    def __init__(self, path: str | Path, fps: float, codec: str = "h264", crf: int | None = 20,
                 pix_fmt: str = "yuv420p", setting: str = "sinks.video."):
        self.path = Path(path)
        self.rate = Fraction(fps).limit_denominator(1001)
        self.codec = codec
        self.crf = crf
        self.pix_fmt = pix_fmt
        self.written = 0
        self._encoder_name = check_video_output(self.path, codec, pix_fmt, setting)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = None
        self._stream = None
        self._first_time: float | None = None
        self._last_pts = -1

    def _open(self, image: np.ndarray) -> None:
        try:
            self._container = av.open(str(self.path), "w")
        except (av.FFmpegError, OSError, ValueError) as error:
            raise StreamFuseError(f"{self.path}: cannot write the video ({' '.join(str(error).split())})") from None
        self._stream = self._container.add_stream(self.codec, rate=self.rate)
        self._stream.height, self._stream.width = image.shape[:2]
        self._stream.pix_fmt = self.pix_fmt
        self._stream.time_base = 1 / self.rate
        if self.crf is not None and self._encoder_name in _CRF_CODECS:
            self._stream.options = {"crf": str(self.crf)}

    def write(self, image: np.ndarray, time_s: float) -> None:
        """Append ``(H, W)`` gray or ``(H, W, 3)`` BGR uint8 shown at ``time_s`` seconds."""
        if self.pix_fmt in ("yuv420p", "nv12"):
            image = pad_to_even(image)
        if self._container is None:
            self._open(image)
            self._first_time = time_s
        pts = max(round((time_s - self._first_time) * self.rate), self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray" if image.ndim == 2 else "bgr24")
        frame.pts = pts
        frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts
        self.written += 1

    def close(self) -> None:
        """Flush the encoder and write the container's index (the file plays after this)."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None


class VideoSink:
    """Fused frames into a video file at the visible source's frame rate, timed by its clock."""

    def __init__(self, config: VideoSinkConfig, vis_fps: float):
        self._writer = VideoFileWriter(config.path, config.fps or vis_fps, config.codec, config.crf, config.pix_fmt)

    def write(self, fused: FusedFrame) -> None:
        self._writer.write(fused.fused, fused.pair.vis.timestamp)

    def close(self) -> None:
        self._writer.close()


class FolderSink:
    """One lossless PNG per fused frame, named by its pair number: ``000000.png``, ..."""

    def __init__(self, config: FolderSinkConfig):
        self.folder = check_writable_folder(config.path, "sinks.folder.path")

    def write(self, fused: FusedFrame) -> None:
        write_png(self.folder / f"{fused.seq:06d}.png", fused.fused)

    def close(self) -> None:
        pass


def open_sinks(config: SinksConfig, vis_fps: float, request_stop: Callable[[], None]) -> list:
    """Every configured sink, opened (on failure the ones already open are closed again)."""
    sinks: list = []
    try:
        if config.video is not None:
            sinks.append(VideoSink(config.video, vis_fps))
        if config.folder is not None:
            sinks.append(FolderSink(config.folder))
        if config.display is not None:
            sinks.append(DisplaySink(config.display, request_stop))
        if config.zmq is not None:
            sinks.append(ZmqPubSink(config.zmq, vis_fps))
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def close_sinks(sinks: list) -> list[str]:
    """Close every sink even if some fail; returns the failures as one-line messages."""
    errors = []
    for sink in sinks:
        try:
            sink.close()
        except Exception as error:  # one broken sink must not keep the others from finishing
            errors.append(f"{type(sink).__name__}: {' '.join(str(error).split())}")
    return errors
