"""StreamFuse: real-time fusion of paired infrared and visible streams with DIDFuse."""

__version__ = "0.1.0"


def subscribe(url: str = "tcp://127.0.0.1:5555", timeout: float | None = None, hwm: int = 16):
    """Frames from a running `streamfuse run` with a ZeroMQ sink::

        for header, frame in streamfuse.subscribe("tcp://127.0.0.1:5555"):
            print(header["seq"], header["time"], frame.shape)

    ``frame`` is ``(H, W)`` gray or ``(H, W, 3)`` BGR uint8; ``header`` is described in
    :mod:`streamfuse.pipeline.wire`. Ends when the run ends, or after ``timeout`` seconds without
    a frame (None: wait for ever).
    """
    from streamfuse.pipeline.wire import subscribe as subscribe_frames

    return subscribe_frames(url, timeout, hwm)
