"""The ZeroMQ frame format shared by the PUB sink, the subscriber source, `streamfuse view`,
`streamfuse record` and :func:`subscribe`.

A frame is a two-part message: a UTF-8 JSON header, then the image bytes::

    {"format": "streamfuse-frame", "version": 1, "seq": 17, "time": 0.68,
     "ir_time": 0.667, "vis_time": 0.68, "fps": 25.0, "shape": [256, 320], "dtype": "uint8",
     "encoding": "raw"}

``time`` is the frame's timestamp in seconds (for fused frames: the visible frame's time);
``ir_time``/``vis_time`` are the two source timestamps (null when not a pair); ``fps`` is the
stream's nominal frame rate (null when unknown). ``shape`` is
``[H, W]`` (gray) or ``[H, W, 3]`` (BGR channel order); ``encoding`` is ``raw`` (C-order bytes of
``shape``/``dtype``) or ``jpeg``. A one-part message with header ``{"format":
"streamfuse-frame", "version": 1, "end": true, "seq": N}`` says the stream is over (N frames sent).
The publisher repeats it until its subscribers disconnect (a subscriber's own queue may drop
it), so a subscriber stops at the first one and closes its socket.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Callable, Iterator

import cv2
import numpy as np
import zmq

from streamfuse.errors import StreamFuseError

FORMAT = "streamfuse-frame"
VERSION = 1
ENCODINGS = ("raw", "jpeg")
DEFAULT_URL = "tcp://127.0.0.1:5555"


def encode_frame(image: np.ndarray, seq: int, time: float, ir_time: float | None = None,
                 vis_time: float | None = None, fps: float | None = None, encoding: str = "raw",
                 jpeg_quality: int = 90) -> list[bytes]:
    """``(H, W)`` or ``(H, W, 3)`` uint8 image -> ``[header, payload]``."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"wire frames are (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if encoding == "raw":
        payload = np.ascontiguousarray(image).tobytes()
    elif encoding == "jpeg":
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise StreamFuseError(f"JPEG encoding failed for a {image.shape} frame")
        payload = buffer.tobytes()
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    header = {
        "format": FORMAT, "version": VERSION, "seq": int(seq), "time": float(time),
        "ir_time": None if ir_time is None else float(ir_time),
        "vis_time": None if vis_time is None else float(vis_time),
        "fps": None if fps is None else float(fps),
        "shape": list(image.shape), "dtype": "uint8", "encoding": encoding,
    }
    return [json.dumps(header).encode(), payload]


def end_message(frames_sent: int) -> list[bytes]:
    """The one-part message that ends a stream of ``frames_sent`` frames."""
    return [json.dumps({"format": FORMAT, "version": VERSION, "end": True, "seq": int(frames_sent)}).encode()]


def decode_message(parts: list[bytes]) -> tuple[dict, np.ndarray | None]:
    """``[header, payload]`` -> ``(header, image)``; the end message gives ``(header, None)``."""
    try:
        header = json.loads(parts[0])
    except (ValueError, IndexError):
        raise StreamFuseError("received a message that is not a StreamFuse frame (bad JSON header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StreamFuseError("received a message that is not a StreamFuse frame (wrong 'format')")
    if header.get("version") != VERSION:
        raise StreamFuseError(f"frame format version {header.get('version')!r} is not {VERSION}: update StreamFuse on both ends")
    if header.get("end"):
        return header, None
    if len(parts) != 2:
        raise StreamFuseError(f"a StreamFuse frame has 2 parts (header, image), got {len(parts)}")
    shape = tuple(header.get("shape") or ())
    if header.get("dtype") != "uint8" or len(shape) not in (2, 3):
        raise StreamFuseError(f"unsupported frame: shape {list(shape)}, dtype {header.get('dtype')!r}")
    encoding = header.get("encoding")
    if encoding == "raw":
        if len(parts[1]) != int(np.prod(shape)):
            raise StreamFuseError(f"frame {header.get('seq')}: {len(parts[1])} bytes do not fill shape {list(shape)}")
        image = np.frombuffer(parts[1], dtype=np.uint8).reshape(shape)
    elif encoding == "jpeg":
        flags = cv2.IMREAD_GRAYSCALE if len(shape) == 2 else cv2.IMREAD_COLOR
        image = cv2.imdecode(np.frombuffer(parts[1], dtype=np.uint8), flags)
        if image is None or image.shape != shape:
            raise StreamFuseError(f"frame {header.get('seq')}: JPEG payload does not decode to shape {list(shape)}")
    else:
        raise StreamFuseError(f"frame {header.get('seq')}: unknown encoding {encoding!r} (use one of {ENCODINGS})")
    return header, image


def connect_subscriber(url: str, hwm: int = 16) -> zmq.Socket:
    """A SUB socket connected to ``url`` and subscribed to everything (the caller closes it)."""
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, hwm)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        socket.connect(url)
    except zmq.ZMQError as error:
        socket.close()
        raise StreamFuseError(f"{url}: cannot connect ({error}); use e.g. tcp://127.0.0.1:5555") from None
    return socket


@contextlib.contextmanager
def subscriber_socket(url: str, hwm: int = 16) -> Iterator[zmq.Socket]:
    """:func:`connect_subscriber` as a context manager: the socket is closed on exit."""
    socket = connect_subscriber(url, hwm)
    try:
        yield socket
    finally:
        socket.close(linger=0)


def receive(socket: zmq.Socket, timeout: float | None) -> list[bytes] | None:
    """One multipart message, or None when ``timeout`` seconds pass without one."""
    if timeout is not None and not socket.poll(int(timeout * 1000)):
        return None
    return socket.recv_multipart()


def subscribe(url: str = DEFAULT_URL, timeout: float | None = None, hwm: int = 16,
              stop: Callable[[], bool] | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """Frames published by a StreamFuse PUB sink: ``for header, frame in subscribe(url): ...``.

    Stops when the publisher ends its stream, when ``timeout`` seconds pass without a frame
    (None waits for ever), or when ``stop()`` turns true (checked every 0.1 s). ``hwm`` bounds
    the frames ZeroMQ holds for a slow reader.
    """
    with subscriber_socket(url, hwm) as socket:
        deadline = None if timeout is None else time.monotonic() + timeout
        while stop is None or not stop():
            parts = receive(socket, timeout=0.1)
            if parts is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            header, image = decode_message(parts)
            if image is None:
                return
            yield header, image
            deadline = None if timeout is None else time.monotonic() + timeout
