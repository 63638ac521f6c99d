"""The file-system side of the watcher: temporary names, observers, folder walks.

`start_observer` prefers inotify (close-after-write events) and falls back to
watchdog's PollingObserver, with a warning, where inotify cannot start (not
available, or its watch limit reached). Its snapshots are retaken when the tree
changed under the walk (see `_TornWalk`), so a rename never reads as delete + create.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from stat import S_ISDIR
from typing import Any

from watchdog import events as ev
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingEmitter
from watchdog.utils.dirsnapshot import DirectorySnapshot

from meshmedia.config import Share

from .sources import SYMLINK_RULE

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", "~")
WANTED: list[type[FileSystemEvent]] = [
    *(ev.FileCreatedEvent, ev.DirCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent),
    *(ev.FileMovedEvent, ev.DirMovedEvent, ev.FileDeletedEvent, ev.DirDeletedEvent),
]
"""The events the watcher acts on; inotify is asked for these alone. Asked for every
event, each file the publisher hashed came back as 8 more (IN_OPEN and IN_CLOSE_NOWRITE of
the file and of the folders it opened on the way), each through watchdog's three threads
and the watcher's queue, and every new file as a DirModifiedEvent of its folder: a
5,000-file burst took 8.8 s, 5.5 s without them."""


def is_temporary(path: Path, root: Path) -> bool:
    """True for names a writer uses before the final rename (and for dot-files/folders)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    if not parts:
        return True
    # Dot-files and dot-folders cover rsync's `.name.XXXXXX` as well.
    return any(p.startswith(".") for p in parts) or parts[-1].lower().endswith(TEMP_SUFFIXES)


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: only hands events to the worker's queue."""

    def __init__(self, events: queue.Queue[Any], share: Share) -> None:
        self._events = events
        self._share = share

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Queue the event with the share it belongs to."""
        self._events.put((self._share, event))


def start_observer(
    shares: Sequence[Share],
    events: queue.Queue[Any],
    *,
    force_polling: bool,
    poll_interval: float,
) -> tuple[BaseObserver, bool]:
    """Watch every share recursively, events as `(share, event)` into `events`.

    Returns the started observer and whether it polls.
    """
    if not force_polling:
        observer = Observer()
        try:
            _schedule(observer, shares, events)
            observer.start()
        except OSError as exc:
            log.warning("inotify unavailable (%s); falling back to polling", exc)
            observer.unschedule_all()
        else:
            return observer, False
    observer = BaseObserver(_SnapshotPollingEmitter, timeout=poll_interval)
    _schedule(observer, shares, events)
    observer.start()
    log.info("polling share folders every %.1f s", poll_interval)
    return observer, True


def _schedule(observer: BaseObserver, shares: Sequence[Share], events: queue.Queue[Any]) -> None:
    for share in shares:
        observer.schedule(
            _Handler(events, share), str(share.path), recursive=True, event_filter=WANTED
        )


SNAPSHOT_TRIES = 4


class _TornWalk:
    """stat/listdir for one DirectorySnapshot, noting signs that the tree changed meanwhile.

    A folder renamed between the listing of its parent and its own stat (or
    listing) is missing from a snapshot under both names: the diffs would say
    "deleted", then "created", and the watcher would unpublish a folder item
    that was only renamed.
    """

    def __init__(self) -> None:
        self.torn = False

    def stat(self, path: str) -> os.stat_result:
        # Not following links: a link to a folder is one entry (the watcher skips
        # it), never a walk into the folder it points at.
        try:
            return os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            self.torn = True  # listed a moment ago, gone now
            raise

    def listdir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        try:
            return os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            self.torn = True
            raise

    def changed_since(self, snapshot: DirectorySnapshot) -> bool:
        """A folder's entries changed after it was read, or a folder was seen twice."""
        seen: dict[tuple[int, int], str | bytes] = {}
        for path in snapshot.paths:
            before = snapshot.stat_info(path)
            if not S_ISDIR(before.st_mode):
                continue
            ident = (before.st_ino, before.st_dev)
            twin = seen.setdefault(ident, path)
            if twin != path and os.path.realpath(twin) != os.path.realpath(path):
                return True  # moved from a folder already walked to one walked later
            try:
                after = os.stat(path)
            except OSError:
                return True
            if (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns):
                return True
        return False


def consistent_snapshot(path: str) -> DirectorySnapshot:
    """A snapshot of `path`, retaken (a few times at most) while the walk was torn."""
    for _ in range(SNAPSHOT_TRIES - 1):
        walk = _TornWalk()
        snapshot = DirectorySnapshot(path, stat=walk.stat, listdir=walk.listdir)
        if not walk.torn and not walk.changed_since(snapshot):
            return snapshot
        log.debug("share folder %s changed during a poll; taking it again", path)
    walk = _TornWalk()  # busy all along: take it as it comes (links still not followed)
    return DirectorySnapshot(path, stat=walk.stat, listdir=walk.listdir)


class _SnapshotPollingEmitter(PollingEmitter):
    """watchdog's PollingEmitter, with snapshots that never tear a rename in two."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # PollingEmitter takes every snapshot (the first one too) through this hook.
        self._take_snapshot = lambda: consistent_snapshot(self.watch.path)


def file_stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the path is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def walk_files(root: Path) -> Iterable[Path]:
    """Every regular file under root with a final (non-temporary) name; symbolic links
    (to files or folders) are skipped with a warning naming them, never followed."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            if not is_temporary(path, root) and path.is_symlink():
                log.warning("skipping symbolic link %s: %s", path, SYMLINK_RULE)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (Path(folder) / d).is_symlink()]
        for name in files:
            path = Path(folder) / name
            if not is_temporary(path, root) and not path.is_symlink() and path.is_file():
                yield path
