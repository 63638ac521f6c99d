"""The downloads under way: each wake of the main loop looks at every one (at most 32).

A finished download is verified and moved into place as a job on a worker
(work.py): hashing a large file and waiting for libtorrent's move never hold
up the other items. A download found at start-up whose files are already in
place (the daemon died between the move and its bookkeeping) is checked the
same way, and adopted instead of downloaded again. A full disk pauses it; one
with no peer dials the curator's addresses again (client/peers.py).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from meshmedia.engine import Engine, TorrentState, TorrentStatus
from meshmedia.manifest import validate_item
from meshmedia.store import ClientItem, ItemState

from .items import ActiveItems, Ledger, Notes, Problem, key_of
from .peers import CuratorPeers
from .place import InPlace, Placer
from .placement import final_path, is_disk_full, space_problem
from .work import Finished, Jobs

log = logging.getLogger(__name__)

PEER_REDIAL = 5.0  # seconds between dialling the x.pe peers of a download with none
# Seconds between DHT announces of a download under way. The curator's PEX names a peer
# that joined later only after 60 s (libtorrent's ut_pex), and a client behind a strict
# router can only dial: 40 MiB to three homes, curator at 2 MiB/s: the curator sent
# 1.28-1.61 copies without these announces (native_notes/nat.md, "Implementation").
DHT_ASK = 10.0


class Downloads:
    """Looks after the downloading items: placement, recovery, full disks, peers."""

    def __init__(
        self,
        *,
        engine: Engine,
        placer: Placer,
        active: ActiveItems,
        ledger: Ledger,
        jobs: tuple[Jobs, Jobs],
        min_free: int,
        peers: CuratorPeers,
    ) -> None:
        """`jobs`: the pools for checks of files in place and for placements; `peers`:
        the curator's addresses a download without peers dials again."""
        self._engine = engine
        self._placer = placer
        self._active = active
        self._ledger = ledger
        self._checks, self._placing = jobs
        self._min_free = min_free
        self._peers = peers
        self.download_dir = placer.download_dir

    def check_all(self) -> None:
        """One look at every download; an unexpected error fails that item only."""
        for ci in self._active.downloading():
            try:
                self._check(ci)
            except Exception as exc:
                log.exception("%s: unexpected error", ci.path)
                self._ledger.fail(ci, f"unexpected error: {type(exc).__name__}: {exc}")

    def finished(self, ih: str) -> None:
        """The engine says a download has every piece on disk."""
        notes = self._active.notes(ih)
        notes.finished = True
        notes.finished_at = notes.finished_at or time.monotonic()

    def disk_full(self, ih: str, message: str) -> None:
        """The engine could not write a download: pause it."""
        for ci in self._active.downloading():
            if ci.info_hash == ih:
                self._engine.remove(ih)
                self._ledger.pause(ci, f"the disk is full ({message}); download paused")

    def awaiting_status(self) -> bool:
        """True when a finished download waits for its status to say seeding (then the
        main loop looks again within a few tens of ms)."""
        for ci in self._active.downloading():
            ih = ci.info_hash or ""
            if self._active.notes(ih).finished and not self._placing.running(_place_key(ci)):
                return True
        return False

    def _check(self, ci: ClientItem) -> None:
        ih = ci.info_hash or ""
        if (placed := self._placing.done(_place_key(ci))) is not None:
            self._placed(ci, placed)
            return
        if self._placing.running(_place_key(ci)):
            return  # being verified and moved
        status = self._engine.status(ih)
        if status is None:
            self._ledger.save(ci, ItemState.QUEUED)
            return
        notes = self._active.notes(ih)
        if self._recovered(ci, status, notes) or self._bad_names(ci, status, notes):
            return
        if status.state == TorrentState.SEEDING and (notes.finished or status.total_download == 0):
            self._place(ci)
        elif status.state == TorrentState.ERROR and status.error and is_disk_full(status.error):
            self._engine.remove(ih)
            self._ledger.pause(ci, f"the disk is full ({status.error}); download paused")
        elif status.num_peers == 0 and status.state != TorrentState.SEEDING:
            self._reach_peers(ci, ih, notes)
        elif not notes.space_checked and status.total_wanted > 0:
            notes.space_checked = True
            needed = status.total_wanted - status.total_done
            if short := space_problem(self.download_dir, needed, self._min_free):
                self._engine.remove(ih)
                self._ledger.pause(ci, short)
        elif status.state == TorrentState.DOWNLOADING and self._due(notes):
            self._engine.find_peers(ih)

    def _recovered(self, ci: ClientItem, status: TorrentStatus, notes: Notes) -> bool:
        """A download found at start-up whose files are already in place and verified:
        queued again to be adopted (True). The check hashes on a worker; the download
        goes on meanwhile."""
        if notes.looked and not notes.recovering:
            return False
        notes.looked = True
        item = validate_item(ci.item)
        final = final_path(self.download_dir, item.path)
        if not notes.recovering:
            if status.state == TorrentState.SEEDING or not os.path.lexists(final):
                return False
            notes.recovering = True
        ih = ci.info_hash or ""
        key = ("in place", *key_of(ci), ih, item.sha256, item.xxh3, item.size)
        checked = self._checks.take(key, lambda: self._placer.check_in_place(item, final))
        if checked is None:
            return False
        notes.recovering = False
        if not isinstance(checked.value, InPlace):
            return False
        log.info("%s is in place already (placed before a restart): adopting it", final)
        if (data := self._engine.torrent_bytes(ih)) is not None:
            self._placer.learn_name(ih, data)  # adopted again under the torrent's own name
        current = self._engine.status(ih)
        self._placer.discard(ih, Path(current.save_path) if current else final)
        self._ledger.save(ci, ItemState.QUEUED)
        return True

    def _bad_names(self, ci: ClientItem, status: TorrentStatus, notes: Notes) -> bool:
        """True when the torrent (now known) names files it may not (then it is refused)."""
        ih = ci.info_hash or ""
        if notes.names_checked or (data := self._engine.torrent_bytes(ih)) is None:
            return False
        notes.names_checked = True
        if problem := self._placer.names_problem(data):
            self._placer.discard(ih, Path(status.save_path))
            self._ledger.fail(ci, problem)
            return True
        return False

    def _place(self, ci: ClientItem) -> None:
        """Verify the finished download and rename it into place, on a worker."""
        item = validate_item(ci.item)
        final = final_path(self.download_dir, item.path)
        ih = ci.info_hash or ""
        self._active.notes(ih).placing_at = time.monotonic()
        self._placing.start(_place_key(ci), lambda: self._placer.place(ci.url, item, ih, final))

    def _placed(self, ci: ClientItem, result: Finished[Problem | None]) -> None:
        problem = result.value if result.error is None else result.error
        if problem:
            self._ledger.fail(ci, problem)
            return
        notes = self._active.notes(ci.info_hash or "")
        seconds = time.monotonic() - (notes.finished_at or notes.placing_at)
        self._ledger.save(ci, ItemState.PLACED, error=None, attempts=0)
        final = final_path(self.download_dir, validate_item(ci.item).path)
        self._ledger.events.placed(ci, final, seconds)

    def _reach_peers(self, ci: ClientItem, ih: str, notes: Notes) -> None:
        """A download with no peer (restored after a restart, a link back up): dial every
        address of the curator again."""
        now = time.monotonic()
        if now - notes.dialed < PEER_REDIAL:
            return
        notes.dialed = now
        self._dial(ci, ih)

    @staticmethod
    def _due(notes: Notes) -> bool:
        """True (and noted) when the download's next DHT announce is due."""
        now = time.monotonic()
        if now - notes.asked_dht < DHT_ASK:
            return False
        notes.asked_dht = now
        return True

    def redial(self, url: str) -> None:
        """The curator of `url` moved (new addresses): every download of it dials now."""
        for ci in self._active.downloading():
            # one whose torrent is not back in the engine (its resume data was never
            # saved: a SIGKILL) raised here and the whole manifest was not applied
            if ci.url == url and ci.info_hash and self._engine.status(ci.info_hash) is not None:
                self._active.notes(ci.info_hash).dialed = time.monotonic()
                self._dial(ci, ci.info_hash)

    def _dial(self, ci: ClientItem, ih: str) -> None:
        for host, port in self._peers.for_item(ci.url, str(ci.item.get("torrent", ""))):
            self._engine.connect_peer(ih, host, port)


def _place_key(ci: ClientItem) -> tuple[str, str, str, str]:
    return ("place", *key_of(ci), ci.info_hash or "")
