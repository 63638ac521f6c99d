"""The file-system side of the watcher: temporary names, observers, folder walks.

`start_observer` prefers inotify (close-after-write events) and falls back to
watchdog's PollingObserver, with a warning, where inotify cannot start (not
available, or its watch limit reached).
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .config import Share

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", "~")


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
    observer = PollingObserver(timeout=poll_interval)
    _schedule(observer, shares, events)
    observer.start()
    log.info("polling share folders every %.1f s", poll_interval)
    return observer, True


def _schedule(observer: BaseObserver, shares: Sequence[Share], events: queue.Queue[Any]) -> None:
    for share in shares:
        observer.schedule(_Handler(events, share), str(share.path), recursive=True)


def file_stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the path is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def walk_files(root: Path) -> Iterable[Path]:
    """Every regular file under root with a final (non-temporary) name."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not is_temporary(path, root) and path.is_file():
                yield path
