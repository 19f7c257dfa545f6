"""Timestamp pairing: every frame of the slower stream meets its nearest frame of the faster one.

The reference is the plain definition, computed over whole streams at once: for each frame of
the slower stream, the nearest frame of the other stream (IR shifted by the offset), kept when
within the tolerance. The streaming :class:`Synchroniser` sees one frame at a time in an order
driven by :meth:`needs`, as the runner feeds it.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import reference_pairs
from streamfuse.pipeline.frames import Frame
from streamfuse.pipeline.sync import IR, VIS, Synchroniser, default_tolerance


def frames(times) -> list[Frame]:
    return [Frame(image=np.zeros((1, 1), np.uint8), timestamp=float(t), captured_at=0.0, index=i)
            for i, t in enumerate(times)]


def run_streaming(ir_times, vis_times, offset, tolerance):
    """Feed the synchroniser exactly as the runner does: the side it asks for, one at a time."""
    sync = Synchroniser(offset, tolerance)
    streams = {IR: iter(frames(ir_times)), VIS: iter(frames(vis_times))}
    sync.received = {IR: 0, VIS: 0}
    pairs = []
    while True:
        pairs += sync.pop_pairs()
        if sync.finished:
            break
        side = sync.needs()
        assert side is not None, "the synchroniser neither finished nor asked for a frame"
        frame = next(streams[side], None)
        if frame is None:
            sync.end(side)
        else:
            sync.push(side, frame)
            sync.received[side] += 1
    return [(p.ir.index, p.vis.index) for p in pairs], sync


@pytest.mark.parametrize("ir_fps, vis_fps, offset", [
    (30, 25, 0.0), (30, 25, 0.113), (25, 30, -0.271), (30, 30, 0.004), (9, 30, 0.05), (60, 24, 1.0),
])
def test_regular_streams_match_the_nearest_partner_reference(ir_fps, vis_fps, offset):
    rng = np.random.default_rng(ir_fps * 100 + vis_fps)
    ir_times = np.arange(90) / ir_fps + rng.uniform(-0.002, 0.002, 90)  # capture jitter
    vis_times = 0.2 + np.arange(80) / vis_fps + rng.uniform(-0.002, 0.002, 80)
    tolerance = default_tolerance(ir_fps, vis_fps)
    pairs, sync = run_streaming(ir_times, vis_times, offset, tolerance)
    expected = reference_pairs(ir_times, vis_times, offset, tolerance)
    assert len(expected) > 20
    assert pairs == expected
    assert sync.pairs_made == len(pairs)
    # Every frame it was given is either paired or counted (frames after the other stream
    # ended are never read).
    assert sync.unpaired[IR] == sync.received[IR] - len(pairs) > 0
    assert sync.unpaired[VIS] == sync.received[VIS] - len(pairs)


def test_random_streams_give_ordered_one_to_one_pairs_within_tolerance():
    rng = np.random.default_rng(7)
    for _ in range(50):
        ir_times = np.sort(rng.uniform(0, 5, rng.integers(1, 120)))
        vis_times = np.sort(rng.uniform(0, 5, rng.integers(1, 120)))
        offset, tolerance = rng.uniform(-0.5, 0.5), rng.uniform(0.0, 0.1)
        pairs, sync = run_streaming(ir_times, vis_times, offset, tolerance)
        ir_used = [i for i, _ in pairs]
        vis_used = [j for _, j in pairs]
        assert ir_used == sorted(set(ir_used)) and vis_used == sorted(set(vis_used))
        for i, j in pairs:
            assert abs(ir_times[i] + offset - vis_times[j]) <= tolerance + 1e-12
        assert sync.unpaired[IR] + len(pairs) == sync.received[IR]
        assert sync.unpaired[VIS] + len(pairs) == sync.received[VIS]


def test_frames_outside_the_other_stream_are_dropped_and_counted():
    # Visible starts 1 s later and ends 1 s earlier: the 10 IR frames before it have no partner
    # (those after it are never read: the run ends with the visible stream).
    ir_times = np.arange(0, 4, 0.1)
    vis_times = np.arange(1, 3, 0.1) + 0.01
    pairs, sync = run_streaming(ir_times, vis_times, 0.0, 0.05)
    assert pairs == reference_pairs(ir_times, vis_times, 0.0, 0.05)
    assert len(pairs) == len(vis_times)
    assert sync.unpaired[VIS] == 0
    assert sync.unpaired[IR] == sync.received[IR] - len(vis_times) >= 10


def test_waits_for_look_ahead_only_on_the_earlier_side():
    sync = Synchroniser(offset=0.0, tolerance=0.02)
    sync.push(IR, frames([0.000])[0])
    sync.push(VIS, frames([0.015])[0])
    assert sync.pop_pairs() == []          # the next IR frame might be closer to 0.015
    assert sync.needs() == IR
    sync.push(IR, frames([0.000, 0.033])[1])
    pairs = sync.pop_pairs()
    assert [(p.ir.timestamp, p.vis.timestamp) for p in pairs] == [(0.0, 0.015)]


def test_default_tolerance_is_half_the_slower_interval():
    assert default_tolerance(30, 25) == pytest.approx(0.02)
    assert default_tolerance(None, 10) == pytest.approx(0.05)
    assert default_tolerance(None, None) == pytest.approx(1 / 60)
