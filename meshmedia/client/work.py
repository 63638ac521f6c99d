"""The client's slow work, off its main loop and its lock: each job on a worker thread.

Hashing a file already in place (200 MB: about a second; a film: a minute),
verifying and moving a finished download, fetching a `.torrent` (up to its
60 s deadline) would each hold up every other item if the main loop did them.
The main loop asks `take(key, work)` on every wake instead: None while the
job runs (the first ask starts it), then its result, handed out once; the
workers call `on_done` so that the main loop wakes when a result is in. The
threads are daemons: a job still running at exit (a hash, a trickling fetch)
never holds the process up.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Finished(Generic[T]):
    """A job's result: its value, or why it raised (then `value` is None)."""

    value: T | None
    error: str | None = None


class Jobs:
    """Runs keyed jobs on up to `workers` daemon threads and holds each result once."""

    def __init__(self, name: str, workers: int, on_done: Callable[[], None]) -> None:
        """Name the threads `name`; call `on_done()` after every job."""
        self.name = name
        self._workers = workers
        self._on_done = on_done
        self._cond = threading.Condition()
        self._results: dict[Hashable, Finished[Any]] = {}
        self._running: set[Hashable] = set()
        self._queue: queue.Queue[tuple[Hashable, Callable[[], Any]]] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def take(self, key: Hashable, work: Callable[[], T]) -> Finished[T] | None:
        """The result of the job `key` once it has finished (then it is forgotten);
        None while it runs. The first call for a key starts `work` on a worker."""
        done = self.done(key)
        if done is None:
            self.start(key, work)
        return done

    def start(self, key: Hashable, work: Callable[[], T]) -> None:
        """Start the job `key` on a worker, unless it is running or its result waits."""
        with self._cond:
            if key in self._running or key in self._results:
                return
            self._running.add(key)
            self._queue.put((key, work))
            self._start_workers()

    def done(self, key: Hashable) -> Finished[Any] | None:
        """The result of the job `key` if it has finished (then it is forgotten), else None."""
        with self._cond:
            return self._results.pop(key, None)

    def running(self, key: Hashable) -> bool:
        """True while the job `key` is queued or running."""
        with self._cond:
            return key in self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running (a closing client); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    def _start_workers(self) -> None:
        while len(self._threads) < self._workers:
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        while True:
            key, work = self._queue.get()
            try:
                result: Finished[Any] = Finished(work())
            except Exception as exc:  # a worker must outlive any job
                log.exception("%s %r failed", self.name, key)
                result = Finished(None, f"unexpected error: {type(exc).__name__}: {exc}")
            with self._cond:
                self._running.discard(key)
                self._results[key] = result
                self._cond.notify_all()
            self._on_done()
