"""The records that travel through the pipeline: a captured frame, a synchronised pair, a result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Frame:
    """One image from one camera.

    ``image`` is ``(H, W)`` gray or ``(H, W, 3)`` BGR uint8. ``timestamp`` is in seconds on the
    source's own clock (container PTS for files, ``time.monotonic()`` for live sources) and is what
    synchronisation compares; ``captured_at`` is ``time.monotonic()`` when the frame entered the
    pipeline, where latency is measured from.
    """

    image: np.ndarray
    timestamp: float
    captured_at: float
    index: int


@dataclass(slots=True)
class FramePair:
    """An IR frame and the visible frame taken at the same time; ``seq`` counts pairs from 0.

    After registration ``ir.image`` is in the visible frame's geometry.
    """

    ir: Frame
    vis: Frame
    seq: int

    @property
    def captured_at(self) -> float:
        """When the older of the two frames was captured (latency is measured from it)."""
        return min(self.ir.captured_at, self.vis.captured_at)


@dataclass(slots=True)
class FusedFrame:
    """The fused image of a pair: ``(H, W)`` gray or ``(H, W, 3)`` BGR uint8."""

    pair: FramePair
    fused: np.ndarray

    @property
    def seq(self) -> int:
        return self.pair.seq
