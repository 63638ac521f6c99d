"""The torrents the engine holds: handle, role and latest status by info hash, under one Condition.

The facade adds and removes torrents; the alert thread replaces statuses and
records renames; readers take frozen statuses and may wait for a state. A
torrent's handle never leaves the engine package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from enum import Enum
from typing import Any

from meshmedia.errors import EngineError

from .snapshots import EngineTally, TorrentState, TorrentStatus


class Role(str, Enum):
    """Why the engine holds a torrent (stored with its resume data as the value)."""

    SEED = "seed"  # a complete file of ours, published
    DOWNLOAD = "download"


_BUSY_STATES = (TorrentState.CHECKING, TorrentState.METADATA, TorrentState.DOWNLOADING)


class TorrentTable:
    """Every torrent of one session; thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._handles: dict[str, Any] = {}
        self._roles: dict[str, Role] = {}
        self._statuses: dict[str, TorrentStatus] = {}
        # downloads whose last pieces may still sit in the disk write buffer: not
        # SEEDING (nor "finished") until libtorrent confirms the flush
        self._unflushed: set[str] = set()
        self._renamed: dict[str, dict[int, str]] = {}
        self._done: set[str] = set()  # of the unflushed, those libtorrent says are finished
        self._busy: set[str] = set()  # checking, fetching metadata, downloading, or moving bytes
        # torrents added or with a new status since the last take_touched(): only these
        # can need their resume data saved (asking 5,000 idle seeds took 0.1-1.2 s a tick)
        self._touched: set[str] = set()

    # -- adding and removing ---------------------------------------------------
    def track(
        self,
        ih: str,
        handle: Any,
        role: Role,
        status: TorrentStatus,
        *,
        complete: bool,
        renamed: dict[int, str] | None = None,
    ) -> None:
        """Hold a torrent just added to the session; `complete`: no flush to wait for."""
        with self._cond:
            self._handles[ih] = handle
            self._roles[ih] = role
            if not complete:
                self._unflushed.add(ih)
            if renamed is not None:
                self._renamed[ih] = renamed
            self._statuses[ih] = self._adjusted(status)
            self._touched.add(ih)
            self._cond.notify_all()

    def expect(self, ih: str, role: Role) -> None:
        """A torrent is being added with `role`: its first alerts (a seed's finished and
        resume data) may come before track(); role() already answers for it."""
        with self._cond:
            self._roles.setdefault(ih, role)

    def unexpect(self, ih: str) -> None:
        """An expected torrent was not added after all."""
        with self._cond:
            if ih not in self._handles:
                self._roles.pop(ih, None)

    def forget(self, ih: str) -> Any:
        """Drop a torrent and return its handle; EngineError when it is unknown."""
        with self._cond:
            handle = self._handles.pop(ih, None)
            if handle is None:
                raise EngineError(f"unknown torrent {ih}")
            self._roles.pop(ih, None)
            self._statuses.pop(ih, None)
            self._unflushed.discard(ih)
            self._done.discard(ih)
            self._busy.discard(ih)
            self._renamed.pop(ih, None)
            self._touched.discard(ih)
            self._cond.notify_all()
        return handle

    # -- looking ---------------------------------------------------------------
    def knows(self, ih: str) -> bool:
        """True when the torrent is held."""
        with self._cond:
            return ih in self._handles

    def handle(self, ih: str) -> Any:
        """The torrent's libtorrent handle; EngineError when it is unknown."""
        with self._cond:
            handle = self._handles.get(ih)
        if handle is None:
            raise EngineError(f"unknown torrent {ih}")
        return handle

    def handles(self) -> dict[str, Any]:
        """Every handle by info hash (a copy)."""
        with self._cond:
            return dict(self._handles)

    def seed_handles(self) -> list[Any]:
        """The handles of the torrents held as seeds."""
        with self._cond:
            return [h for ih, h in self._handles.items() if self._roles.get(ih) == Role.SEED]

    def take_touched(self) -> dict[str, Any]:
        """The handles of torrents added or given a new status since the last call."""
        with self._cond:
            touched, self._touched = self._touched, set()
            return {ih: self._handles[ih] for ih in touched if ih in self._handles}

    def role(self, ih: str) -> Role | None:
        """The torrent's role, None when it is not held (removed meanwhile)."""
        with self._cond:
            return self._roles.get(ih)

    def status(self, ih: str) -> TorrentStatus | None:
        """The torrent's latest status, None when unknown."""
        with self._cond:
            return self._statuses.get(ih)

    def statuses(self) -> tuple[TorrentStatus, ...]:
        """Every torrent's latest status, by name."""
        with self._cond:
            return tuple(sorted(self._statuses.values(), key=lambda t: (t.name, t.info_hash)))

    def tally(self) -> EngineTally:
        """Every torrent's latest status counted by state, with peers and rates summed."""
        states: dict[str, int] = {}
        peers = down = up = 0
        with self._cond:
            for t in self._statuses.values():
                states[t.state.value] = states.get(t.state.value, 0) + 1
                peers += t.num_peers
                down += t.download_rate
                up += t.upload_rate
        return EngineTally(states, peers, down, up)

    def renamed(self, ih: str) -> dict[int, str]:
        """The files of the torrent renamed so far, by index (a copy)."""
        with self._cond:
            return dict(self._renamed.get(ih, {}))

    def __len__(self) -> int:
        with self._cond:
            return len(self._handles)

    # -- the alert thread's changes ---------------------------------------------
    def update(self, statuses: Iterable[TorrentStatus]) -> None:
        """Replace the statuses of held torrents (others are ignored) and wake waiters."""
        with self._cond:
            for status in statuses:
                if status.info_hash in self._handles:
                    adjusted = self._adjusted(status)
                    if adjusted != self._statuses.get(status.info_hash):
                        # an idle seed's status is posted again unchanged: keep the one held
                        self._statuses[status.info_hash] = adjusted
                    self._touched.add(status.info_hash)
            self._cond.notify_all()

    def unflushed(self, ih: str) -> bool:
        """True while a finished download's last pieces may not be on disk yet."""
        with self._cond:
            return ih in self._unflushed

    def finished_unflushed(self) -> dict[str, Any]:
        """The handles of downloads libtorrent reports finished (in the latest statuses)
        whose flush to disk is not confirmed yet (a copy)."""
        with self._cond:
            return {
                ih: self._handles[ih] for ih in self._unflushed & self._done if ih in self._handles
            }

    def flushed(self, ih: str) -> bool:
        """Record that a download's pieces are on disk; True when it was waiting for that."""
        with self._cond:
            if ih not in self._unflushed:
                return False
            self._unflushed.discard(ih)
            self._done.discard(ih)
            return True

    def record_rename(self, ih: str, index: int, name: str) -> None:
        """A file of the torrent now has this name (relative to its save path)."""
        with self._cond:
            self._renamed.setdefault(ih, {})[index] = name
            self._touched.add(ih)

    def busy(self) -> bool:
        """True while a torrent is checked, fetches metadata, downloads, or moves bytes
        (by the latest statuses); False when every one is an idle seed, paused or failed."""
        with self._cond:
            return bool(self._busy)

    def _adjusted(self, status: TorrentStatus) -> TorrentStatus:
        if status.state == TorrentState.SEEDING and status.info_hash in self._unflushed:
            self._done.add(status.info_hash)
            status = replace(status, state=TorrentState.DOWNLOADING)
        if status.state in _BUSY_STATES or status.upload_rate or status.download_rate:
            self._busy.add(status.info_hash)
        else:
            self._busy.discard(status.info_hash)
        return status

    # -- waiting -----------------------------------------------------------------
    def wait_for(self, ih: str, state: TorrentState, timeout: float) -> TorrentStatus:
        """Block until the torrent reaches `state`; TimeoutError after `timeout` seconds.

        Raises EngineError when the torrent is removed or fails while waiting.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                current = self._statuses.get(ih)
                if current is None:
                    raise EngineError(f"unknown torrent {ih}")
                if current.state == state:
                    return current
                if current.state == TorrentState.ERROR:
                    raise EngineError(f"torrent {ih} failed: {current.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{ih} is {current.state.value} "
                        f"({current.progress:.1%}), not {state.value}, after {timeout}s"
                    )
                self._cond.wait(left)
