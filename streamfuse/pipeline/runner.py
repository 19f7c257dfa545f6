"""Runs a pipeline: one thread per stage, joined by bounded queues.

    capture IR  --ir queue--\\
                              sync + register --pairs queue--> infer --fused queue--> sinks
    capture VIS --vis queue-/                                                    (main thread)

File runs block on full queues (nothing is dropped); live runs drop the oldest item instead.
Stopping (Ctrl-C, SIGTERM, a limit, the display's q key) ends the captures; what is already in
the queues is still fused and written, then every sink is closed (the video file is finalised).
A source error ends that stream only (recorded, exit code non-zero); a failure in sync,
inference or a sink stops the run.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from tqdm import tqdm

from streamfuse.calibration import IrRegistrar, load_calibration
from streamfuse.errors import StreamFuseError
from streamfuse.images import pair_files
from streamfuse.pipeline.batching import END, StageQueue, collect_batch, fill_batch, split_by_shape
from streamfuse.pipeline.config import InferenceConfig, PipelineConfig
from streamfuse.pipeline.frames import FramePair, FusedFrame
from streamfuse.pipeline.sinks import close_sinks, open_sinks
from streamfuse.pipeline.sources import open_source
from streamfuse.pipeline.stats import PipelineStats
from streamfuse.pipeline.sync import IR, VIS, Synchroniser, default_tolerance

log = logging.getLogger("streamfuse.pipeline")
# The engines that compile a network for each input shape on its first call.
BUILDS_PER_SIZE = ("compile", "openvino", "tensorrt")


class Engine(Protocol):
    """What the inference worker needs: same-size pairs in, fused frames out (see ``Fuser``)."""

    def fuse_batch(self, ir_frames: list[np.ndarray], vis_frames: list[np.ndarray]) -> list[np.ndarray]: ...


def build_engine(config: InferenceConfig) -> Engine:
    """The fusion engine ``config`` names (:func:`streamfuse.engines.create_fuser`)."""
    from streamfuse.engines import create_fuser

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return create_fuser(config.weights, config.fusion, config.engine, config.precision, config.device)


def load_registration(path: str | None) -> tuple[Callable[[np.ndarray], np.ndarray] | None, float | None]:
    """``(registrar, time_offset)`` from a calibration file; ``(None, None)`` without one (the
    cameras are taken as pre-aligned: IR frames pass unchanged and must match the visible size)."""
    if path is None:
        return None, None
    calibration = load_calibration(path)
    return IrRegistrar(calibration), calibration.time_offset


@dataclass
class RunResult:
    """What a run did: the stats summary (also written by ``--stats``), its errors, and whether
    it was stopped early by a signal."""

    summary: dict
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a graceful drain); a second SIGINT interrupts at once.
    Only the main thread can install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s: finishing the frames in flight, then closing the outputs (Ctrl-C again to abort)",
                    signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Pipeline:
    """One run of ``config`` with ``engine``; :meth:`run` blocks until it is over.

    ``source_name`` is the config file's name for messages. ``stop`` may be set by the caller
    (another thread) to end the run as Ctrl-C would.
    """

    def __init__(self, config: PipelineConfig, engine: Engine, source_name: str = "config",
                 stop: threading.Event | None = None):
        self.config = config
        self.engine = engine
        self.source_name = source_name
        self.stop = stop or threading.Event()
        self.errors: list[str] = []
        self._fatal = False
        # The calibration's registrar (set by run()): _infer shows the visible frame where the IR
        # camera sees nothing.
        self._registrar: IrRegistrar | None = None
        live = config.live
        self.queues = {
            IR: StageQueue("ir", config.queues.capture, drop_oldest=live),
            VIS: StageQueue("vis", config.queues.capture, drop_oldest=live),
            "pairs": StageQueue("pairs", config.queues.pairs, drop_oldest=live),
            "fused": StageQueue("fused", config.queues.fused, drop_oldest=live),
        }
        self.stats = PipelineStats(list(self.queues.values()))

    # -- failure handling ------------------------------------------------------------------
    def _record(self, message: str) -> None:
        """An error the run reports at the end (and in ``--stats``); the run goes on."""
        self.errors.append(message)

    def _fail(self, message: str) -> None:
        """A stage cannot go on: stop capturing and discard unfused work (fused frames are kept)."""
        self._record(message)
        self._fatal = True
        self.stop.set()
        for name in (IR, VIS, "pairs"):
            self.queues[name].abort()

    # -- stages ----------------------------------------------------------------------------
    def _capture(self, source, side: str) -> None:
        queue, meter = self.queues[side], self.stats.stages[f"capture_{side}"]
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                frame = source.read()
                if frame is None:
                    break
                meter.add(1, time.perf_counter() - started)
                if not queue.put(frame):
                    break
        except StreamFuseError as error:
            self._record(str(error))
        except Exception as error:  # a decoder bug must end this stream, not hang the run
            self._record(f"{side} source: {type(error).__name__}: {' '.join(str(error).split())}")
        finally:
            queue.close()
            source.close()
            for problem in getattr(source, "problems", ()):  # frames a source skipped
                self._record(problem)

    def _register(self, pair: FramePair, registrar) -> None:
        if registrar is not None:
            pair.ir.image = registrar(pair.ir.image)
        ir_size, vis_size = pair.ir.image.shape[:2], pair.vis.image.shape[:2]
        if ir_size != vis_size:
            raise StreamFuseError(
                f"{self.source_name}: IR frames are {ir_size[1]}x{ir_size[0]} but visible frames are "
                f"{vis_size[1]}x{vis_size[0]}"
                + ("; the calibration's vis_size must match the visible camera" if registrar is not None
                   else "; give this camera pair a calibration file ('calibration:' in a config, "
                   "--calibration for streamfuse fuse)")
            )

    def _sync(self, synchroniser: Synchroniser, registrar) -> None:
        pairs_queue, meter = self.queues["pairs"], self.stats.stages["sync"]
        try:
            while True:
                started = time.perf_counter()
                pairs = synchroniser.pop_pairs()
                for pair in pairs:
                    self._register(pair, registrar)
                meter.add(len(pairs), time.perf_counter() - started)
                for pair in pairs:
                    if not pairs_queue.put(pair):
                        return
                if synchroniser.finished:
                    return
                side = synchroniser.needs()
                item = self.queues[side].get()
                if item is END:
                    synchroniser.end(side)
                else:
                    synchroniser.push(side, item)
        except StreamFuseError as error:
            self._fail(str(error))
        except Exception as error:
            self._fail(f"sync: {type(error).__name__}: {' '.join(str(error).split())}")
        finally:
            pairs_queue.close()
            # A stream that is over makes the other one useless: release its capture thread.
            self.queues[IR].abort()
            self.queues[VIS].abort()

    def _infer(self) -> None:
        pairs_queue, fused_queue = self.queues["pairs"], self.queues["fused"]
        meter = self.stats.stages["infer"]
        batch_size = self.config.inference.batch_size
        wait_s = self.config.inference.batch_timeout_ms / 1000
        sizes_seen: set[tuple[int, ...]] = set()
        # Filling a short batch spares an engine that builds per shape a new build; eager has
        # none to spare, and would only do the extra work.
        engine_name = getattr(self.engine, "engine", None)
        builds_per_size = engine_name in BUILDS_PER_SIZE
        fill_to = batch_size if builds_per_size else 0
        try:
            ended = False
            while not ended:
                pairs, ended = collect_batch(pairs_queue, batch_size, wait_s)
                for group in split_by_shape(pairs):
                    if builds_per_size:
                        self._announce_build(engine_name, group[0], sizes_seen)
                    started = time.perf_counter()
                    ir_frames = fill_batch([p.ir.image for p in group], fill_to)
                    vis_frames = fill_batch([p.vis.image for p in group], fill_to)
                    fused = self.engine.fuse_batch(ir_frames, vis_frames)[: len(group)]
                    if self._registrar is not None:
                        fused = [self._registrar.outside_view(image, pair.vis.image)
                                 for pair, image in zip(group, fused)]
                    busy = time.perf_counter() - started
                    meter.add(len(group), busy)
                    self.stats.batch_s.add(busy)
                    for pair, image in zip(group, fused):
                        if not fused_queue.put(FusedFrame(pair=pair, fused=image)):
                            return
        except StreamFuseError as error:
            self._fail(str(error))
        except Exception as error:
            self._fail(f"inference: {type(error).__name__}: {' '.join(str(error).split())}")
        finally:
            fused_queue.close()

    def _announce_build(self, engine: str, pair, sizes_seen: set) -> None:
        """Says so when an engine that builds one network per input size meets a new frame
        size: its first batch waits for that build (60 s for ``compile`` on an H100 in session 20,
        16 s from Inductor's cache), and the progress bar would otherwise look stuck."""
        size = pair.vis.image.shape[:2]
        if size in sizes_seen:
            return
        sizes_seen.add(size)
        log.info("inference: the %s engine builds its network for %dx%d frames, batch %d "
                 "(once per frame size; up to a minute or two the first time, less from its cache)",
                 engine, size[1], size[0], self.config.inference.batch_size)

    # -- the run ---------------------------------------------------------------------------
    def _open_sources(self) -> dict:
        config = self.config
        files = {IR: None, VIS: None}
        if config.ir.kind == "folder" and config.vis.kind == "folder":
            pairs, unmatched = pair_files(config.ir.path, config.vis.path)
            if not pairs:
                raise StreamFuseError(f"{self.source_name}: the IR and visible folders share no file stem; pairs are matched by name")
            if unmatched:
                log.warning("%d images have no partner of the same name and are skipped (e.g. %s)", len(unmatched), unmatched[0])
            files = {IR: [p[1] for p in pairs], VIS: [p[2] for p in pairs]}
        sources = {}
        try:
            for side, section in ((IR, config.ir), (VIS, config.vis)):
                sources[side] = open_source(section, side, self.stop, files[side])
        except BaseException:
            for source in sources.values():
                source.close()
            raise
        return sources

    def run(self, progress: bool = True) -> RunResult:
        """Run until the sources end or a stop; always closes the sinks. Raises
        :class:`StreamFuseError` for problems found before the run starts."""
        config = self.config
        registrar, calibration_offset = load_registration(config.calibration)
        self._registrar = registrar
        offset = config.sync.offset if config.sync.offset is not None else (calibration_offset or 0.0)
        sources = self._open_sources()
        started_threads: list[threading.Thread] = []
        try:
            tolerance = config.sync.tolerance
            if tolerance is None:
                tolerance = default_tolerance(sources[IR].fps, sources[VIS].fps)
            synchroniser = Synchroniser(offset, tolerance)
            vis_fps = sources[VIS].fps or 30.0
            sinks = open_sinks(config.sinks, vis_fps, self.stop.set)
        except BaseException:
            for source in sources.values():
                source.close()
            raise
        threads = [
            threading.Thread(target=self._capture, args=(sources[IR], IR), name="capture-ir", daemon=True),
            threading.Thread(target=self._capture, args=(sources[VIS], VIS), name="capture-vis", daemon=True),
            threading.Thread(target=self._sync, args=(synchroniser, registrar), name="sync", daemon=True),
            threading.Thread(target=self._infer, name="infer", daemon=True),
        ]
        expected = self._expected_pairs(sources)
        written = 0
        interrupted = False
        bar = tqdm(total=expected, unit="frame", desc="fusing", disable=not progress or config.live,
                   dynamic_ncols=True, leave=True)
        try:
            with stop_on_signals(self.stop):
                for thread in threads:
                    thread.start()
                    started_threads.append(thread)
                written = self._write_loop(sinks, bar)
                interrupted = self.stop.is_set() and not self._fatal
        finally:
            self.stop.set()
            for thread in started_threads:
                thread.join(timeout=5.0)
            for message in close_sinks(sinks):
                self._record(f"closing output: {message}")
            bar.close()
        summary = self._summary(sources, synchroniser, written, interrupted, offset, tolerance)
        return RunResult(summary=summary, errors=list(self.errors), interrupted=interrupted)

    def _write_loop(self, sinks: list, bar: tqdm) -> int:
        """The sink stage, on the main thread (display windows must live there)."""
        fused_queue, meter, limits = self.queues["fused"], self.stats.stages["sink"], self.config.limits
        written = 0
        next_report = time.monotonic() + self.config.stats_interval_s
        while True:
            item = fused_queue.get(timeout=0.1)
            if item is END:
                return written
            if item is not None:
                started = time.perf_counter()
                try:
                    for sink in sinks:
                        sink.write(item)
                except Exception as error:
                    message = str(error) if isinstance(error, StreamFuseError) else \
                        f"output: {type(error).__name__}: {' '.join(str(error).split())}"
                    self._fail(message)
                    fused_queue.abort()  # the inference thread may be waiting for room
                    return written
                meter.add(1, time.perf_counter() - started)
                self.stats.latency_s.add(time.monotonic() - item.pair.captured_at)
                written += 1
                bar.update(1)
                if limits.frames is not None and written >= limits.frames:
                    self.stop.set()
            self.stats.sample_queues()
            now = time.monotonic()
            if limits.seconds is not None and self.stats.elapsed() >= limits.seconds:
                self.stop.set()
            if self.config.live and now >= next_report:
                log.info("%s", self.stats.line())
                next_report = now + self.config.stats_interval_s

    @staticmethod
    def _expected_pairs(sources: dict) -> int | None:
        counts = [sources[side].frame_count for side in (IR, VIS)]
        return min(counts) if all(counts) else None

    def _summary(self, sources: dict, synchroniser: Synchroniser, written: int, interrupted: bool,
                 offset: float, tolerance: float) -> dict:
        summary = self.stats.summary()
        summary["frames_written"] = written
        summary["interrupted"] = interrupted
        summary["errors"] = list(self.errors)
        summary["sources"] = {
            side: {"kind": section.kind, "fps": sources[side].fps, "frame_count": sources[side].frame_count,
                   "reconnects": getattr(sources[side], "reconnects", 0)}
            for side, section in ((IR, self.config.ir), (VIS, self.config.vis))
        }
        summary["sync"] = {"offset_s": offset, "tolerance_s": tolerance, "pairs": synchroniser.pairs_made,
                           "unpaired_ir": synchroniser.unpaired[IR], "unpaired_vis": synchroniser.unpaired[VIS]}
        summary["drops"] = {
            "ir_queue": self.queues[IR].dropped, "vis_queue": self.queues[VIS].dropped,
            "pairs_queue": self.queues["pairs"].dropped, "fused_queue": self.queues["fused"].dropped,
            "unpaired_ir": synchroniser.unpaired[IR], "unpaired_vis": synchroniser.unpaired[VIS],
        }
        summary["live"] = self.config.live
        return summary


def run_pipeline(config: PipelineConfig, source_name: str = "config", progress: bool = True,
                 stop: threading.Event | None = None) -> RunResult:
    """Build the engine for ``config`` and run it (see :class:`Pipeline`)."""
    engine = build_engine(config.inference)
    return Pipeline(config, engine, source_name, stop).run(progress)
