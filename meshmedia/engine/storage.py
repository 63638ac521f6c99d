"""Moving and deleting a torrent's files: rename_file, move_storage and remove_torrent's
delete_files, each confirmed by its alert.

`relocate` asks libtorrent, then waits (on the caller's thread) for the alert
that says it was done or why it failed; seeding goes on from the new place.
libtorrent deletes a removed torrent's files later, on its disk thread: a file
put at the same path meanwhile (an item adopted from its final place after a
crash, linked into the staging folder 10 ms after) was deleted with them, so
`remove` waits for the deletion too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import libtorrent as lt

from meshmedia.errors import EngineError

from .convert import hex_of
from .table import TorrentTable

log = logging.getLogger(__name__)


class _Waiter:
    """One pending confirmation (a file rename, a storage move)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None


class Storage:
    """Renames and moves of the torrents of `table`, confirmed by their alerts."""

    def __init__(self, table: TorrentTable) -> None:
        """Record confirmed renames in `table`."""
        self._table = table
        self._lock = threading.Lock()
        self._waiters: dict[Hashable, _Waiter] = {}

    def relocate(
        self, ih: str, save_path: Path, renames: Mapping[int, str], timeout: float
    ) -> None:
        """Rename files (index -> new name), then move the storage to `save_path`; returns
        once libtorrent confirms each. EngineError on a failure or after `timeout`."""
        handle = self._table.handle(ih)
        deadline = time.monotonic() + timeout
        for index, new_name in renames.items():
            waiter = self._expect(("rename", ih, int(index)))
            handle.rename_file(int(index), new_name)
            self._await(waiter, deadline, f"renaming file {index} of {ih} to {new_name}")
        waiter = self._expect(("move", ih))
        handle.move_storage(str(save_path))
        self._await(waiter, deadline, f"moving {ih} to {save_path}")

    def remove(self, session: Any, handle: Any, ih: str, timeout: float) -> None:
        """Remove the torrent and delete its files; returns once libtorrent says they are
        gone. A failure or a timeout is logged (the torrent is removed either way)."""
        waiter = self._expect(("delete", ih))
        session.remove_torrent(handle, lt.session.delete_files)
        try:
            self._await(waiter, time.monotonic() + timeout, f"deleting the files of {ih}")
        except EngineError as exc:
            with self._lock:
                self._waiters.pop(("delete", ih), None)
            log.warning("%s", exc)

    def _expect(self, key: Hashable) -> _Waiter:
        waiter = _Waiter()
        with self._lock:
            self._waiters[key] = waiter
        return waiter

    def _resolve(self, key: Hashable, error: str | None) -> None:
        with self._lock:
            waiter = self._waiters.pop(key, None)
        if waiter is not None:
            waiter.error = error
            waiter.done.set()

    @staticmethod
    def _await(waiter: _Waiter, deadline: float, what: str) -> None:
        if not waiter.done.wait(max(0.0, deadline - time.monotonic())):
            raise EngineError(f"timed out {what}")
        if waiter.error:
            raise EngineError(f"failed {what}: {waiter.error}")

    # -- alert handlers ----------------------------------------------------------
    def on_file_renamed(self, alert: Any) -> None:
        """file_renamed_alert."""
        ih, index = hex_of(alert.handle.info_hashes()), int(alert.index)
        self._table.record_rename(ih, index, str(alert.new_name()))
        self._resolve(("rename", ih, index), None)

    def on_file_rename_failed(self, alert: Any) -> None:
        """file_rename_failed_alert."""
        key = ("rename", hex_of(alert.handle.info_hashes()), int(alert.index))
        self._resolve(key, alert.error.message())

    def on_storage_moved(self, alert: Any) -> None:
        """storage_moved_alert."""
        self._resolve(("move", hex_of(alert.handle.info_hashes())), None)

    def on_torrent_deleted(self, alert: Any) -> None:
        """torrent_deleted_alert (the handle may be gone: the alert carries the hashes)."""
        self._resolve(("delete", hex_of(alert.info_hashes)), None)

    def on_torrent_delete_failed(self, alert: Any) -> None:
        """torrent_delete_failed_alert."""
        self._resolve(("delete", hex_of(alert.info_hashes)), alert.error.message())

    def on_storage_moved_failed(self, alert: Any) -> None:
        """storage_moved_failed_alert."""
        key = ("move", hex_of(alert.handle.info_hashes()))
        self._resolve(key, f"{alert.file_path()}: {alert.error.message()}")
