"""Bounded queues between pipeline threads (block or drop the oldest) and inference batches."""

from __future__ import annotations

import threading

import numpy as np

from streamfuse.pipeline.batching import END, StageQueue, collect_batch, fill_batch, split_by_shape
from streamfuse.pipeline.frames import Frame, FramePair


def test_drop_oldest_keeps_the_newest_items_and_counts_drops():
    queue = StageQueue("live", capacity=3, drop_oldest=True)
    for item in range(10):
        assert queue.put(item)
    assert (len(queue), queue.dropped, queue.max_depth) == (3, 7, 3)
    queue.close()
    assert [queue.get(), queue.get(), queue.get(), queue.get()] == [7, 8, 9, END]


def test_blocking_queue_loses_nothing_and_never_exceeds_capacity():
    queue = StageQueue("file", capacity=2)
    produced = list(range(200))

    def produce():
        for item in produced:
            queue.put(item)
        queue.close()

    thread = threading.Thread(target=produce)
    thread.start()
    received = []
    while (item := queue.get(timeout=5)) is not END:
        assert item is not None, "producer stalled"
        received.append(item)
    thread.join()
    assert received == produced
    assert queue.dropped == 0 and queue.max_depth <= 2


def test_abort_releases_a_blocked_producer_and_the_consumer():
    queue = StageQueue("file", capacity=1)
    queue.put("first")
    results = []
    thread = threading.Thread(target=lambda: results.append(queue.put("second")))
    thread.start()
    queue.abort()
    thread.join(timeout=5)
    assert results == [False]
    assert queue.get() is END
    assert queue.put("late") is False


def test_get_times_out_with_none_and_close_ends_after_the_items():
    queue = StageQueue("q", capacity=4)
    assert queue.get(timeout=0.01) is None
    queue.put(1)
    queue.close()
    assert queue.put(2) is False
    assert (queue.get(), queue.get()) == (1, END)


def test_collect_batch_fills_up_to_the_size_and_reports_the_end():
    queue = StageQueue("pairs", capacity=10)
    for item in range(7):
        queue.put(item)
    queue.close()
    assert collect_batch(queue, 3, 0.0) == ([0, 1, 2], False)
    assert collect_batch(queue, 3, 0.0) == ([3, 4, 5], False)
    assert collect_batch(queue, 3, 1.0) == ([6], True)
    assert collect_batch(queue, 3, 1.0) == ([], True)


def test_collect_batch_returns_a_partial_batch_when_nothing_more_comes():
    queue = StageQueue("pairs", capacity=10)
    queue.put("only")
    assert collect_batch(queue, 4, 0.02) == (["only"], False)
    stop = threading.Event()
    stop.set()
    assert collect_batch(queue, 4, 0.02, stop.is_set) == ([], False)


def pair_of(height: int, width: int, seq: int) -> FramePair:
    frame = Frame(image=np.zeros((height, width), np.uint8), timestamp=0.0, captured_at=0.0, index=seq)
    return FramePair(ir=frame, vis=frame, seq=seq)


def test_split_by_shape_keeps_order_and_groups_consecutive_sizes():
    pairs = [pair_of(4, 6, 0), pair_of(4, 6, 1), pair_of(8, 6, 2), pair_of(4, 6, 3)]
    groups = split_by_shape(pairs)
    assert [[p.seq for p in group] for group in groups] == [[0, 1], [2], [3]]


def test_fill_batch_repeats_the_last_frame_up_to_the_size_and_leaves_full_batches_alone():
    frames = [np.full((2, 3), level, np.uint8) for level in (10, 20, 30)]
    filled = fill_batch(frames, 5)
    assert [int(f[0, 0]) for f in filled] == [10, 20, 30, 30, 30]
    assert all(a is b for a, b in zip(filled, frames))  # the real frames first, in order, untouched
    assert len(fill_batch(frames, 3)) == 3 and len(fill_batch(frames, 2)) == 3
