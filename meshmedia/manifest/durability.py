"""Durability of the curator's manifests, kept off the publish path.

Right after a large copy, an fsync waits for the disk to write that copy out,
and even a rename over an existing file can wait as long (0.2 to 0.8 s measured
after a 1 GiB copy, native_notes/hashing.md). So the manifests are served from
memory and a background thread writes each new version to disk (temp file,
fsync, rename). What must never go backwards after a crash is the version
number (clients refuse a rollback): versions are handed out from blocks
recorded with fsync before use, and a store that was not closed cleanly
continues above the whole block.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from meshmedia.private_files import FILE_MODE

log = logging.getLogger(__name__)

BLOCK = 1000
"""Versions reserved at once; the next block is reserved when half is used."""
RETRY = 1.0
"""Seconds between tries when a batch cannot be written (a full or failing disk)."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600): temp file, fsync, rename, fsync the folder."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 less the umask: exactly 0600
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """fsync a folder, so that renames in it survive a crash."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class VersionBook:
    """Durable per-group version reservations, in `<folder>/.versions`."""

    def __init__(self, folder: Path) -> None:
        """Read the reservations of `folder` (none when the file is missing)."""
        self.path = Path(folder) / ".versions"
        self._lock = threading.Lock()
        self._marks: dict[str, int] = {}
        try:
            loaded = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s); version reservations start afresh", self.path, exc)
            return
        if isinstance(loaded, dict):
            self._marks = {g: v for g, v in loaded.items() if isinstance(v, int) and v >= 0}

    def mark(self, group: str) -> int:
        """The durable mark of `group`: no version above it was handed out (0 when none).

        Never waits for a write in progress (it reads the marks already on disk).
        """
        return self._marks.get(group, 0)

    def record(self, marks: dict[str, int]) -> None:
        """Set the marks of these groups and write the book durably before returning."""
        with self._lock:
            merged = {**self._marks, **marks}
            write_atomic(self.path, json.dumps(merged, sort_keys=True).encode())
            self._marks = merged


class Flusher:
    """A thread that writes files durably and extends reservations, in the background.

    Every request takes a ticket; `flush` waits for the tickets handed out before
    it was called, so a caller waits for its own batch, never for later writes.
    A batch that fails is kept and tried again (RETRY seconds later).
    """

    def __init__(self, book: VersionBook) -> None:
        """Start the thread; `book` receives the reservations asked for with `reserve`."""
        self._book = book
        self._cond = threading.Condition()
        self._files: dict[Path, bytes | Callable[[], bytes]] = {}
        self._marks: dict[str, int] = {}
        self._issued = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is on disk
        self.error: str | None = None  # why the last batch failed (None once one succeeds)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="manifest-fsync", daemon=True)
        self._thread.start()

    def write(self, path: Path, data: bytes | Callable[[], bytes]) -> int:
        """Have `data` written to `path` soon (a newer write of the same path replaces it);
        returns its ticket. A callable is called on the writer's thread, once, for the
        newest write only: a burst of versions is serialised once, not once each."""
        with self._cond:
            self._files[path] = data
            return self._ticket()

    def reserve(self, group: str, mark: int) -> int:
        """Have the reservation of `group` raised to `mark` soon; returns its ticket."""
        with self._cond:
            self._marks[group] = max(mark, self._marks.get(group, 0))
            return self._ticket()

    def _ticket(self) -> int:
        self._issued += 1
        self._cond.notify_all()
        return self._issued

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything asked for before this call is on disk; False on timeout."""
        with self._cond:
            ticket = self._issued
            return self._cond.wait_for(lambda: self._done >= ticket, timeout)

    def close(self) -> None:
        """Finish the pending work and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._files or self._marks or self._closed)
                if not (self._files or self._marks):
                    return
                files, self._files = self._files, {}
                marks, self._marks = self._marks, {}
                upto = self._issued
            try:
                for path, data in files.items():
                    write_atomic(path, data() if callable(data) else data)
                if marks:
                    self._book.record(marks)
            except OSError as exc:
                if self._failed(files, marks, exc):
                    return
            else:
                with self._cond:
                    self._done, self.error = upto, None
                    self._cond.notify_all()

    def _failed(
        self, files: dict[Path, bytes | Callable[[], bytes]], marks: dict[str, int], exc: OSError
    ) -> bool:
        """Keep a failed batch for the next try (newer data wins); True when closing."""
        log.error("cannot make the manifests durable (trying again): %s", exc)
        with self._cond:
            self.error = str(exc)
            for path, data in files.items():
                self._files.setdefault(path, data)
            for group, mark in marks.items():
                self._marks[group] = max(mark, self._marks.get(group, 0))
            if self._closed:
                log.error("closing with %d manifest file(s) not on disk", len(self._files))
                return True
            self._cond.wait_for(lambda: self._closed, RETRY)
        return False
