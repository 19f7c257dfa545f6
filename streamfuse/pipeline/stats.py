"""What a run measures: frames and busy time per stage, latency from capture to sink, queue depths.

Memory stays constant however long a run is: latencies are kept in a fixed-size uniform sample
(reservoir sampling), exact for runs shorter than its capacity.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np

from streamfuse.pipeline.batching import StageQueue


class Reservoir:
    """A uniform random sample of at most ``capacity`` values from a stream (Vitter's algorithm R)."""

    def __init__(self, capacity: int = 20000, seed: int = 0):
        self.capacity = capacity
        self.seen = 0
        self.values: list[float] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self.seen += 1
            if len(self.values) < self.capacity:
                self.values.append(value)
            else:
                slot = self._random.randrange(self.seen)
                if slot < self.capacity:
                    self.values[slot] = value

    def percentiles(self, qs=(50, 95, 99)) -> dict[str, float | None]:
        with self._lock:
            values = np.array(self.values)
        if not len(values):
            return {f"p{q}": None for q in qs} | {"max": None}
        result = {f"p{q}": float(np.percentile(values, q)) for q in qs}
        result["max"] = float(values.max())
        return result


class StageMeter:
    """Items a stage has finished and the seconds it spent working on them (not waiting)."""

    def __init__(self) -> None:
        self.count = 0
        self.busy_s = 0.0

    def add(self, count: int, busy_s: float) -> None:
        self.count += count
        self.busy_s += busy_s


STAGES = ("capture_ir", "capture_vis", "sync", "infer", "sink")


class PipelineStats:
    """Counters of one run; each meter is written by one thread only, read by the reporter."""

    def __init__(self, queues: list[StageQueue]):
        self.started = time.monotonic()
        self.stages = {name: StageMeter() for name in STAGES}
        self.latency_s = Reservoir()
        self.batch_s = Reservoir()
        self.queues = queues
        self._depth_sum = {q.name: 0 for q in queues}
        self._depth_samples = 0
        self._window = (self.started, {name: 0 for name in STAGES})

    def sample_queues(self) -> None:
        """Record current queue depths (called by the sink loop for the mean depth)."""
        self._depth_samples += 1
        for queue in self.queues:
            self._depth_sum[queue.name] += len(queue)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        """One line for periodic live reports: fps per stage since the last line, latency, queues."""
        now = time.monotonic()
        since, counts = self._window
        span = max(now - since, 1e-9)
        fps = " ".join(f"{name} {(m.count - counts[name]) / span:.1f}" for name, m in self.stages.items())
        self._window = (now, {name: m.count for name, m in self.stages.items()})
        latency = self.latency_s.percentiles()
        latency_text = " ".join(
            f"{key} {value * 1000:.0f}" for key, value in latency.items() if key != "max" and value is not None
        )
        queues = " ".join(f"{q.name} {len(q)}/{q.capacity}" for q in self.queues)
        drops = sum(q.dropped for q in self.queues)
        return f"fps: {fps} | latency ms: {latency_text or '-'} | queues: {queues} | queue drops {drops}"

    def summary(self) -> dict:
        """Throughput (items / run time) and capacity (items / busy time) per stage, latency in
        ms, and queue capacity / max / mean depth."""
        elapsed = max(self.elapsed(), 1e-9)
        stages = {
            name: {
                "items": meter.count,
                "fps": meter.count / elapsed,
                "busy_fps": meter.count / meter.busy_s if meter.busy_s > 0 else None,
            }
            for name, meter in self.stages.items()
        }
        samples = max(self._depth_samples, 1)
        queues = {
            q.name: {"capacity": q.capacity, "max_depth": q.max_depth,
                     "mean_depth": self._depth_sum[q.name] / samples, "dropped": q.dropped,
                     "policy": "drop-oldest" if q.drop_oldest else "block"}
            for q in self.queues
        }
        return {
            "duration_s": elapsed,
            "stages": stages,
            "latency_ms": _milliseconds(self.latency_s.percentiles()) | {"samples": self.latency_s.seen},
            "batch_ms": _milliseconds(self.batch_s.percentiles()) | {"batches": self.batch_s.seen},
            "queues": queues,
        }


def _milliseconds(values: dict[str, float | None]) -> dict[str, float | None]:
    return {key: None if value is None else value * 1000 for key, value in values.items()}
