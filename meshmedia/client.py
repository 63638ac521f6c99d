"""The client's sync logic: plan manifest items, download, verify, place, seed, notify.

`SyncClient` keeps one row per (manifest URL, path) in the store's client_items
table and moves each through these states:

    queued -> downloading -> placed            (verified and renamed into place)
                          -> failed            (hash or size mismatch, bad torrent; retried
                                                with backoff)
                          -> paused            (not enough disk space; retried later)

An item gone from its manifest stops seeding (and its file is deleted with
delete_removed). Planning is in client_plan.py, verifying and placing in
client_place.py. The daemon (`meshmedia/sync_daemon.py`) drives it from fetcher
threads and a main loop; `--once` runs one cycle.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import requests

from .client_place import Placer
from .client_plan import (
    MANIFEST_KEY,
    ItemPlanner,
    ItemState,
    keep_manifest,
    read_manifest,
    saved_manifest,
)
from .config import Config
from .engine import Engine, EngineEvent, TorrentState
from .errors import MeshmediaError
from .jellyfin import JellyfinNotifier
from .manifest import Item, validate_item
from .placement import final_path, incomplete_dir, is_disk_full, space_problem
from .signing import TrustPolicy, parse_public_key
from .store import ClientItem, Store
from .torrentinfo import fetch_torrent, read_torrent

__all__ = ["MANIFEST_KEY", "ItemState", "SyncClient"]

log = logging.getLogger(__name__)

MAX_RETRY = 6 * 3600.0
RETRIED = {ItemState.FAILED.value, ItemState.PAUSED.value}
PLACEMENT_POLL = 0.02  # seconds between looks at a finished download awaiting placement
PEER_REDIAL = 5.0  # seconds between dialling the x.pe peers of a download with none
SETTLED = {ItemState.PLACED.value, ItemState.FAILED.value, ItemState.PAUSED.value}


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
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.notifier = notifier
        self.retry_base = retry_base
        self.retries = True  # --once turns retries off
        self.download_dir = Path(config.download_dir)
        self._http = http or requests.Session()
        self._lock = threading.RLock()
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self._finished: set[str] = set()
        self._space_checked: set[str] = set()
        self._dialed: dict[str, float] = {}
        self.rejected: dict[str, list[str]] = {}
        self.trust = TrustPolicy(store, parse_public_key(config.trust) if config.trust else None)
        self._wakeup = threading.Event()
        self._placer = Placer(engine, self.download_dir, notifier)
        self._planner = ItemPlanner(
            store, engine, self.download_dir, self._start, delete_removed=config.delete_removed
        )
        engine.subscribe(self._notify)

    # -- manifests -------------------------------------------------------------
    def saved_manifest(self, url: str) -> tuple[bytes, str | None] | None:
        """The last good manifest of `url` kept in the store (body, ETag), or None."""
        return saved_manifest(self.store, url)

    def apply(self, url: str, body: bytes, etag: str | None = None) -> bool:
        """Parse a fetched manifest, keep it as the last good one and plan its items.

        Returns False (and keeps the previous manifest) when the document is unusable.
        """
        read = read_manifest(url, body, self.trust)
        if read is None:
            return False
        manifest, rejected = read
        keep_manifest(self.store, url, body, etag)
        with self._lock:
            self.rejected[url] = [str(bad) for bad in rejected]
            self._planner.plan(url, manifest)
        return True

    # -- starting --------------------------------------------------------------
    def _start(self, ci: ClientItem) -> None:
        """Adopt the item when its file is already in place, else start its download."""
        item = validate_item(ci.item)
        try:
            final = final_path(self.download_dir, item.path)
            source, ih, name = self._source(item)
        except MeshmediaError as exc:
            self._fail(ci, str(exc))
            return
        ci = replace(ci, info_hash=ih)
        staging = incomplete_dir(self.download_dir, ih)
        adopt = self._placer.adopt(item, final, ih, name)
        if not adopt and item.size is not None and (problem := self._space(ih, item.size)):
            self._pause(ci, problem)
            return
        try:
            self.engine.add_download(source, staging)
        except MeshmediaError as exc:
            self._fail(ci, f"cannot add the torrent: {exc}")
            return
        if not adopt:
            log.info("downloading %s (%s)", item.path, ih)
        self._save(ci, ItemState.DOWNLOADING, error=None)

    def _source(self, item: Item) -> tuple[str | bytes, str, str | None]:
        """(what to hand the engine, info hash, the torrent's name when known)."""
        ih = item.info_hash
        if ih is not None:
            query = dict(parse_qsl(item.torrent[len("magnet:?") :]))
            return item.torrent, ih, query.get("dn")
        data = fetch_torrent(self._http, item.torrent)
        info = read_torrent(data)
        return data, info.info_hash, info.name

    def _space(self, ih: str, size: int) -> str | None:
        self._space_checked.add(ih)
        return space_problem(self.download_dir, size, self.config.min_free)

    # -- the main loop's work --------------------------------------------------
    def step(self) -> None:
        """Handle engine events, place finished downloads, retry what is due."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._on_event(event)
        with self._lock:
            now = time.time()
            for ci in self.store.client_items():
                if ci.state == ItemState.DOWNLOADING.value:
                    self._check(ci)
                elif ci.state in RETRIED and self.retries and ci.next_attempt <= now:
                    log.info("retrying %s (attempt %d)", ci.path, ci.attempts + 1)
                    self._start(ci)

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
                ci.state == ItemState.DOWNLOADING.value and ci.info_hash in self._finished
                for ci in self.store.client_items()
            )
        if waiting:
            timeout = min(timeout, PLACEMENT_POLL)
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def _on_event(self, event: EngineEvent) -> None:
        if event.kind == "finished":
            self._finished.add(event.info_hash)
        elif event.kind == "file_error" and is_disk_full(event.message):
            with self._lock:
                for ci in self.store.client_items():
                    if ci.info_hash == event.info_hash and ci.state != ItemState.PLACED.value:
                        self.engine.remove(event.info_hash)
                        self._pause(ci, f"the disk is full ({event.message}); download paused")

    def _check(self, ci: ClientItem) -> None:
        ih = ci.info_hash or ""
        status = self.engine.status(ih)
        if status is None:
            self._start(ci)
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
            problem = self._space(ih, status.total_wanted - status.total_done)
            if problem:
                self.engine.remove(ih)
                self._pause(ci, problem)

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
        problem = self._placer.place(item, ih, final_path(self.download_dir, item.path))
        if problem:
            self._fail(ci, problem)
            return
        self._save(ci, ItemState.PLACED, error=None, attempts=0)

    # -- bookkeeping -----------------------------------------------------------
    def _save(self, ci: ClientItem, state: ItemState, **changes: Any) -> None:
        self.store.save_client_item(replace(ci, state=state.value, **changes))

    def _fail(self, ci: ClientItem, error: str) -> None:
        attempts = ci.attempts + 1
        delay = min(self.retry_base * 2 ** (attempts - 1), MAX_RETRY)
        log.error("%s failed: %s (retry in %.0f s)", ci.path, error, delay)
        self._save(
            ci,
            ItemState.FAILED,
            error=error,
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
        return all(ci.state in SETTLED for ci in self.items())

    def status_json(self) -> dict[str, Any]:
        """The engine snapshot plus each item's state (GET /status)."""
        return {
            "engine": self.engine.snapshot().to_json(),
            "items": [
                {
                    "url": ci.url,
                    "path": ci.path,
                    "info_hash": ci.info_hash,
                    "state": ci.state,
                    "attempts": ci.attempts,
                    "next_attempt": ci.next_attempt,
                    "error": ci.error,
                }
                for ci in self.items()
            ],
            "rejected": self.rejected,
        }
