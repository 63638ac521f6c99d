"""The SHA-256 of a published file, on a background pass after its first manifest version.

A file published cold is listed as soon as its SHA-1 pieces and XXH3 are known
(`hashing.FirstPass`, 0.68-0.8 s per GiB on two threads instead of 1.2-1.3 s
with SHA-256 beside the pieces): the torrent and a client's checks need nothing
more. `Digests` then reads the file once more on one thread at the lowest CPU
priority (SHA-256 + XXH3, 1.0-1.15 s per GiB, out of the way of the uploads),
and hands the SHA-256 to the publisher, which adds it to the item in a later
manifest version; the full row goes to the hash cache. The pass is dropped when
the file is not the one that was published any more (another size or XXH3, or
it changed while it was read): the watcher publishes a changed file anew.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshmedia.hashing import BLOCK, FileHashes, new_xxh3
from meshmedia.store import HashRecord, Store

log = logging.getLogger(__name__)

NICE = 19  # without SCHED_IDLE: the thread's niceness (Linux: per thread id)


@dataclass(frozen=True)
class Pending:
    """A published file whose SHA-256 is still to come."""

    group: str
    item_path: str
    info_hash: str
    source: Path
    hashes: FileHashes  # its size, pieces and XXH3 (sha256 "")


Done = Callable[[Pending, str], None]
"""Told the SHA-256 of a pending file (on the digest thread)."""


class Digests:
    """One background thread that finishes the hashes of files published without SHA-256."""

    def __init__(self, store: Store, done: Done) -> None:
        """Save each finished row into `store`'s hash cache, then tell `done`."""
        self._store = store
        self._done = done
        self._queue: queue.Queue[Pending | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: set[tuple[str, str, str]] = set()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.bytes_read = 0  # by the background passes, for meshmedia_hashed_bytes_total

    def add(self, pending: Pending) -> None:
        """Hash `pending` on the background thread (once, however often it is added)."""
        mark = (pending.group, pending.item_path, pending.info_hash)
        with self._lock:
            if self._closed or mark in self._waiting:
                return
            self._waiting.add(mark)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="digests", daemon=True)
                self._thread.start()
        self._queue.put(pending)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every pending file is done (True) or `timeout` passed (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._waiting, timeout)

    def close(self) -> None:
        """Stop, the file under way included (a restart hashes what is left again)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        _lowest_priority()
        while (pending := self._queue.get()) is not None:
            try:
                sha256 = self._digest(pending)
                if sha256 is not None:
                    self._done(pending, sha256)
            except Exception:  # one file's failure never stops the thread
                log.exception("SHA-256 of %s failed", pending.source)
            finally:
                with self._idle:
                    self._waiting.discard((pending.group, pending.item_path, pending.info_hash))
                    self._idle.notify_all()

    def _digest(self, pending: Pending) -> str | None:
        """The SHA-256 of the file as it was published, or None when it is not that file."""
        try:
            fd = os.open(pending.source, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot read %s for its SHA-256: %s", pending.source, exc.strerror)
            return None
        try:
            before = _key(os.fstat(fd))
            if before[2] != pending.hashes.size:
                return None
            sha, fast = hashlib.sha256(), new_xxh3()
            buffer = bytearray(BLOCK)
            view = memoryview(buffer)
            offset = 0
            while got := os.preadv(fd, [view], offset):
                if self._closed:  # a shutdown waits for no pass (a restart does it again)
                    return None
                sha.update(view[:got])
                fast.update(view[:got])
                offset += got
                self.bytes_read += got
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if _key(after) != before or fast.hexdigest() != pending.hashes.xxh3:
            log.info("%s changed since it was published; no SHA-256 for it", pending.source)
            return None
        hashes = pending.hashes
        if hashes.pieces:  # a pass after a restart has none: no row to complete
            self._store.save_hashes(
                HashRecord(*before, hashes.piece_size, sha.hexdigest(), hashes.xxh3,
                           b"".join(hashes.pieces))
            )  # fmt: skip
        return sha.hexdigest()


def _lowest_priority() -> None:
    """Run the calling thread only when a core has nothing else to do: SCHED_IDLE (Linux,
    per thread with pid 0), and niceness 19 where that is not available."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError) as exc:
        log.debug("no SCHED_IDLE for the digest thread: %s", exc)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as exc:  # not allowed: it runs at normal priority
        log.debug("cannot lower the digest thread's priority: %s", exc)


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
