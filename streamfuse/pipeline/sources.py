"""Where frames come from: video files (PyAV), cameras and stream URLs (OpenCV), image folders
and ZeroMQ publishers. Each source is read by one capture thread through ``read()``.

A source has ``role`` ("ir" or "vis", for messages), ``live`` (frames come whether or not we
keep up), ``fps`` (nominal rate or None) and ``frame_count`` (None when unknown); ``read()``
returns the next :class:`Frame` or None at the end of the stream, and ``close()`` frees it.
File errors raise :class:`StreamFuseError`; live sources reopen themselves with backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np

from streamfuse.errors import StreamFuseError
from streamfuse.gain import Gain, GainControl, counts_format
from streamfuse.images import (false_colour_warning, image_files, is_false_colour, quiet_opencv,
                               read_image_counts)
from streamfuse.pipeline import wire
from streamfuse.pipeline.config import SourceConfig
from streamfuse.pipeline.frames import Frame

log = logging.getLogger("streamfuse.pipeline")

# OpenCV's FFmpeg backend prints FFmpeg's own lines ("[tcp @ 0x...] Connection refused") for every
# failed open, around our one warning per attempt. Read by OpenCV when it first uses FFmpeg;
# set OPENCV_FFMPEG_LOGLEVEL yourself (e.g. 32) to see them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

DEFAULT_LIVE_FPS = 30.0
# FFmpeg's open and read timeouts for a stream URL when no deadline is nearer: long enough for a
# slow RTSP handshake, short enough that a dead connection is noticed and reopened.
FFMPEG_TIMEOUT_S = 10.0


def _is_device(target: int | str) -> bool:
    """A local camera (index, /dev/videoN or a /dev/v4l/by-id/... link) rather than a stream
    URL or a file."""
    return isinstance(target, int) or target.startswith("/dev/")


def wants_gray(color: str, role: str, source_is_gray: bool) -> bool:
    """``color: auto`` reads IR as gray and keeps the visible frame's colour when it has one."""
    if color == "auto":
        return role == "ir" or source_is_gray
    return color == "gray"


class _PaletteCheck:
    """Warns once when an IR source's first frame is in a false-colour palette (it is fused as
    gray, by brightness). ``active``: the source is IR and its frames are turned gray."""

    def __init__(self, active: bool, where: str):
        self.pending = active
        self.where = where

    def __call__(self, bgr_frame: np.ndarray) -> None:
        if self.pending:
            self.pending = False
            if is_false_colour(bgr_frame):
                log.warning(false_colour_warning(self.where))


