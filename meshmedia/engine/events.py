"""What the alert thread learns about torrents: fresh statuses, and events for subscribers.

Subscribers are called on the alert thread with plain EngineEvent values; a
subscriber that raises is logged and the others still hear the event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import libtorrent as lt

from .convert import hex_of, status_from_lt
from .snapshots import EngineEvent, EventKind
from .table import Role, TorrentTable

# Statuses of idle seeds are asked for every 5 s, not every 0.5 s: libtorrent posts a
# status for every torrent that ever moved data each time its time counters tick, and
# handling those was the busiest idle work of both daemons (engine.md "Idle refresh").
IDLE_UPDATE_INTERVAL = 5.0

log = logging.getLogger(__name__)

Subscriber = Callable[[EngineEvent], None]


class TorrentEvents:
    """The alert handlers that keep the table's statuses fresh and tell subscribers."""

    def __init__(
        self, session: Any, table: TorrentTable, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Handle the alerts of `session` about the torrents of `table`."""
        self._session: Any = session
        self._table = table
        self._clock = clock
        self._posted_at = -IDLE_UPDATE_INTERVAL
        self.posted = 0  # post_torrent_updates calls (tests, benchmarks)
        self._cond = threading.Condition()
        self._subscribers: list[Subscriber] = []
        self._stats: dict[str, int] | None = None
        self._changed = False  # a state changed in this batch of alerts

    def close(self) -> None:
        """Let go of the session (the engine is closing)."""
        self._session = None

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(event)` on the alert thread for every EngineEvent."""
        with self._cond:
            self._subscribers.append(callback)

    def emit(self, kind: EventKind, info_hash: str, message: str = "") -> None:
        """Tell every subscriber; one that raises is logged, the others still hear it."""
        event = EngineEvent(kind, info_hash, message)
        log.debug("event %s", event)
        with self._cond:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r failed on %s", callback, event)

    # -- statuses ----------------------------------------------------------------
    def on_state_update(self, alert: Any) -> None:
        """state_update_alert: the statuses libtorrent posted (post_torrent_updates)."""
        self._table.update([status_from_lt(st) for st in alert.status])

    def tick(self) -> None:
        """Every UPDATE_INTERVAL: refresh while a torrent is busy (table.busy()), and
        every IDLE_UPDATE_INTERVAL when all are idle seeds. A state change refreshes at
        once (after_alerts) whatever the interval."""
        if self._table.busy() or self._clock() - self._posted_at >= IDLE_UPDATE_INTERVAL:
            self.refresh()

    def refresh(self) -> None:
        """Ask libtorrent for fresh statuses (they come as a state_update_alert), and flush
        again any finished download whose flush was never confirmed."""
        self._posted_at = self._clock()
        self.posted += 1
        self._session.post_torrent_updates()
        for handle in self._table.finished_unflushed().values():
            # With 5,000 torrents one download of a burst stayed "downloading" at 100%
            # (its finished or flushed alert lost in a full alert queue) and the client
            # polled it every 20 ms: asking again is harmless, the answer marks it flushed.
            handle.flush_cache()

    def on_state_changed(self, _alert: Any) -> None:
        """state_changed_alert, torrent_checked_alert: fresh statuses after this batch."""
        self._changed = True

    def after_alerts(self) -> None:
        """After a batch of alerts: one refresh for all its state changes (a refresh for
        each made 15,000 post_torrent_updates while 5,000 seeds were added)."""
        if self._changed:
            self._changed = False
            self.refresh()

    def on_session_stats(self, alert: Any) -> None:
        """session_stats_alert: the counters `session_stats` waits for."""
        values = {k: int(v) for k, v in dict(alert.values).items()}
        with self._cond:
            self._stats = values
            self._cond.notify_all()

    def session_stats(self, timeout: float) -> dict[str, int]:
        """libtorrent's session counters by name; TimeoutError when none come."""
        with self._cond:
            self._stats = None
        self._session.post_session_stats()
        with self._cond:
            if not self._cond.wait_for(lambda: self._stats is not None, timeout):
                raise TimeoutError("no session stats from libtorrent")
            return dict(self._stats or {})

    # -- events ------------------------------------------------------------------
    def on_torrent_finished(self, alert: Any) -> None:
        """torrent_finished_alert: "finished" once the last pieces are on disk."""
        ih = hex_of(alert.handle.info_hashes())
        if self._table.unflushed(ih):
            alert.handle.flush_cache()
            return
        if self._table.role(ih) != Role.SEED:  # a new seed: the resume tick saves it
            alert.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        self.emit(EventKind.FINISHED, ih)

    def on_cache_flushed(self, alert: Any) -> None:
        """cache_flushed_alert: a finished download's pieces are on disk."""
        ih = hex_of(alert.handle.info_hashes())
        if not self._table.flushed(ih):
            return
        alert.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        self.refresh()
        log.info("download %s finished", ih)
        self.emit(EventKind.FINISHED, ih)

    def on_metadata_received(self, alert: Any) -> None:
        """metadata_received_alert: a magnet's torrent is known; save it with the resume data."""
        ih = hex_of(alert.handle.info_hashes())
        alert.handle.save_resume_data(lt.torrent_handle.save_info_dict)
        self.emit(EventKind.METADATA, ih)

    def on_torrent_error(self, alert: Any) -> None:
        """torrent_error_alert."""
        ih, message = hex_of(alert.handle.info_hashes()), alert.error.message()
        log.warning("torrent %s failed: %s", ih, message)
        self.emit(EventKind.ERROR, ih, message)

    def on_file_error(self, alert: Any) -> None:
        """file_error_alert (a full disk among others)."""
        ih = hex_of(alert.handle.info_hashes())
        message = f"{alert.filename()}: {alert.error.message()}"
        log.warning("file error in %s: %s", ih, message)
        self.emit(EventKind.FILE_ERROR, ih, message)

    def on_hash_failed(self, alert: Any) -> None:
        """hash_failed_alert: a piece failed its check (and is downloaded again)."""
        ih, piece = hex_of(alert.handle.info_hashes()), int(alert.piece_index)
        log.warning("piece %d of %s failed its hash check", piece, ih)
        self.emit(EventKind.HASH_FAILED, ih, f"piece {piece}")

    def on_torrent_removed(self, alert: Any) -> None:
        """torrent_removed_alert."""
        self.emit(EventKind.REMOVED, hex_of(alert.info_hashes))

    def on_listen_failed(self, alert: Any) -> None:
        """listen_failed_alert."""
        log.warning("listening failed: %s", alert.message())
