"""Gain control: high-bit-depth frames (raw thermal counts) to the 8 bits the network takes.

A radiometric thermal camera writes 14- or 16-bit counts in a narrow band of their range (a room
at 20-30 C might read 7400-8200 of 0-65535). Scaling the whole range to 8 bits, as image
libraries do, leaves such a frame nearly flat (levels 28-32), so by default the window that maps
to 0-255 follows the frame's own content, as the camera's own automatic gain control (AGC) does:

- ``auto``: each frame's 0.5th to 99.5th percentile of counts is stretched to 0-255. In a stream,
  the window's ends follow those percentiles with a time constant of ``SMOOTHING_S``, so the
  picture does not pump when a hot object enters. A window narrower than ``MIN_SPAN`` counts is
  widened about its centre: the most gain, so the noise of a featureless frame (lens cap,
  shutter) is not stretched to full contrast.
- ``full``: the whole range of the format, linearly (16-bit files made from 8-bit images).
- ``window``: fixed counts ``low``..``high``, the same for every frame (a known temperature span,
  comparable across a recording).

8-bit frames are never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np

from streamfuse.errors import StreamFuseError

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
MIN_SPAN = 32  # counts
SMOOTHING_S = 0.5
FULL_SCALE_16 = 65535
GAIN_HELP = "auto, full, or a fixed window of counts LOW:HIGH (e.g. 7000:8200; in YAML [7000, 8200])"


@dataclass(frozen=True)
class Gain:
    """How frames deeper than 8 bits become 8-bit; see the module docstring for the modes."""

    mode: str = "auto"
    low: int | None = None
    high: int | None = None

    @classmethod
    def parse(cls, value: object, where: str) -> Gain:
        """``"auto"``, ``"full"``, ``"LOW:HIGH"`` or ``[LOW, HIGH]`` -> Gain; otherwise a one-line
        error naming ``where`` (the option or config key)."""
        if isinstance(value, Gain):
            return value
        if value in ("auto", "full"):
            return cls(str(value))
        bounds = value.split(":") if isinstance(value, str) else value
        try:
            low, high = (int(str(bound).strip()) for bound in bounds)
        except (TypeError, ValueError):
            # YAML 1.1 reads small LOW:HIGH pairs such as 10:30 as base-60 numbers (630).
            number = (" (YAML reads LOW:HIGH with HIGH under 60 as one base-60 number: write "
                      "[LOW, HIGH])" if str(value).strip().isdigit() else "")
            raise StreamFuseError(f"{where}: {value!r} is not a gain; give {GAIN_HELP}{number}") from None
        if not 0 <= low < high <= FULL_SCALE_16:
            raise StreamFuseError(f"{where}: window {low}:{high} must have 0 <= LOW < HIGH <= "
                                  f"{FULL_SCALE_16}")
        return cls("window", low, high)

    def __str__(self) -> str:
        return f"{self.low}:{self.high}" if self.mode == "window" else self.mode


def percentile_window(frame: np.ndarray) -> tuple[float, float]:
    """The ``LOW_PERCENTILE`` and ``HIGH_PERCENTILE`` counts of an unsigned integer frame: the
    smallest count at or below which that share of the pixels lie (NumPy's ``inverted_cdf``),
    from one histogram of the counts rather than a sort."""
    histogram = np.bincount(frame.ravel())
    cumulative = np.cumsum(histogram)
    total = cumulative[-1]
    low, high = (int(np.searchsorted(cumulative, total * percent / 100.0, side="left"))
                 for percent in (LOW_PERCENTILE, HIGH_PERCENTILE))
    return float(low), float(high)


def widen(low: float, high: float, full_scale: int) -> tuple[float, float]:
    """``low``..``high`` widened about its centre to at least ``MIN_SPAN`` counts, kept inside
    ``0..full_scale``."""
    if high - low >= MIN_SPAN:
        return low, high
    centre = min(max((low + high) / 2.0, MIN_SPAN / 2.0), full_scale - MIN_SPAN / 2.0)
    return centre - MIN_SPAN / 2.0, centre + MIN_SPAN / 2.0


def window_table(low: float, high: float) -> np.ndarray:
    """(65536,) uint8: ``round((count - low) * 255 / (high - low))`` clipped to 0..255, for every
    16-bit count."""
    counts = np.arange(FULL_SCALE_16 + 1, dtype=np.float64)
    return np.clip(np.round((counts - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def apply_window(frame: np.ndarray, low: float, high: float) -> np.ndarray:
    """Counts ``(H, W)`` or ``(H, W, C)`` uint16 -> uint8 by :func:`window_table` (one lookup
    per pixel)."""
    return window_table(low, high)[frame]


class GainControl:
    """The gain of one stream of frames: ``control(frame, timestamp)`` -> 8-bit frame.

    ``full_scale`` is the largest count of the format (65535 for 16-bit files, 4095 for a
    12-bit video). Without timestamps (single images) every frame gets its own window.
    """

    def __init__(self, gain: Gain = Gain(), full_scale: int = FULL_SCALE_16):
        self.gain = gain
        self.full_scale = full_scale
        self.window: tuple[float, float] | None = None
        self._last_time: float | None = None
        # full and window map every frame alike: one table for the stream, not one per frame.
        self._fixed_table: np.ndarray | None = None
        if gain.mode == "full":
            self._fixed_table = window_table(0.0, float(full_scale))
        elif gain.mode == "window":
            self._fixed_table = window_table(float(gain.low), float(gain.high))

    def __call__(self, frame: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        if frame.dtype == np.uint8:
            return frame
        if frame.dtype != np.uint16:
            raise StreamFuseError(f"frames must be 8 or 16-bit, got {frame.dtype}")
        if self._fixed_table is not None:
            return self._fixed_table[frame]
        target = percentile_window(frame)
        self.window = self._follow(target, timestamp)
        return apply_window(frame, *widen(*self.window, self.full_scale))

    def _follow(self, target: tuple[float, float], timestamp: float | None) -> tuple[float, float]:
        """The window's ends moved towards ``target`` by ``1 - exp(-dt / SMOOTHING_S)``; the
        first frame, a frame without time and a jump back in time (a replay) take it whole."""
        previous, last_time = self.window, self._last_time
        self._last_time = timestamp
        if previous is None or timestamp is None or last_time is None or timestamp <= last_time:
            return target
        share = 1.0 - math.exp(-(timestamp - last_time) / SMOOTHING_S)
        return tuple(old + share * (new - old) for old, new in zip(previous, target))


def counts_format(pix_fmt: str) -> tuple[str | None, int]:
    """For a video pixel format (FFmpeg's name), the little-endian format that PyAV reads its
    counts in and the largest count, when it is gray deeper than 8 bits (``gray12be`` ->
    ``("gray12le", 4095)``); ``(None, 65535)`` for any other format."""
    try:
        video_format = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return None, FULL_SCALE_16
    bits = video_format.components[0].bits if len(video_format.components) == 1 else 8
    if not pix_fmt.startswith("gray") or pix_fmt.startswith("grayf") or not 8 < bits <= 16:
        return None, FULL_SCALE_16
    return f"gray{bits}le" if bits < 16 else "gray16le", (1 << bits) - 1


def to_8bit(frame: np.ndarray, gain: Gain = Gain(), full_scale: int = FULL_SCALE_16) -> np.ndarray:
    """One frame (no history) to uint8: 8-bit frames as they are, 16-bit ones by ``gain``."""
    return GainControl(gain, full_scale)(frame)