def _reason(error: Exception) -> str:
    """The useful part of an FFmpeg/OpenCV error, on one line."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())


def unreadable_video_hint(path: Path) -> str:
    """What most likely makes a video file that FFmpeg cannot open unreadable, for its error."""
    if path.is_file() and path.stat().st_size == 0:
        return ": the file is empty"
    if path.suffix.lower() in (".mp4", ".m4v", ".mov"):
        # MP4 writes its index (moov) last: a recording cut off (or still being written) has none.
        return (": not a video, or an MP4 whose recording stopped before its index was written "
                "(wait until it is finished; record to .mkv to keep what comes before a cut)")
    return ""


class _Pacer:
    """Holds a reader back to real time: frame at ``t`` is released ``t - t0`` after the first."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._origin: tuple[float, float] | None = None

    def wait(self, timestamp: float) -> None:
        if not self.enabled:
            return
        if self._origin is None:
            self._origin = (time.monotonic(), timestamp)
        delay = self._origin[0] + (timestamp - self._origin[1]) - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class VideoFileSource:
    """One video stream of a file, decoded with PyAV; timestamps are the container's PTS.

    ``stream_index`` picks among the file's video streams, so one file holding both cameras is
    read by two sources (each demuxes the file and decodes its own stream).
    """

    live = False

    def __init__(self, path: str | Path, role: str, stream_index: int = 0, color: str = "auto",
                 realtime: bool = False, gain: Gain = Gain()):
        self.path = Path(path)
        self.role = role
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as error:
            raise StreamFuseError(f"{self.path}: cannot open the {role} video ({_reason(error)})"
                                  f"{unreadable_video_hint(self.path)}") from None
        try:
            videos = self._container.streams.video
            if stream_index >= len(videos):
                raise StreamFuseError(
                    f"{self.path}: the {role} source asks for video stream {stream_index} but the "
                    f"file has {len(videos)}; set {role}.stream to 0..{len(videos) - 1}"
                )
            self._stream = videos[stream_index]
            self._stream.thread_type = "AUTO"
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.fps = float(rate) if rate else None
            self.frame_count = self._stream.frames or self._frames_from_duration()
            pix_fmt = self._stream.codec_context.pix_fmt or ""
            self.gray = wants_gray(color, role, pix_fmt.startswith("gray"))
            # Deep gray video (raw thermal counts) is read as counts and given gain; FFmpeg's own
            # conversion to 8 bits would keep only the top bits of the format's range.
            self._counts_format, full_scale = counts_format(pix_fmt)
            self._gain = GainControl(gain, full_scale)
            self._palette = _PaletteCheck(role == "ir" and self.gray and not pix_fmt.startswith("gray"),
                                          str(self.path))
            self._frames = self._container.decode(self._stream)
        except BaseException:
            self._container.close()
            raise
        self._pacer = _Pacer(realtime)
        self._index = 0
        self._last_time: float | None = None

    def _frames_from_duration(self) -> int | None:
        if self._container.duration is None or not self.fps:
            return None
        return int(round(self._container.duration / av.time_base * self.fps))

    def read(self) -> Frame | None:
        try:
            video_frame = next(self._frames)
        except StopIteration:
            self._check_complete()
            return None
        except (av.FFmpegError, OSError) as error:
            raise StreamFuseError(
                f"{self.path}: the {self.role} video is corrupt after {self._index} frames "
                f"({_reason(error)}); frames before it were used"
            ) from None
        timestamp = video_frame.time
        if timestamp is None:
            timestamp = self._index / (self.fps or DEFAULT_LIVE_FPS)
        if self._counts_format:
            image = self._gain(video_frame.to_ndarray(format=self._counts_format), float(timestamp))
            if not self.gray:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        else:
            if self._palette.pending:
                self._palette(video_frame.to_ndarray(format="bgr24"))
            image = video_frame.to_ndarray(format="gray" if self.gray else "bgr24")
        self._pacer.wait(timestamp)
        frame = Frame(image=image, timestamp=float(timestamp), captured_at=time.monotonic(), index=self._index)
        self._index += 1
        self._last_time = frame.timestamp
        return frame

    def _check_complete(self) -> None:
        """A stream that stops well before the duration in the file's header was truncated."""
        duration = self._container.duration
        if duration is None or not self.fps:
            return
        start = (self._container.start_time or 0) / av.time_base
        end = start + duration / av.time_base
        reached = self._last_time if self._last_time is not None else start
        if end - reached > 2.5 / self.fps:
            raise StreamFuseError(
                f"{self.path}: the {self.role} video ends at {reached:.2f} s but its header says "
                f"{end:.2f} s: the file is truncated; frames before it were used"
            )

    def close(self) -> None:
        self._container.close()


