"""The drop folders: watchdog events in, publish / unpublish / moved calls out.

A file still being written is followed (its growth fed to the incremental
hasher) and published once it is closed after writing and stays quiet for
`config.settle_time`; where only polling works, once its size and mtime stay
unchanged for `config.poll_quiet`. Temporary names are ignored until renamed.
All publisher calls run on one worker thread, never on watchdog's threads.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from stat import S_ISDIR, S_ISLNK
from typing import Any, Protocol

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers.api import BaseObserver

from meshmedia.config import Config, Share

from .sources import SYMLINK_RULE
from .watch_fs import file_stat, is_temporary, start_observer, walk_files

log = logging.getLogger(__name__)

FORCE_POLLING_ENV = "MESHMEDIA_FORCE_POLLING"
MOVED_IN_QUIET = 0.05
"""Seconds of quiet after a file appears whole (renamed in from outside the shares, or
linked), at most settle_time: it needs no wait for writes. A file created empty still
waits for its writes and close, then settle_time. 10 MB drop -> library: the 0.2 s
settle was two thirds of its 0.29-0.33 s (native_notes/benchmarks.md)."""


class Command(Enum):
    """What the worker is asked to do besides handling a watchdog event."""

    RECONCILE = "reconcile"  # compare the share folders with the catalog (at start)
    STOP = "stop"
    WAKE = "wake"  # look at what is due now (after an injected clock moved on)


Work = tuple[Share, FileSystemEvent] | Command


class PublisherLike(Protocol):
    """The part of publisher.Publisher the watcher uses."""

    def publish(self, path: Path, group: str | None = None) -> Any:
        """Publish (or republish) one file."""

    def unpublish(self, path: Path) -> None:
        """Forget a deleted file."""

    def moved(self, old: Path, new: Path) -> None:
        """A published file changed its path inside the share."""

    def follow(self, path: Path) -> None:
        """A file is growing: hash what is there."""

    def published(self) -> frozenset[Path]:
        """The source paths of every published file: a snapshot, cheap to ask again."""


@dataclass
class _Pending:
    """A file waiting to be published: `due` None means "wait for the close"."""

    share: Share
    due: float | None
    stat: tuple[int, int] | None = None
    followed: float = 0.0


class Watcher:
    """Watches every share folder of the config and keeps the catalog in step with it.

    `force_polling` (or MESHMEDIA_FORCE_POLLING=1 when left None) skips inotify.
    """

    def __init__(
        self,
        config: Config,
        publisher: PublisherLike,
        *,
        force_polling: bool | None = None,
        follow_interval: float = 0.5,
        poll_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Watch `config.shares` for `publisher`. `clock` (seconds, monotonic) decides when
        a file is settled or quiet; tests inject one and call `wake()` after moving it."""
        if force_polling is None:
            force_polling = os.environ.get(FORCE_POLLING_ENV, "") not in ("", "0")
        self._config = config
        # Resolved, as the publisher's catalog is: event paths then compare equal.
        self._shares = tuple(Share(s.group, s.path.resolve()) for s in config.shares)
        self._publisher = publisher
        self._force_polling = force_polling
        self._follow_interval = follow_interval
        self._poll_interval = poll_interval or min(1.0, max(config.poll_quiet / 2, 0.1))
        self._clock = clock
        self._events: queue.Queue[Work] = queue.Queue()
        self._pending: dict[Path, _Pending] = {}
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None
        self._idle = threading.Condition()
        self._busy = 0
        self.polling = False

    # -- life cycle ----------------------------------------------------------
    def start(self) -> None:
        """Start the observers (inotify, else polling) and reconcile with the catalog."""
        for share in self._shares:
            share.path.mkdir(parents=True, exist_ok=True)
        self._observer, self.polling = start_observer(
            self._shares,
            self._events,
            force_polling=self._force_polling,
            poll_interval=self._poll_interval,
        )
        self._worker = threading.Thread(target=self._run, name="meshmedia-watcher", daemon=True)
        self._worker.start()
        self._events.put(Command.RECONCILE)

    def close(self, timeout: float = 30.0) -> None:
        """Stop watching; a publish under way is finished first."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._worker is not None:
            self._events.put(Command.STOP)
            self._worker.join(timeout)
            self._worker = None

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wake(self) -> None:
        """Have the worker look at what is due now (after an injected clock moved on)."""
        self._events.put(Command.WAKE)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the queue is drained and nothing is pending (for tests and tools)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy or self._pending or not self._events.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    # -- worker --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item: Work | None
            try:
                item = self._events.get(timeout=self._next_timeout())
            except queue.Empty:
                item = None
            if item is Command.STOP:
                return
            with self._idle:
                self._busy += 1
            try:
                # Every event queued meanwhile first, then one look at what is due: a look
                # per event walked every pending file, O(N^2) for a burst of N files.
                while True:
                    self._handle(item)
                    try:
                        item = self._events.get_nowait()
                    except queue.Empty:
                        break
                    if item is Command.STOP:
                        self._events.put(item)
                        break
                self._expect()
                self._run_due()
            except Exception:
                log.exception("watcher: unexpected error looking at due files")
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _expect(self) -> None:
        """Tell a publisher that takes rounds how many files wait for them (it starts its
        hashing child for a large one before the files are due)."""
        expect = getattr(self._publisher, "expect_many", None)
        if expect is not None and len(self._pending) > 1:
            expect(len(self._pending))

    def _handle(self, item: Work | None) -> None:
        """One queued piece of work; an error is one log line, never the end of the loop."""
        try:
            if item is Command.RECONCILE:
                self._reconcile()
            elif isinstance(item, tuple):
                self._on_event(*item)
        except Exception:
            log.exception("watcher: unexpected error handling %r", item)

    def _next_timeout(self) -> float | None:
        dues = [p.due for p in self._pending.values() if p.due is not None]
        return max(0.0, min(dues) - self._clock()) if dues else None

    def _on_event(self, share: Share, event: FileSystemEvent) -> None:
        src = Path(os.fsdecode(event.src_path))
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            dest = Path(os.fsdecode(event.dest_path))
            if isinstance(event, FileMovedEvent):
                self._on_moved(share, src, dest)
            else:
                self._on_dir_moved(share, src, dest)
            return
        if isinstance(event, DirDeletedEvent):
            self._on_dir_deleted(src)
            return
        if event.is_directory or is_temporary(src, share.path):
            return
        if isinstance(event, FileDeletedEvent):
            self._on_deleted(share, src)
        elif src.is_symlink():
            self._skip_link(src)
        elif self.polling and isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self._wait_quiet(share, src)
        elif isinstance(event, FileCreatedEvent):
            # Created then opened for writing, or moved in / linked complete:
            # the first write (or an empty file at `due`) turns it into "wait for close".
            quiet = min(self._config.settle_time, MOVED_IN_QUIET)
            self._pending[src] = _Pending(share, self._clock() + quiet)
        elif isinstance(event, FileModifiedEvent):
            self._on_modified(share, src)
        elif isinstance(event, FileClosedEvent):
            self._settle(share, src)

    def _on_deleted(self, share: Share, path: Path) -> None:
        self._pending.pop(path, None)
        owner = self._owner(path)
        if owner is not None:
            self._settle(share, owner)  # a file left a folder item: republish the folder
        else:
            self._call("unpublish", self._publisher.unpublish, path)

    def _skip_link(self, path: Path) -> None:
        """A symbolic link is never published; a published file replaced by one is gone."""
        log.warning("skipping symbolic link %s: %s", path, SYMLINK_RULE)
        if path in self._publisher.published():
            self._call("unpublish", self._publisher.unpublish, path)

    def _on_modified(self, share: Share, path: Path) -> None:
        pending = self._pending.setdefault(path, _Pending(share, None))
        pending.due = None
        now = self._clock()
        if now - pending.followed >= self._follow_interval:
            pending.followed = now
            self._call("follow", self._publisher.follow, path)

    def _settle(self, share: Share, path: Path) -> None:
        pending = self._pending.setdefault(path, _Pending(share, None))
        pending.due = self._clock() + self._config.settle_time

    def _wait_quiet(self, share: Share, path: Path) -> None:
        self._pending[path] = _Pending(
            share, self._clock() + self._config.poll_quiet, file_stat(path)
        )

    def _on_moved(self, share: Share, src: Path, dest: Path) -> None:
        src_temp = is_temporary(src, share.path)
        self._pending.pop(src, None)
        published = self._publisher.published()
        src_owner = None if src_temp else self._owner(src, published)
        if src_owner is not None:
            self._settle(share, src_owner)  # the file left (or moved inside) a folder item
        dest_temp = is_temporary(dest, share.path)
        if src in published and not dest_temp and self._owner(dest, published) is None:
            self._call("move", self._publisher.moved, src, dest)
            return
        if src in published:
            self._call("unpublish", self._publisher.unpublish, src)
        if not dest_temp:
            # A rename to the final name means the writer is done with it.
            self._settle(share, dest)

    def _on_dir_moved(self, share: Share, src: Path, dest: Path) -> None:
        """A folder item moved as a whole; its files' own move events follow and are no-ops."""
        if src in self._publisher.published() and not is_temporary(dest, share.path):
            self._call("move", self._publisher.moved, src, dest)

    def _on_dir_deleted(self, folder: Path) -> None:
        for path in [p for p in self._pending if p.is_relative_to(folder)]:
            del self._pending[path]
        for path in self._publisher.published():
            if path.is_relative_to(folder):
                self._call("unpublish", self._publisher.unpublish, path)

    def _run_due(self) -> None:
        now = self._clock()
        targets: dict[Path, str] = {}
        for path, pending in list(self._pending.items()):
            if pending.due is None or pending.due > now:
                continue
            # One lstat: a link is skipped, anything else is what a stat would say.
            found = _lstat(path)
            if found is None or S_ISLNK(found.st_mode):  # gone; renamed over, swapped in
                del self._pending[path]
                if found is not None:
                    self._skip_link(path)
                continue
            stat = (found.st_size, found.st_mtime_ns)
            if pending.stat is not None and stat != pending.stat:
                pending.stat, pending.due = stat, now + self._config.poll_quiet
            elif stat[0] == 0 and not self.polling and not S_ISDIR(found.st_mode):
                pending.due = None  # created empty: wait for the writes and the close
            else:
                del self._pending[path]
                targets[path] = pending.share.group
        # A file inside a published folder item republishes the folder, once per round
        # (compared as text: Path.parents for each of a 5,000-file round cost 4% of it).
        names = {str(p) for p in self._publisher.published()} if targets else set()
        round_ = {_owner_named(p, names) or p: g for p, g in targets.items()}
        many = getattr(self._publisher, "publish_many", None)
        if many is not None and len(round_) > 1:  # listed in batches (publisher.py)
            log.debug("watcher: publish %d files", len(round_))
            try:
                many(list(round_.items()))
            except Exception as exc:
                log.warning("cannot publish %d files: %s", len(round_), exc)
            return
        for target, group in round_.items():
            self._call("publish", self._publisher.publish, target, group)

    def _owner(self, path: Path, published: frozenset[Path] | None = None) -> Path | None:
        """The published folder item (POST /seed of a folder) that holds `path`, if any."""
        published = self._publisher.published() if published is None else published
        return next((p for p in path.parents if p in published), None)

    def _call(self, what: str, func: Any, *args: Any) -> None:
        """Call the publisher; one file's failure is one log line, never the end of the loop."""
        if what != "follow":
            log.debug("watcher: %s %s", what, " -> ".join(str(a) for a in args[:2]))
        try:
            func(*args)
        except Exception as exc:
            log.warning("cannot %s %s: %s", what, args[0], exc)

    # -- start-up reconciliation ----------------------------------------------
    def _reconcile(self) -> None:
        published = self._publisher.published()
        seen = 0
        for share in self._shares:
            for path in walk_files(share.path):
                seen += 1
                if path not in self._pending:
                    self._wait_quiet(share, path)
                    self._pending[path].due = self._reconcile_due(path)
            for path in published:
                # Gone, or replaced by a link while the curator was down.
                if path.is_relative_to(share.path) and (path.is_symlink() or not path.exists()):
                    self._call("unpublish", self._publisher.unpublish, path)
        log.info("reconciling %d file(s) in %d share folder(s)", seen, len(self._shares))

    def _reconcile_due(self, path: Path) -> float:
        """Publish now, unless the file changed so recently that it may still be written."""
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return self._clock()
        wait = self._config.poll_quiet - age
        return self._clock() + max(0.0, wait)


def _lstat(path: Path) -> os.stat_result | None:
    """lstat, or None when the path is gone."""
    try:
        return os.lstat(path)
    except OSError:
        return None


def _owner_named(path: Path, names: set[str]) -> Path | None:
    """The nearest folder above `path` whose text is in `names`, or None."""
    text = str(path)
    while (parent := os.path.dirname(text)) != text:
        if parent in names:
            return Path(parent)
        text = parent
    return None
