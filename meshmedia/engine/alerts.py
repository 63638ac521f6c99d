"""The engine's alert thread: one loop, one dispatch table, handlers that never kill it.

An alert is valid only until the next `pop_alerts()` (touching it later crashes
the process), so every handler copies what it needs out of its alert at once
and passes plain values on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import libtorrent as lt

from meshmedia.errors import EngineError
from meshmedia.store import ResumeRecord, Store

from .convert import hex_of, status_from_lt
from .resume import file_paths, file_stats
from .snapshots import EngineEvent, TorrentState, TorrentStatus

log = logging.getLogger(__name__)

UPDATE_INTERVAL = 0.5
SLOW_HANDLER = 0.1
COUNTERS_INTERVAL = 300.0
"""Seconds between saves for changed counters alone (bytes up/down, active time)."""

# libtorrent's resume_data_flags_t bits (the binding names only their union,
# `only_if_modified` = 248): an idle seed's counters change every second, so
# `only_if_modified` re-saved every torrent every second.
IF_COUNTERS_CHANGED = 8
IF_MODIFIED_BUT_COUNTERS = int(lt.torrent_handle.only_if_modified) & ~IF_COUNTERS_CHANGED


class _Waiter:
    """One pending confirmation (a file rename, a storage move)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None


class AlertLoop:
    """Base of Engine: the alert thread, its handlers and the shared state they update."""

    def __init__(self, session: Any, store: Store, resume_interval: float) -> None:
        self._session = session
        self._store = store
        self._resume_interval = resume_interval
        self._cond = threading.Condition()
        self._handles: dict[str, Any] = {}
        self._roles: dict[str, str] = {}
        self._statuses: dict[str, TorrentStatus] = {}
        self._subscribers: list[Callable[[EngineEvent], None]] = []
        self._waiters: dict[tuple[Any, ...], _Waiter] = {}
        self._unsaved: set[str] = set()
        # downloads whose last pieces may still sit in the disk write buffer: not
        # SEEDING (nor "finished") until libtorrent confirms the flush
        self._unflushed: set[str] = set()
        self._renamed: dict[str, dict[int, str]] = {}
        self._stats: dict[str, int] | None = None
        self._stop = threading.Event()
        self._dispatch: dict[str, Callable[[Any], None]] = {
            name[len("_on_") :] + "_alert": getattr(self, name)
            for name in dir(self)
            if name.startswith("_on_")
        }
        self._thread = threading.Thread(target=self._run, name="meshmedia-alerts", daemon=True)

    def start(self) -> None:
        """Start the alert thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the alert thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    # -- the loop --------------------------------------------------------------
    def _run(self) -> None:
        next_update = 0.0
        next_save = time.monotonic() + self._resume_interval
        next_counters = time.monotonic() + COUNTERS_INTERVAL
        while not self._stop.is_set():
            self._session.wait_for_alert(100)
            for alert in self._session.pop_alerts():
                self._handle_alert(alert)
            now = time.monotonic()
            if now >= next_update:
                self._session.post_torrent_updates()
                next_update = now + UPDATE_INTERVAL
            if now >= next_save:
                counters = now >= next_counters
                self._save_modified(counters)
                next_save = now + self._resume_interval
                if counters:
                    next_counters = now + COUNTERS_INTERVAL

    def _handle_alert(self, alert: Any) -> None:
        name = type(alert).__name__
        handler = self._dispatch.get(name)
        if handler is None:
            return
        started = time.monotonic()
        try:
            handler(alert)
        except Exception:
            log.exception("handler for %s failed", name)
        elapsed = time.monotonic() - started
        if elapsed > SLOW_HANDLER:
            log.warning("handler for %s took %.3f s", name, elapsed)

    def _emit(self, kind: str, info_hash: str, message: str = "") -> None:
        event = EngineEvent(kind, info_hash, message)
        log.debug("event %s", event)
        with self._cond:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r failed on %s", callback, event)

    # -- resume data -------------------------------------------------------------
    def _save_modified(self, counters: bool) -> None:
        """Save the torrents whose progress, state, config or metadata changed, and
        with `counters` those whose transfer counters alone changed."""
        which = IF_MODIFIED_BUT_COUNTERS | (IF_COUNTERS_CHANGED if counters else 0)
        with self._cond:
            handles = list(self._handles.values())
        for handle in handles:
            if handle.need_save_resume_data(which):
                handle.save_resume_data(lt.torrent_handle.save_info_dict | which)

    def _save_all_and_wait(self, timeout: float) -> None:
        with self._cond:
            pending = dict(self._handles)
            self._unsaved = set(pending)
        for handle in pending.values():
            handle.save_resume_data(lt.torrent_handle.save_info_dict)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._unsaved and time.monotonic() < deadline:
                self._cond.wait(0.1)
            if self._unsaved:
                log.warning("resume data not saved for %s", sorted(self._unsaved))

    def _on_save_resume_data(self, alert: Any) -> None:
        params = alert.params
        ih = hex_of(params.info_hashes)
        data = lt.write_resume_data_buf(params)
        paths = file_paths(params.ti, dict(params.renamed_files))
        files = file_stats(params.save_path, paths)
        with self._cond:
            role = self._roles.get(ih)
        if role is None:
            return  # removed meanwhile: do not bring it back
        self._store.save_resume(ResumeRecord(ih, bytes(data), role, files))
        log.debug("saved resume data of %s (%d bytes)", ih, len(data))
        self._saved(ih)

    def _on_save_resume_data_failed(self, alert: Any) -> None:
        ih = hex_of(alert.handle.info_hashes())
        log.debug("no resume data for %s: %s", ih, alert.message())
        self._saved(ih)

    def _saved(self, ih: str) -> None:
        with self._cond:
            self._unsaved.discard(ih)
            self._cond.notify_all()

    # -- status --------------------------------------------------------------------
    def _on_state_update(self, alert: Any) -> None:
        updates = [status_from_lt(st) for st in alert.status]
        with self._cond:
            for status in updates:
                if status.info_hash in self._handles:
                    self._statuses[status.info_hash] = self._adjusted(status)
            self._cond.notify_all()

    def _adjusted(self, status: TorrentStatus) -> TorrentStatus:
        if status.state == TorrentState.SEEDING and status.info_hash in self._unflushed:
            return replace(status, state=TorrentState.DOWNLOADING)
        return status

    def _on_state_changed(self, _alert: Any) -> None:
        self._session.post_torrent_updates()

    def _on_torrent_checked(self, _alert: Any) -> None:
        self._session.post_torrent_updates()

    def _on_session_stats(self, alert: Any) -> None:
        values = dict(alert.values)
        with self._cond:
            self._stats = {k: int(v) for k, v in values.items()}
            self._cond.notify_all()

    def _session_stats(self, timeout: float) -> dict[str, int]:
        with self._cond:
            self._stats = None
        self._session.post_session_stats()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._stats is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("no session stats from libtorrent")
                self._cond.wait(0.1)
            return dict(self._stats)

    # -- events ----------------------------------------------------------------------
    def _on_torrent_finished(self, alert: Any) -> None:
        ih = hex_of(alert.handle.info_hashes())
        with self._cond:
            unflushed = ih in self._unflushed
        if unflushed:
            alert.handle.flush_cache()
            return
        alert.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        self._emit("finished", ih)

    def _on_cache_flushed(self, alert: Any) -> None:
        ih = hex_of(alert.handle.info_hashes())
        with self._cond:
            if ih not in self._unflushed:
                return
            self._unflushed.discard(ih)
        alert.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        self._session.post_torrent_updates()
        log.info("download %s finished", ih)
        self._emit("finished", ih)

    def _on_metadata_received(self, alert: Any) -> None:
        ih = hex_of(alert.handle.info_hashes())
        alert.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        self._emit("metadata", ih)

    def _on_torrent_error(self, alert: Any) -> None:
        ih, message = hex_of(alert.handle.info_hashes()), alert.error.message()
        log.warning("torrent %s failed: %s", ih, message)
        self._emit("error", ih, message)

    def _on_file_error(self, alert: Any) -> None:
        ih, message = hex_of(alert.handle.info_hashes()), _file_error_message(alert)
        log.warning("file error in %s: %s", ih, message)
        self._emit("file_error", ih, message)

    def _on_hash_failed(self, alert: Any) -> None:
        ih, piece = hex_of(alert.handle.info_hashes()), int(alert.piece_index)
        log.warning("piece %d of %s failed its hash check", piece, ih)
        self._emit("hash_failed", ih, f"piece {piece}")

    def _on_torrent_removed(self, alert: Any) -> None:
        self._emit("removed", hex_of(alert.info_hashes))

    def _on_listen_failed(self, alert: Any) -> None:
        log.warning("listening failed: %s", alert.message())

    # -- confirmations -------------------------------------------------------------
    def _expect(self, key: tuple[Any, ...]) -> _Waiter:
        waiter = _Waiter()
        with self._cond:
            self._waiters[key] = waiter
        return waiter

    def _resolve(self, key: tuple[Any, ...], error: str | None) -> None:
        with self._cond:
            waiter = self._waiters.pop(key, None)
        if waiter is not None:
            waiter.error = error
            waiter.done.set()

    def _await(self, waiter: _Waiter, deadline: float, what: str) -> None:
        if not waiter.done.wait(max(0.0, deadline - time.monotonic())):
            raise EngineError(f"timed out {what}")
        if waiter.error:
            raise EngineError(f"failed {what}: {waiter.error}")

    def _on_file_renamed(self, alert: Any) -> None:
        ih, index = hex_of(alert.handle.info_hashes()), int(alert.index)
        with self._cond:
            self._renamed.setdefault(ih, {})[index] = str(alert.new_name())
        self._resolve(("rename", ih, index), None)

    def _on_file_rename_failed(self, alert: Any) -> None:
        key = ("rename", hex_of(alert.handle.info_hashes()), int(alert.index))
        self._resolve(key, alert.error.message())

    def _on_storage_moved(self, alert: Any) -> None:
        self._resolve(("move", hex_of(alert.handle.info_hashes())), None)

    def _on_storage_moved_failed(self, alert: Any) -> None:
        key = ("move", hex_of(alert.handle.info_hashes()))
        self._resolve(key, f"{alert.file_path()}: {alert.error.message()}")


def _file_error_message(alert: Any) -> str:
    return f"{alert.filename()}: {alert.error.message()}"
