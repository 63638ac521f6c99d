"""Queued items into the engine: a few at a time, adopting what is already in place.

An item starts in steps, each taken on a wake of the main loop and none of them
slow there: its `.torrent` is fetched (an http(s) torrent URL) and the files at
its final path are hashed (something is there) as jobs on worker threads
(work.py); the item stays queued, its start remembered in memory, until both
answers are in. Then it is linked for adoption or checked for disk space, and
handed to the engine.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from meshmedia.engine import Engine
from meshmedia.engine.peers import magnet_peers
from meshmedia.errors import MeshmediaError
from meshmedia.groups import Membership
from meshmedia.manifest import Item, validate_item
from meshmedia.store import ClientItem, ItemState, Store
from meshmedia.torrentinfo import read_torrent

from .items import ActiveItems, Key, Ledger, Problem, key_of
from .peers import CuratorPeers
from .place import InPlace, Placer
from .placement import final_path, incomplete_dir, make_dirs, space_problem
from .private import PrivateGroups, member_peers
from .torrents import TorrentFetch
from .work import Jobs

log = logging.getLogger(__name__)

MAX_ACTIVE = 32  # downloads in the engine at once; see native_notes/client.md
RETRIED = (ItemState.FAILED, ItemState.PAUSED)
OWNING = (ItemState.DOWNLOADING, ItemState.PLACED, ItemState.PAUSED)


@dataclass(frozen=True)
class Source:
    """What the engine is given for an item: a magnet or `.torrent` bytes, its info hash,
    and the torrent's name when known (from a `.torrent` whose names passed the path
    rule; never a magnet's `dn=`, which nothing checks)."""

    data: str | bytes
    info_hash: str
    name: str | None
    group: Membership | None = None  # a private group's item: its SSL torrent, its peers


