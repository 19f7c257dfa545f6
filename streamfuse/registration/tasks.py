"""Where ``--auto``'s independent fits run: in this process, or in spawned worker processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import cv2

# ``map_tasks(function, items) -> [function(item) for item in items]``, wherever it runs them.
TaskMap = Callable[[Callable[[Any], Any], list], list]


def in_this_process(function: Callable[[Any], Any], items: list) -> list:
    """The ``TaskMap`` running every task here, one after another."""
    return [function(item) for item in items]


# NumPy's OpenBLAS threads spin while they wait, so a worker process per core, each with BLAS
# threads of its own, oversubscribes the cores: fitting 6 demo pairs on 2 cores took 43 s that way,
# against 20 s with one BLAS thread per worker and 28.6 s in one process.
ONE_THREAD_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                           "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored after: what spawned processes inherit."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_worker() -> None:
    """A fitting process: OpenCV on one thread, like NumPy's BLAS there; Ctrl-C is the parent's
    to handle (it ends the workers), so they do not each print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _numbered(function: Callable[[Any], Any], numbered_item: tuple[int, Any]) -> tuple[int, Any]:
    """``(index, function(item))``, in a worker process."""
    index, item = numbered_item
    return index, function(item)


class TaskPool:
    """Runs independent, deterministic tasks here, or in ``processes`` worker processes.

    A task returns what it would in this process, so results do not depend on where it ran
    (the tests compare them bit for bit). Workers are spawned, not forked (a fork of a process
    whose BLAS or OpenCV thread pools are running can deadlock), at the first call with more
    than one task. Leaving the ``with`` block on an error or Ctrl-C ends them at once instead
    of waiting for the tasks under way. Tasks must pickle: module-level functions, ``partial``.
    """

    def __init__(self, processes: int = 1):
        self.processes = processes
        self._pool = None

    def __enter__(self) -> "TaskPool":
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self._pool is None:
            return
        if error_type is None:
            self._pool.close()
        else:
            self._pool.terminate()
        self._pool.join()

    def _use_workers(self, tasks: int) -> bool:
        """Whether ``tasks`` tasks go to the workers, which start at the first that do."""
        if self.processes <= 1 or tasks <= 1:
            return False
        if self._pool is None:
            with _environment(ONE_THREAD_ENVIRONMENT):
                self._pool = multiprocessing.get_context("spawn").Pool(self.processes,
                                                                       _start_worker)
        return True

    def map(self, function: Callable[[Any], Any], items: list) -> list:
        """The ``TaskMap``: ``[function(item) for item in items]``, in order."""
        if not self._use_workers(len(items)):
            return in_this_process(function, items)
        return self._pool.map(function, items, chunksize=1)

    def as_completed(self, function: Callable[[Any], Any], items: list
                     ) -> Iterator[tuple[int, Any]]:
        """``(index, function(items[index]))`` for each item, as each one ends."""
        if not self._use_workers(len(items)):
            for index, item in enumerate(items):
                yield index, function(item)
            return
        yield from self._pool.imap_unordered(partial(_numbered, function), enumerate(items))