class FolderSource:
    """Image files played at ``fps``: the i-th file has timestamp ``i / fps``. A file that cannot
    be read is skipped (its partner then finds no pair) and named in ``problems``, which the run
    reports at its end."""

    live = False

    def __init__(self, files: list[Path], role: str, fps: float, color: str = "auto",
                 realtime: bool = False, gain: Gain = Gain()):
        if not files:
            raise StreamFuseError(f"the {role} image folder has no images to play")
        self.files = files
        self.role = role
        self.fps = fps
        self.frame_count = len(files)
        self.color = color
        self._pacer = _Pacer(realtime)
        self._index = 0
        self._gain = GainControl(gain)
        self._palette = _PaletteCheck(role == "ir" and wants_gray(color, role, False), str(files[0].parent))
        self.problems: list[str] = []

    def read(self) -> Frame | None:
        image = None
        while image is None:
            if self._index >= len(self.files):
                return None
            try:
                gray = wants_gray(self.color, self.role, source_is_gray=False)
                if gray and self._palette.pending:
                    self._palette(read_image_counts(self.files[self._index]))
                image = read_image_counts(self.files[self._index], gray=gray)
            except StreamFuseError as error:
                self.problems.append(f"{error}; skipped")
                log.warning("%s; skipped", error)
                self._index += 1
        timestamp = self._index / self.fps
        image = self._gain(image, timestamp)
        if self.color == "bgr" and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        self._pacer.wait(timestamp)
        frame = Frame(image=image, timestamp=timestamp, captured_at=time.monotonic(), index=self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        pass


class _Backoff:
    """Reconnect delays: ``first``, doubling up to ``longest``; reset after a good frame."""

    def __init__(self, first: float, longest: float):
        self.first, self.longest = first, longest
        self.delay = first

    def next(self) -> float:
        """The delay to wait now; the one after it doubles."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.longest)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class CaptureSource:
    """A camera or stream URL through OpenCV ``VideoCapture``; timestamps are ``time.monotonic()``
    when a frame is read. A device that fails to open or stops delivering is reopened with
    backoff until ``stop`` is set, so the run survives cable pulls and RTSP drop-outs; but one
    that has given no frame ``open_timeout_s`` after the start raises (a wrong index or URL is
    more likely than a slow camera), and one lost for ``lost_timeout_s`` (when set) raises too.
    Waits are cut short so those errors come on time. ``reconnects`` counts the failed opens
    and lost streams."""

    live = True
    frame_count = None

    def __init__(self, uri: str, role: str, stop: threading.Event, fps: float | None = None,
                 color: str = "auto", reconnect_delay_s: float = 0.5, reconnect_max_s: float = 10.0,
                 open_timeout_s: float | None = 30.0, lost_timeout_s: float | None = None):
        self.uri = uri
        self.role = role
        self.color = color
        self.reconnects = 0
        self._target: int | str = int(uri) if uri.isdigit() else uri
        self._configured_fps = fps
        self._stop = stop
        self._backoff = _Backoff(reconnect_delay_s, reconnect_max_s)
        self._capture: cv2.VideoCapture | None = None
        self._index = 0
        self._palette = _PaletteCheck(role == "ir", f"{role} camera {uri}")
        self._open_timeout_s = open_timeout_s
        self._lost_timeout_s = lost_timeout_s
        self._started = time.monotonic()
        self._last_frame_at = self._started
        self.fps = fps
        self._open()
        if self.fps is None:
            self.fps = DEFAULT_LIVE_FPS

    def _open(self) -> bool:
        with quiet_opencv():
            capture = self._new_capture()
        if not capture.isOpened():
            capture.release()
            self.reconnects += 1
            return False
        self._capture = capture
        if self._configured_fps is None:
            reported = capture.get(cv2.CAP_PROP_FPS)
            if reported and 0 < reported < 1000:
                self.fps = float(reported)
        return True

    def _new_capture(self) -> cv2.VideoCapture:
        """A device (index or /dev/...) opens through any backend, without parameters: the
        V4L2 and other camera backends refuse to open at all when given timeouts they do not
        know. URLs (and paths) open through FFmpeg with the time left as their open and read
        timeouts, so one blocking attempt cannot carry the wait past the deadline."""
        if _is_device(self._target):
            return cv2.VideoCapture(self._target)
        open_s, read_s = self._ffmpeg_timeouts()
        return cv2.VideoCapture(self._target, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(1000 * open_s),
                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(1000 * read_s)])

    def _ffmpeg_timeouts(self) -> tuple[float, float]:
        """(open, read) timeouts in seconds for FFmpeg: the open gets the time left (at most
        FFMPEG_TIMEOUT_S when no limit applies); a read, the time left before the first frame or
        lost_timeout_s, but at least a second so a stream that stutters is not dropped."""
        left = self._time_left()
        open_s = max(min(left if left is not None else FFMPEG_TIMEOUT_S, FFMPEG_TIMEOUT_S), 0.1)
        read_s = min(open_s, self._lost_timeout_s or FFMPEG_TIMEOUT_S)
        return open_s, max(read_s, 1.0)

    def _time_left(self) -> float | None:
        """Seconds until this camera's silence becomes an error (None: no limit applies)."""
        if self._index == 0:
            limit, since = self._open_timeout_s, self._started
        else:
            limit, since = self._lost_timeout_s, self._last_frame_at
        return None if limit is None else limit - (time.monotonic() - since)

    def _raise_if_overdue(self) -> None:
        left = self._time_left()
        if left is None or left > 0:
            return
        if self._index == 0:
            raise StreamFuseError(
                f"{self.role} camera {self.uri}: no frame within {self._open_timeout_s:g} s of the "
                f"start ({self.role}.open_timeout_s); check the device index or URL "
                f"({self.role}.uri), or allow longer with {self.role}.open_timeout_s")
        raise StreamFuseError(
            f"{self.role} camera {self.uri}: lost, no frame for {self._lost_timeout_s:g} s "
            f"({self.role}.lost_timeout_s) after {self._index} frames; check the camera and its "
            f"cable or network, or set {self.role}.lost_timeout_s: null to reopen it for ever")

    def _wait_to_retry(self, problem: str) -> None:
        """Log ``problem`` and wait the next backoff delay, cut to the time left; raise once no
        time is left."""
        self._raise_if_overdue()
        delay = self._backoff.next()
        left = self._time_left()
        if left is not None and left <= delay:
            # No retry follows this wait: say when the error comes instead of a retry.
            log.warning("%s camera %s: %s; giving up in %.1f s (%s.%s)", self.role, self.uri,
                        problem, max(left, 0.0), self.role, self._deadline_key())
            self._stop.wait(max(left, 0.0))
        else:
            log.warning("%s camera %s: %s; retrying in %.1f s", self.role, self.uri, problem, delay)
            self._stop.wait(delay)
        self._raise_if_overdue()

    def _deadline_key(self) -> str:
        return "open_timeout_s" if self._index == 0 else "lost_timeout_s"

    def read(self) -> Frame | None:
        while not self._stop.is_set():
            if self._capture is None and not self._open():
                self._wait_to_retry("cannot open")
                continue
            ok, image = self._capture.read()
            if not ok:
                self._capture.release()
                self._capture = None
                self.reconnects += 1
                self._wait_to_retry("no frame (disconnected?)")
                continue
            self._backoff.reset()
            if wants_gray(self.color, self.role, source_is_gray=False) and image.ndim == 3:
                self._palette(image)
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            now = time.monotonic()
            frame = Frame(image=image, timestamp=now, captured_at=now, index=self._index)
            self._index += 1
            self._last_frame_at = now
            return frame
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ZmqSource:
    """Frames from another process's PUB socket in the StreamFuse wire format. The timestamp is
    the sender's ``time``; ZeroMQ reconnects by itself when the sender comes and goes. The
    stream ends when the sender sends its end message."""

    live = True
    frame_count = None

    def __init__(self, url: str, role: str, stop: threading.Event, fps: float | None = None,
                 color: str = "auto", hwm: int = 4):
        self.url = url
        self.role = role
        self.color = color
        self.fps = fps or DEFAULT_LIVE_FPS
        self.rejected = 0
        self._stop = stop
        self._socket = wire.connect_subscriber(url, hwm)
        self._index = 0
        self._palette = _PaletteCheck(role == "ir", f"{role} source {url}")

    def read(self) -> Frame | None:
        while not self._stop.is_set():
            parts = wire.receive(self._socket, timeout=0.1)
            if parts is None:
                continue
            try:
                header, image = wire.decode_message(parts)
            except StreamFuseError as error:
                self.rejected += 1
                log.warning("%s source %s: skipped a message: %s", self.role, self.url, error)
                continue
            if image is None:
                return None
            if image.ndim == 3 and wants_gray(self.color, self.role, source_is_gray=False):
                self._palette(image)
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            elif image.ndim == 2 and self.color == "bgr":
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            frame = Frame(image=np.ascontiguousarray(image), timestamp=float(header["time"]),
                          captured_at=time.monotonic(), index=self._index)
            self._index += 1
            return frame
        return None

    def close(self) -> None:
        self._socket.close(linger=0)


def open_source(config: SourceConfig, role: str, stop: threading.Event,
                files: list[Path] | None = None):
    """The source ``config`` describes. ``files``: for ``folder`` sources, the images to play
    (the runner pairs two folders by file stem); default every image of the folder."""
    if config.kind == "file":
        return VideoFileSource(config.path, role, config.stream, config.color, config.realtime,
                               config.parsed_gain())
    if config.kind == "folder":
        if files is None:
            files = list(image_files(config.path).values())
        return FolderSource(files, role, config.fps, config.color, config.realtime,
                            config.parsed_gain())
    if config.kind == "camera":
        return CaptureSource(config.uri, role, stop, config.fps, config.color,
                             config.reconnect_delay_s, config.reconnect_max_s, config.open_timeout_s,
                             config.lost_timeout_s)
    return ZmqSource(config.uri, role, stop, config.fps, config.color)