class Starter:
    """Starts due items while fewer than MAX_ACTIVE download."""

    def __init__(
        self,
        *,
        store: Store,
        engine: Engine,
        placer: Placer,
        active: ActiveItems,
        ledger: Ledger,
        fetch: TorrentFetch,
        jobs: tuple[Jobs, Jobs],
        min_free: int,
        peers: CuratorPeers,
        private: PrivateGroups | None = None,
    ) -> None:
        """`jobs`: the pools for `.torrent` fetches and for checks of files in place;
        a download is paused when it would leave less than `min_free` bytes free;
        `peers`: the curator's addresses each download dials; `private`: the joined
        private groups (their items are SSL torrents)."""
        self._private = private
        self._store = store
        self._engine = engine
        self._placer = placer
        self._active = active
        self._ledger = ledger
        self._fetch = fetch
        self._fetches, self._checks = jobs
        self.download_dir = placer.download_dir
        self._min_free = min_free
        self._peers = peers
        self.retries = True  # --once turns retries off
        self._sources: dict[Key, Source] = {}  # starts waiting for their check of files

    def forget(self) -> None:
        """Drop what is remembered of starts under way (a plan may have changed items)."""
        self._sources.clear()

    def start_due(self) -> None:
        """Start queued (and due retried) items, one step each."""
        free = MAX_ACTIVE - len(self._active)
        now = time.time()
        due_now, mark = self._active.due(now)
        if free <= 0 or not due_now:
            return
        states = (ItemState.QUEUED, *(RETRIED if self.retries else ()))
        due = self._store.client_items_in(states, due_by=now, limit=free)
        for ci in due:
            if ci.state in RETRIED and key_of(ci) not in self._sources:
                log.info("retrying %s (attempt %d)", ci.path, ci.attempts + 1)
            try:
                self._start(ci)
            except Exception as exc:  # one item's error fails that item, never the loop
                log.exception("%s: unexpected error", ci.path)
                self._ledger.fail(ci, f"unexpected error: {type(exc).__name__}: {exc}")
        if len(due) < free:  # every due item was looked at: none is due before this
            self._active.nothing_due_until(self._store.next_attempt(states, now), mark)

    def _start(self, ci: ClientItem) -> None:
        """One step of an item's start."""
        item = validate_item(ci.item)
        try:
            final = final_path(self.download_dir, item.path)
            source = self._source(ci, item)
            if source is None:
                return
            owned = self._checked_owner(ci, source.info_hash)
            if owned is None:
                return
            ci = owned
            adopted = self._adoption(ci, item, final, source)
            if adopted is None:
                return
        except MeshmediaError as exc:
            self._drop(ci)
            self._ledger.fail(ci, str(exc))
            return
        self._drop(ci)
        self._enter(ci, item, source, adopted)

    def _source(self, ci: ClientItem, item: Item) -> Source | None:
        """The item's Source; None while its `.torrent` is being fetched (or it failed)."""
        known = self._sources.get(key_of(ci))
        if known is not None:
            return known
        private = self._private
        group = private.for_url(ci.url) if private is not None else None
        if private is not None and group is not None and item.info_hash is not None:
            return self._private_source(ci, item, (private, group, item.info_hash))
        ih = item.info_hash
        if ih is not None:  # a magnet's dn= is the manifest's word: never a path (finding 1)
            return Source(item.torrent, ih, None)
        return self._fetched_source(ci, item, group)

    def _fetched_source(
        self, ci: ClientItem, item: Item, group: Membership | None
    ) -> Source | None:
        """An item whose torrent is an http(s) URL: its `.torrent`, fetched as a job."""
        answer = self._fetches.take(("torrent", item.torrent), lambda: self._fetch(item.torrent))
        if answer is None:
            return None
        if not isinstance(answer.value, bytes):
            self._ledger.fail(ci, Problem(str(answer.value or answer.error)))
            return None
        info = read_torrent(answer.value)
        if refused := self._placer.names_problem(answer.value):
            self._ledger.fail(ci, refused)
            return None
        source = Source(answer.value, info.info_hash, info.name, group)
        self._sources[key_of(ci)] = source
        return source

    def _private_source(
        self, ci: ClientItem, item: Item, of: tuple[PrivateGroups, Membership, str]
    ) -> Source | None:
        """A private item's `.torrent` from the curator (its bare magnet names no file);
        when the curator cannot give it, the magnet (the engine adds the group CA)."""
        private, group, ih = of
        answer = self._fetches.take(("private", ih), lambda: private.fetch_torrent(group, ih))
        if answer is None:
            return None
        if not isinstance(answer.value, bytes):
            log.warning("%s: %s; taking its magnet", item.path, answer.value or answer.error)
            source = Source(item.torrent, ih, None, group)
        else:
            info = read_torrent(answer.value)
            if info.info_hash != ih:
                self._ledger.fail(ci, Problem(f"the curator sent another torrent than {ih}"))
                return None
            if refused := self._placer.names_problem(answer.value):
                self._ledger.fail(ci, refused)
                return None
            source = Source(answer.value, ih, info.name, group)
        self._sources[key_of(ci)] = source
        return source

    def _checked_owner(self, ci: ClientItem, ih: str) -> ClientItem | None:
        """`ci` with its info hash, unless another item has the torrent under way or in
        place (one torrent, one place: the first to start keeps it); then it is refused."""
        for other in self._store.client_items_with_hash(ih, OWNING):
            if key_of(other) != key_of(ci):
                problem = Problem(f"its torrent {ih} is already used by {other.path}", retry=False)
                self._drop(ci)
                self._ledger.fail(ci, problem)
                return None
        staging = incomplete_dir(self.download_dir, ih)
        make_dirs(self.download_dir, staging.relative_to(self.download_dir).as_posix())
        return replace(ci, info_hash=ih)

    def _adoption(self, ci: ClientItem, item: Item, final: Path, source: Source) -> bool | None:
        """Whether the files at `final` are the item (adopted: linked for seeding);
        None while they are being hashed."""
        if not os.path.lexists(final):
            return False
        key = ("in place", *key_of(ci), source.info_hash, item.sha256, item.xxh3, item.size)
        checked = self._checks.take(key, lambda: self._placer.check_in_place(item, final))
        if checked is None:
            self._sources[key_of(ci)] = source  # go on from here on a later wake
            return None
        found = checked.value
        if not isinstance(found, InPlace):
            return False
        return self._placer.adopt(found, final, source.info_hash, source.name)

    def _enter(self, ci: ClientItem, item: Item, source: Source, adopted: bool) -> None:
        """Hand the item to the engine (unless the disk is short of space)."""
        ih = source.info_hash
        notes = self._active.notes(ih)
        notes.looked = True  # what is at the final path was judged just now
        if not adopted and item.size is not None:
            notes.space_checked = True
            if problem := space_problem(self.download_dir, item.size, self._min_free):
                self._ledger.pause(ci, problem)
                return
        group = source.group
        try:
            self._engine.add_download(
                source.data,
                incomplete_dir(self.download_dir, ih),
                peers=member_peers(group) if group is not None else (),
                private_ca=group.ca if group is not None else None,
            )
        except MeshmediaError as exc:
            self._ledger.fail(ci, f"cannot add the torrent: {exc}")
            return
        for host, port in self._peers.for_item(ci.url, item.torrent):
            self._engine.connect_peer(ih, host, port)
        if not adopted:
            log.info("downloading %s (%s)", item.path, ih)
        if item.info_hash is not None:
            for reason in magnet_peers(item.torrent)[1]:
                log.warning("%s: ignoring a peer of its magnet: %s", item.path, reason)
        self._ledger.save(ci, ItemState.DOWNLOADING, error=None)

    def _drop(self, ci: ClientItem) -> None:
        self._sources.pop(key_of(ci), None)
