"""Flow control between stages: bounded queues (block or drop the oldest) and inference batches.

Every hand-over between two threads is a :class:`StageQueue` of fixed capacity. File runs block
the producer when a queue is full (backpressure: nothing is lost); live runs drop the oldest
item instead, so the newest frames always get through and latency stays bounded.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable


class _End:
    """The marker a closed queue hands out once its items are used up."""

    def __repr__(self) -> str:
        return "END"


END = _End()


class StageQueue:
    """A bounded FIFO between two pipeline threads.

    ``drop_oldest``: when full, :meth:`put` discards the oldest item (counted in ``dropped``)
    instead of waiting. :meth:`close` ends the stream: :meth:`get` returns the remaining items,
    then :data:`END`. :meth:`abort` ends it at once for both sides (used on errors).
    """

    def __init__(self, name: str, capacity: int, drop_oldest: bool = False):
        if capacity < 1:
            raise ValueError(f"queue {name!r}: capacity must be at least 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self.max_depth = 0
        self._items: collections.deque = collections.deque()
        self._closed = False
        self._aborted = False
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> bool:
        """Add ``item``; False when the queue was closed or aborted (the consumer is gone)."""
        with self._changed:
            while len(self._items) >= self.capacity and not self.drop_oldest:
                if self._closed or self._aborted:
                    return False
                self._changed.wait()
            if self._closed or self._aborted:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.max_depth = max(self.max_depth, len(self._items))
            self._changed.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Any:
        """The next item, :data:`END` when the stream is over, or None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._items:
                if self._closed or self._aborted:
                    return END
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    def close(self) -> None:
        """No more items will come; the consumer still gets those already queued."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def abort(self) -> None:
        """Stop both sides now: pending and future items are discarded."""
        with self._changed:
            self._aborted = True
            self._items.clear()
            self._changed.notify_all()


def collect_batch(queue: StageQueue, max_size: int, max_wait_s: float,
                  stop: Callable[[], bool] = lambda: False) -> tuple[list, bool]:
    """Up to ``max_size`` items: waits for the first, then at most ``max_wait_s`` for the rest.

    Returns ``(items, ended)``; ``ended`` is True once the queue has handed out :data:`END`
    (``items`` may still hold the last partial batch). ``stop()`` is polled while waiting for
    the first item.
    """
    items: list = []
    while not items:
        item = queue.get(timeout=0.1)
        if item is END:
            return items, True
        if item is None:
            if stop():
                return items, False
            continue
        items.append(item)
    deadline = time.monotonic() + max_wait_s
    while len(items) < max_size:
        item = queue.get(timeout=max(0.0, deadline - time.monotonic()))
        if item is END:
            return items, True
        if item is None:
            break
        items.append(item)
    return items, False


def fill_batch(frames: list, size: int) -> list:
    """``frames`` followed by copies of its last frame up to ``size`` items (none when it has
    that many already).

    Every engine but eager builds one network per input shape (torch.compile, OpenVINO,
    TensorRT: seconds to a minute each), so for them a batch that did not fill before its
    timeout, or the last one of a file, is filled up to the configured size instead of becoming
    a new shape.
    """
    return frames + [frames[-1]] * (size - len(frames))


def split_by_shape(pairs: list) -> list[list]:
    """Consecutive runs of pairs whose IR and visible images share one shape (a network batch
    needs one size; a camera that reconnects at another resolution changes it mid-stream)."""
    runs: list[list] = []
    for pair in pairs:
        key = (pair.ir.image.shape, pair.vis.image.shape)
        if runs and (runs[-1][0].ir.image.shape, runs[-1][0].vis.image.shape) == key:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs
