"""The ZeroMQ frame format: encode/decode round trips, clear errors, and subscribe() on real sockets."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zmq

from streamfuse.errors import StreamFuseError
from streamfuse.pipeline import wire


def free_tcp_url() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 3)])
def test_raw_round_trip_is_exact_and_header_is_complete(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    parts = wire.encode_frame(image, seq=5, time=1.25, ir_time=1.2, vis_time=1.25, fps=25)
    header, decoded = wire.decode_message(parts)
    assert np.array_equal(decoded, image)
    assert header == {"format": "streamfuse-frame", "version": 1, "seq": 5, "time": 1.25,
                      "ir_time": 1.2, "vis_time": 1.25, "fps": 25.0, "shape": list(shape), "dtype": "uint8",
                      "encoding": "raw"}


def test_jpeg_round_trip_is_close_on_a_real_pair(flir_pair):
    _, vis = flir_pair
    header, decoded = wire.decode_message(wire.encode_frame(vis, 0, 0.0, encoding="jpeg", jpeg_quality=95))
    assert header["encoding"] == "jpeg" and decoded.shape == vis.shape
    assert np.abs(decoded.astype(int) - vis).mean() < 2.0


def test_end_message():
    header, image = wire.decode_message(wire.end_message(12))
    assert image is None and header["end"] is True and header["seq"] == 12


@pytest.mark.parametrize("parts, expected", [
    ([b"not json"], "bad JSON header"),
    ([json.dumps({"format": "other"}).encode(), b""], "wrong 'format'"),
    ([json.dumps({"format": "streamfuse-frame", "version": 9}).encode(), b""], "version 9"),
    ([json.dumps({"format": "streamfuse-frame", "version": 1, "seq": 0, "shape": [2, 2],
                  "dtype": "uint8", "encoding": "raw"}).encode(), b"abc"], "do not fill shape"),
    ([json.dumps({"format": "streamfuse-frame", "version": 1, "seq": 0, "shape": [2, 2],
                  "dtype": "uint8", "encoding": "png"}).encode(), b"abcd"], "unknown encoding"),
])
def test_malformed_messages_are_one_line_errors(parts, expected):
    with pytest.raises(StreamFuseError, match=expected) as info:
        wire.decode_message(parts)
    assert "\n" not in str(info.value)


def test_subscribe_receives_every_frame_then_stops_at_the_end_message():
    url = free_tcp_url()
    socket = zmq.Context.instance().socket(zmq.XPUB)
    socket.bind(url)
    images = [np.full((6, 8), value, np.uint8) for value in range(0, 250, 10)]

    def publish():
        socket.poll(10000)      # XPUB hears the subscription: the subscriber is connected
        socket.recv()
        for seq, image in enumerate(images):
            socket.send_multipart(wire.encode_frame(image, seq, time=seq / 25))
        socket.send_multipart(wire.end_message(len(images)))

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        received = list(wire.subscribe(url, timeout=10))
    finally:
        thread.join()
        socket.close(linger=0)
    assert [h["seq"] for h, _ in received] == list(range(len(images)))
    assert all(np.array_equal(frame, image) for (_, frame), image in zip(received, images))


def test_subscribe_gives_up_after_the_timeout():
    assert list(wire.subscribe(free_tcp_url(), timeout=0.05)) == []
