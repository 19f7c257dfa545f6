"""Time offset between two recordings of a camera pair, from their per-frame motion energy.

Both cameras see the same things move, whatever they look like, so the mean absolute frame
difference rises and falls together in both streams. The offset is the lag that maximises the
normalised cross-correlation of the two energy curves, sampled at the real frame timestamps
(different frame rates are fine), refined below one frame by a parabola through the peak.
Thermal cameras freeze their picture during flat-field correction: frozen frames (no change)
and the jump right after them are left out of the correlation instead of read as stillness.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.errors import StreamFuseError


@dataclass
class SyncResult:
    """offset_s: IR time + offset = visible time; correlation: peak NCC (0..1);
    frozen_ir/frozen_vis: frames left out as frozen."""

    offset_s: float
    correlation: float
    frozen_ir: int
    frozen_vis: int


def motion_energy(times: np.ndarray, frames: list[np.ndarray], width: int = 96
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-frame motion energy of a stream: (N,) times and N (H, W) uint8 frames ->
    ((N-1,) times, (N-1,) energy, (N-1,) bool valid, number of frozen frames)."""
    small = []
    for frame in frames:
        height = max(8, round(frame.shape[0] * width / frame.shape[1]))
        small.append(cv2.GaussianBlur(cv2.resize(frame, (width, height),
                                                 interpolation=cv2.INTER_AREA).astype(np.float32),
                                      (0, 0), 1.0))
    energy = np.array([np.mean(np.abs(b - a)) for a, b in zip(small, small[1:])])
    # A frozen frame repeats its predecessor exactly (up to codec noise).
    frozen = energy < max(0.02 * float(np.median(energy)), 0.05)
    valid = ~frozen
    valid[1:] &= ~frozen[:-1]  # the first change after a freeze sums several frame intervals
    return np.asarray(times[1:], dtype=np.float64), energy, valid, int(frozen.sum())


# The best offset must correlate this much better than the worst one tried: a flatter curve
# means the motion (e.g. one steady acceleration over a short clip) fits every offset alike,
# and its peak is chance (a recording cut short by damage gave +0.19 s for a true -0.01 s).
MIN_PEAK_CONTRAST = 0.1


def estimate_offset(ir_times: np.ndarray, ir_frames: list[np.ndarray], vis_times: np.ndarray,
                    vis_frames: list[np.ndarray], max_offset_s: float | None = None,
                    min_correlation: float = 0.3, ir_name: str = "the IR recording",
                    vis_name: str = "the visible recording") -> SyncResult:
    """Offset (IR time + offset = visible time) of two recordings of the same scene.

    ``max_offset_s`` bounds the search (default: half the shorter recording); ``ir_name`` and
    ``vis_name`` name the recordings in errors (e.g. ``--ir ir.mp4``).
    """
    if len(ir_frames) < 10 or len(vis_frames) < 10:
        raise StreamFuseError("--sync needs at least 10 frames in each recording")
    t_ir, e_ir, ok_ir, frozen_ir = motion_energy(np.asarray(ir_times), ir_frames)
    t_vis, e_vis, ok_vis, frozen_vis = motion_energy(np.asarray(vis_times), vis_frames)
    for name, energy, ok in ((ir_name, e_ir, ok_ir), (vis_name, e_vis, ok_vis)):
        # Blank or frozen clips leave no usable sample at all (every frame repeats the last one).
        if ok.sum() < 8 or energy[ok].std() == 0:
            raise StreamFuseError(f"--sync: {name} has no motion (blank or still frames): "
                                  "nothing to sync on; record a scene where something moves; "
                                  "no file written")
    if max_offset_s is None:
        max_offset_s = 0.5 * min(t_ir[-1] - t_ir[0], t_vis[-1] - t_vis[0])
    step = 0.1 * min(np.median(np.diff(t_ir)), np.median(np.diff(t_vis)))
    lags = np.arange(-max_offset_s, max_offset_s + step / 2, step)
    scores = np.array([_correlation_at(lag, t_ir, e_ir, ok_ir, t_vis, e_vis, ok_vis)
                       for lag in lags])
    if np.isnan(scores).all():
        raise StreamFuseError("--sync: the recordings overlap too little (or move too rarely) "
                              "at every offset tried: record a longer stretch seen by both "
                              "cameras, or widen --max-offset; no file written")
    best = int(np.nanargmax(scores))
    peak = float(scores[best])
    if not np.isfinite(peak) or peak < min_correlation:
        raise StreamFuseError(f"--sync is unreliable: the motion of the two recordings "
                              f"correlates only {peak:.2f} at best (< {min_correlation}): use "
                              f"recordings with clear motion seen by both cameras; no file "
                              f"written")
    lowest = float(np.nanmin(scores))
    if peak - lowest < MIN_PEAK_CONTRAST:
        raise StreamFuseError(f"--sync is ambiguous: {ir_name} and {vis_name} correlate about "
                              f"equally ({lowest:.3f} to {peak:.3f}) at every offset from "
                              f"{lags[0]:+.2f} to {lags[-1]:+.2f} s: use longer recordings whose "
                              "motion starts and stops, or a wider --max-offset; no file written")
    offset = float(lags[best])
    if 0 < best < len(lags) - 1 and np.all(np.isfinite(scores[best - 1:best + 2])):
        left, right = scores[best - 1], scores[best + 1]
        curvature = left - 2 * peak + right
        if curvature < 0:
            offset += step * 0.5 * (left - right) / curvature
    return SyncResult(offset, peak, frozen_ir, frozen_vis)


def _correlation_at(lag: float, t_ir: np.ndarray, e_ir: np.ndarray, ok_ir: np.ndarray,
                    t_vis: np.ndarray, e_vis: np.ndarray, ok_vis: np.ndarray) -> float:
    """NCC of the IR energy with the visible energy read at IR time + lag (linear
    interpolation), over IR samples whose visible neighbours are both valid."""
    at = t_ir + lag
    inside = (at >= t_vis[0]) & (at <= t_vis[-1]) & ok_ir
    if inside.sum() < 8:
        return np.nan
    right = np.clip(np.searchsorted(t_vis, at[inside]), 1, len(t_vis) - 1)
    usable = ok_vis[right] & ok_vis[right - 1]
    if usable.sum() < 8:
        return np.nan
    a = e_ir[inside][usable]
    b = np.interp(at[inside][usable], t_vis, e_vis)
    if a.std() == 0 or b.std() == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])
