"""The client's sync logic: plan manifest items, download, verify, place, seed, notify.

`SyncClient` keeps one row per (manifest URL, path) in the store's client_items
table and moves each through these states:

    queued -> downloading -> placed            (verified and renamed into place)
                          -> failed            (hash or size mismatch, a path in the way;
                                                retried with backoff)
                          -> paused            (not enough disk space; retried later)
                          -> refused           (the torrent cannot be this item: unsafe
                                                names, a torrent another item has; skipped
                                                until the manifest changes the item)

At most MAX_ACTIVE items download at once; the rest wait queued, so a manifest of
100,000 items costs rows in SQLite, not 100,000 torrents in libtorrent. An item
gone from its manifest stops seeding (and the files this client placed for it
are deleted with delete_removed). Planning is in plan.py, verifying and
placing in place.py, `.torrent` URLs are fetched off the main loop by
torrents.py. No input raises out of `apply` or `step`: a bad item is
failed with a message naming it, a bad manifest leaves the last good one.
The daemon (daemon.py) drives it from fetcher threads and a
main loop; `--once` runs one cycle.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import requests

from meshmedia.config import Config
from meshmedia.engine import Engine, EngineEvent, EventKind, TorrentState
from meshmedia.errors import MeshmediaError
from meshmedia.jellyfin import JellyfinNotifier
from meshmedia.manifest import Item, TrustPolicy, parse_public_key, validate_item
from meshmedia.store import ClientItem, ItemState, Store
from meshmedia.torrentinfo import read_torrent

from .place import Placer, Problem
from .placement import final_path, incomplete_dir, is_disk_full, make_dirs, space_problem
from .plan import ItemPlanner, keep_manifest, read_manifest, saved_manifest
from .torrents import TorrentFiles

log = logging.getLogger(__name__)

MAX_ACTIVE = 32  # downloads in the engine at once; see native_notes/client.md
MAX_RETRY = 6 * 3600.0
NEVER = 1e18  # next_attempt of a refused item (a finite number: JSON has no Infinity)
RETRIED = (ItemState.FAILED, ItemState.PAUSED)
PLACEMENT_POLL = 0.02  # seconds between looks at a finished download awaiting placement
PEER_REDIAL = 5.0  # seconds between dialling the x.pe peers of a download with none
UNSETTLED = (ItemState.QUEUED, ItemState.DOWNLOADING)
DOWNLOADING = (ItemState.DOWNLOADING,)
OWNING = (ItemState.DOWNLOADING, ItemState.PLACED, ItemState.PAUSED)


class SyncClient:
    """Plans and carries out the sync of every followed manifest; thread-safe."""

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: Engine,
        notifier: JellyfinNotifier | None = None,
        *,
        retry_base: float = 60.0,
        http: requests.Session | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """`stop` (the daemon's) cancels a long plan, so SIGTERM is honoured at once."""
        self.config = config
        self.store = store
        self.engine = engine
        self.notifier = notifier
        self.retry_base = retry_base
        self.retries = True  # --once turns retries off
        self.download_dir = Path(os.path.abspath(config.download_dir))
        self._lock = threading.RLock()
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self._finished: set[str] = set()
        self._space_checked: set[str] = set()
        self._looked: set[str] = set()  # downloads checked for a copy already in place
        self._names_checked: set[str] = set()  # downloads whose torrent names were checked
        self._dialed: dict[str, float] = {}
        self.rejected: dict[str, list[str]] = {}
        self.trust = TrustPolicy(store, parse_public_key(config.trust) if config.trust else None)
        self._wakeup = threading.Event()
        self.torrents = TorrentFiles(self._wakeup.set, http)
        self._placer = Placer(engine, store, self.download_dir, notifier)
        self._planner = ItemPlanner(
            store, engine, self._placer, delete_removed=config.delete_removed, stop=stop
        )
        engine.subscribe(self._notify)

    # -- manifests -------------------------------------------------------------
    def saved_manifest(self, url: str) -> tuple[bytes, str | None] | None:
        """The last good manifest of `url` kept in the store (body, ETag), or None."""
        return saved_manifest(self.store, url)

    def apply(self, url: str, body: bytes, etag: str | None = None) -> bool:
        """Parse a fetched manifest, plan its items and keep it as the last good one.

        Returns False (and keeps the previous manifest) when the document is
        unusable; never raises. A manifest is kept only once it is fully planned.
        """
        try:
            return self._apply(url, body, etag)
        except Exception:  # no document may stop the client: log it, keep the last good one
            log.exception("manifest %s could not be applied; keeping the last good one", url)
            return False

    def _apply(self, url: str, body: bytes, etag: str | None) -> bool:
        read = read_manifest(url, body, self.trust)
        if read is None:
            return False
        manifest, rejected = read
        log.info("planning %d items of %s", len(manifest.items), url)
        with self._lock:
            self.rejected[url] = [str(bad) for bad in rejected]
            if not self._planner.plan(url, manifest):
                log.info("planning %s stopped before the end", url)
                return False
        keep_manifest(self.store, url, body, etag)
        self._wakeup.set()
        return True

    # -- starting --------------------------------------------------------------
    def _start_due(self) -> None:
        """Start queued (and due retried) items while fewer than MAX_ACTIVE download."""
        free = MAX_ACTIVE - self.store.count_client_items(DOWNLOADING)
        if free <= 0:
            return
        states = (ItemState.QUEUED, *(RETRIED if self.retries else ()))
        for ci in self.store.client_items_in(states, due_by=time.time(), limit=free):
            if ci.state in RETRIED:
                log.info("retrying %s (attempt %d)", ci.path, ci.attempts + 1)
            self._guarded(ci, self._start)

    def _start(self, ci: ClientItem) -> None:
        """Adopt the item when its files are already in place, else start its download."""
        item = validate_item(ci.item)
        ready = self._ready(ci, item)
        if ready is None:
            return
        ci, final, data, name = ready
        ih = ci.info_hash or ""
        adopt = self._placer.adopt(item, final, ih, name)
        self._looked.add(ih)  # what is at the final path was judged just now
        if not adopt and item.size is not None and (problem := self._space(ih, item.size)):
            self._pause(ci, problem)
            return
        try:
            self.engine.add_download(data, incomplete_dir(self.download_dir, ih))
        except MeshmediaError as exc:
            self._fail(ci, f"cannot add the torrent: {exc}")
            return
        if not adopt:
            log.info("downloading %s (%s)", item.path, ih)
        self._save(ci, ItemState.DOWNLOADING, error=None)

    def _ready(
        self, ci: ClientItem, item: Item
    ) -> tuple[ClientItem, Path, str | bytes, str | None] | None:
        """The item with its info hash, its final path, the engine's source and the
        torrent's name; None when it cannot start now (failed, refused, still fetching)."""
        try:
            final = final_path(self.download_dir, item.path)
            source = self._source(ci, item)
            if source is None or isinstance(source, Problem):
                if source is not None:
                    self._fail(ci, source)
                return None
            data, ih, name = source
            ci = replace(ci, info_hash=ih)
            if owner := self._owner_of(ih, ci):
                problem = Problem(f"its torrent {ih} is already used by {owner}", retry=False)
                self._fail(ci, problem)
                return None
            staging = incomplete_dir(self.download_dir, ih)
            make_dirs(self.download_dir, staging.relative_to(self.download_dir).as_posix())
        except MeshmediaError as exc:
            self._fail(ci, str(exc))
            return None
        return ci, final, data, name

    def _source(
        self, ci: ClientItem, item: Item
    ) -> tuple[str | bytes, str, str | None] | Problem | None:
        """(what to hand the engine, info hash, the torrent's name when known); a Problem
        when the `.torrent` cannot be used; None while it is being fetched."""
        ih = item.info_hash
        if ih is not None:
            query = dict(parse_qsl(item.torrent[len("magnet:?") :]))
            return item.torrent, ih, query.get("dn")
        answer = self.torrents.get(item.torrent)
        if answer is None or isinstance(answer, str):
            return Problem(answer) if answer else None
        info = read_torrent(answer)
        refused = self._placer.names_problem(answer)
        return refused or (answer, info.info_hash, info.name)

    def _owner_of(self, ih: str, ci: ClientItem) -> str | None:
        """Another item that has the torrent `ih` under way or in place (one torrent,
        one place: the first to start keeps it)."""
        for other in self.store.client_items_with_hash(ih, OWNING):
            if (other.url, other.path) != (ci.url, ci.path):
                return other.path
        return None

    def _space(self, ih: str, size: int) -> str | None:
        self._space_checked.add(ih)
        return space_problem(self.download_dir, size, self.config.min_free)

    # -- the main loop's work --------------------------------------------------
    def step(self) -> None:
        """Handle engine events, place finished downloads, start what is due."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            try:
                self._on_event(event)
            except Exception:  # an event handler must not stop the main loop
                log.exception("handling %s of %s failed", event.kind.value, event.info_hash)
        with self._lock:
            for ci in self.store.client_items_in(DOWNLOADING):
                self._guarded(ci, self._check)
            self._start_due()

    def _guarded(self, ci: ClientItem, work: Callable[[ClientItem], None]) -> None:
        """Run one item's work; an unexpected error fails that item, never the loop."""
        try:
            work(ci)
        except Exception as exc:
            log.exception("%s: unexpected error", ci.path)
            try:
                self._fail(ci, f"unexpected error: {type(exc).__name__}: {exc}")
            except Exception:
                log.exception("%s: cannot record the failure", ci.path)

    def _notify(self, event: EngineEvent) -> None:
        self._events.put(event)
        self._wakeup.set()

    def wait(self, timeout: float) -> None:
        """Sleep until the engine reports something or `timeout` passes.

        While a finished download waits for its status to say seeding, the
        sleeps are short, so a verified file lands within a few tens of ms.
        """
        with self._lock:
            waiting = any(
                ci.info_hash in self._finished for ci in self.store.client_items_in(DOWNLOADING)
            )
        if waiting:
            timeout = min(timeout, PLACEMENT_POLL)
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def _on_event(self, event: EngineEvent) -> None:
        if event.kind == EventKind.FINISHED:
            self._finished.add(event.info_hash)
        elif event.kind == EventKind.FILE_ERROR and is_disk_full(event.message):
            with self._lock:
                for ci in self.store.client_items_with_hash(event.info_hash, DOWNLOADING):
                    self.engine.remove(event.info_hash)
                    self._pause(ci, f"the disk is full ({event.message}); download paused")

    def _check(self, ci: ClientItem) -> None:
        ih = ci.info_hash or ""
        status = self.engine.status(ih)
        if status is None:
            self._save(ci, ItemState.QUEUED)
            return
        if ih not in self._looked:
            self._looked.add(ih)
            if status.state != TorrentState.SEEDING and self._recover(ci):
                return
        if ih not in self._names_checked and (data := self.engine.torrent_bytes(ih)) is not None:
            self._names_checked.add(ih)
            if problem := self._placer.names_problem(data):
                self._placer.discard(ih, Path(status.save_path))
                self._fail(ci, problem)
                return
        if status.state == TorrentState.SEEDING and (
            ih in self._finished or status.total_download == 0
        ):
            self._place(ci)
        elif status.state == TorrentState.ERROR and status.error and is_disk_full(status.error):
            self.engine.remove(ih)
            self._pause(ci, f"the disk is full ({status.error}); download paused")
        elif status.num_peers == 0 and status.state != TorrentState.SEEDING:
            self._reach_peers(ci, ih)
        elif ih not in self._space_checked and status.total_wanted > 0:
            short = self._space(ih, status.total_wanted - status.total_done)
            if short:
                self.engine.remove(ih)
                self._pause(ci, short)

    def _recover(self, ci: ClientItem) -> bool:
        """A download found at start-up whose files are already in place and verified
        (the daemon died between the move and its bookkeeping): adopt them instead of
        downloading again. True when the item was queued for that."""
        item = validate_item(ci.item)
        final = final_path(self.download_dir, item.path)
        if not os.path.lexists(final) or self._placer.in_place(item, final) is None:
            return False
        log.info("%s is in place already (placed before a restart): adopting it", final)
        status = self.engine.status(ci.info_hash or "")
        self._placer.discard(ci.info_hash or "", Path(status.save_path) if status else final)
        self._save(ci, ItemState.QUEUED)
        return True

    def _reach_peers(self, ci: ClientItem, ih: str) -> None:
        """A download with no peer (restored after a restart, a link back up): dial x.pe."""
        now = time.monotonic()
        if now - self._dialed.get(ih, 0.0) < PEER_REDIAL:
            return
        self._dialed[ih] = now
        torrent = str(ci.item.get("torrent", ""))
        if not torrent.startswith("magnet:?"):
            return
        for key, value in parse_qsl(torrent[len("magnet:?") :]):
            host, _, port = value.rpartition(":")
            if key == "x.pe" and host and port.isdigit():
                self.engine.connect_peer(ih, host.strip("[]"), int(port))

    def _place(self, ci: ClientItem) -> None:
        """Verify a finished download and rename it into place."""
        item = validate_item(ci.item)
        ih = ci.info_hash or ""
        problem = self._placer.place(ci.url, item, ih, final_path(self.download_dir, item.path))
        if problem:
            self._fail(ci, problem)
            return
        self._save(ci, ItemState.PLACED, error=None, attempts=0)

    # -- bookkeeping -----------------------------------------------------------
    def _save(self, ci: ClientItem, state: ItemState, **changes: Any) -> None:
        self.store.save_client_item(replace(ci, state=state, **changes))

    def _fail(self, ci: ClientItem, error: str | Problem) -> None:
        attempts = ci.attempts + 1
        if isinstance(error, Problem) and not error.retry:
            log.error("%s refused: %s (skipped until the manifest changes it)", ci.path, error)
            self._save(
                ci, ItemState.REFUSED, error=str(error), attempts=attempts, next_attempt=NEVER
            )
            return
        delay = min(self.retry_base * 2 ** (attempts - 1), MAX_RETRY)
        log.error("%s failed: %s (retry in %.0f s)", ci.path, error, delay)
        self._save(
            ci,
            ItemState.FAILED,
            error=str(error),
            attempts=attempts,
            next_attempt=time.time() + delay,
        )

    def _pause(self, ci: ClientItem, reason: str) -> None:
        log.warning("%s paused: %s", ci.path, reason)
        self._space_checked.discard(ci.info_hash or "")
        self._save(
            ci,
            ItemState.PAUSED,
            error=reason,
            next_attempt=time.time() + self.config.interval,
        )

    # -- looking ---------------------------------------------------------------
    def items(self) -> list[ClientItem]:
        """Every item of every followed manifest."""
        return self.store.client_items()

    def settled(self) -> bool:
        """True when no item is queued or downloading."""
        return self.store.count_client_items(UNSETTLED) == 0

    def status_json(self) -> dict[str, Any]:
        """The engine snapshot plus each item's state (GET /status)."""
        keys = ("url", "path", "info_hash", "state", "attempts", "next_attempt", "error")
        return {
            "engine": self.engine.snapshot().to_json(),
            "items": [dict(zip(keys, row, strict=True)) for row in self.store.client_item_states()],
            "rejected": self.rejected,
        }
