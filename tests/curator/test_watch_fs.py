"""The observer asks inotify for the events the watcher acts on, and no others."""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Any

from watchdog.events import FileClosedEvent, FileCreatedEvent, FileMovedEvent

from meshmedia.config import Share
from meshmedia.curator.sources import regular_files
from meshmedia.curator.watch_fs import start_observer
from meshmedia.hashing import hash_file


def _drain(events: queue.Queue[Any], seconds: float) -> list[Any]:
    got = []
    try:
        while True:
            got.append(events.get(timeout=seconds)[1])
    except queue.Empty:
        return got


def test_reading_a_file_in_a_share_makes_no_event(tmp_path: Path) -> None:
    """The publisher opens every file it hashes and the folders on its way: asked for every
    event, each file published came back as 8 more (IN_OPEN, IN_CLOSE_NOWRITE of the file
    and its folders) through watchdog's three threads and the watcher's queue; a
    5,000-file burst took 8.8 s instead of 5.5 s."""
    share = Share("default", tmp_path / "share")
    (share.path / "d").mkdir(parents=True)
    kept = share.path / "d" / "kept.bin"
    kept.write_bytes(os.urandom(10_000))
    events: queue.Queue[Any] = queue.Queue()
    observer, polling = start_observer([share], events, force_polling=False, poll_interval=0.1)
    try:
        assert not polling
        for _ in range(3):
            regular_files(kept, share.path)
            hash_file(kept)
            os.listdir(share.path / "d")
        assert _drain(events, 0.3) == []
        staged = tmp_path / "new.bin"
        staged.write_bytes(b"x" * 100)
        staged.rename(share.path / "d" / "new.bin")
        (share.path / "d" / "written.bin").write_bytes(b"y")
        got = _drain(events, 0.3)
        kinds = {type(e) for e in got}
        assert FileCreatedEvent in kinds or FileMovedEvent in kinds, got
        assert FileClosedEvent in kinds, got  # written and closed
        assert all(not e.is_directory or isinstance(e, FileMovedEvent) for e in got), got
    finally:
        observer.stop()
        observer.join(5)
