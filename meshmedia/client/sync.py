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
are deleted with delete_removed). The parts: plan.py plans a manifest into rows,
start.py starts due items, downloads.py looks after those under way, place.py
verifies and places, items.py keeps the active items in memory and saves their
states, work.py runs the slow work (fetching a `.torrent`, hashing, moving) on
worker threads: never on the main loop, never under the client's lock. No input
raises out of `apply` or `step`: a bad item is failed with a message naming it,
a bad manifest leaves the last good one. The daemon (daemon.py) drives it from
fetcher threads and a main loop; `--once` runs one cycle.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from meshmedia.config import Config
from meshmedia.engine import Engine, EngineEvent, EventKind
from meshmedia.jellyfin import JellyfinNotifier
from meshmedia.manifest import TrustPolicy, parse_public_key
from meshmedia.store import ClientItem, ItemState, Store

from .downloads import Downloads
from .events import ItemEvents
from .items import ActiveItems, Ledger
from .peers import CuratorPeers
from .place import Placer
from .placement import is_disk_full
from .plan import ItemPlanner, keep_manifest, read_manifest, saved_manifest
from .private import PrivateGroups
from .selection import Selection
from .start import Starter
from .torrents import TorrentFetch
from .versions import ItemCache
from .work import Jobs

log = logging.getLogger(__name__)

PLACEMENT_POLL = 0.02  # seconds between looks at a finished download awaiting placement
UNSETTLED = (ItemState.QUEUED, ItemState.DOWNLOADING)
WORKERS = 2  # threads for each kind of slow work (fetches, checks, placements)
CLOSE_TIMEOUT = 60.0  # seconds close() waits for placements under way (a move confirmed)


def _no_headers(url: str) -> dict[str, str]:
    return {}


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
        self.download_dir = Path(os.path.abspath(config.download_dir))
        self._lock = threading.RLock()
        self._events: queue.Queue[EngineEvent] = queue.Queue()
        self.rejected: dict[str, list[str]] = {}
        self.trust = TrustPolicy(store, parse_public_key(config.trust) if config.trust else None)
        self.trusts: dict[str, TrustPolicy] = {}  # a joined group's URL: its curator's key only
        self.headers_for: Callable[[str], dict[str, str]] = _no_headers  # joined groups'
        self.pins: dict[str, str] = {}  # joined curators' https origins -> certificate
        self._wakeup = threading.Event()
        self._active = ActiveItems(store)
        self.events = ItemEvents()  # placed and failed items, for metrics and hooks
        self.versions: dict[str, int] = {}  # the version of each manifest applied
        self._item_caches: dict[str, ItemCache] = {}  # each source's items last read
        self._ledger = Ledger(
            store,
            self._active,
            retry_base=retry_base,
            pause_for=config.interval,
            events=self.events,
        )
        self.torrents = TorrentFetch(http)
        self.curator_peers = CuratorPeers()
        self._jobs = {
            kind: Jobs(f"{kind} jobs", WORKERS, self._job_done)
            for kind in ("torrent fetch", "file check", "placement")
        }
        self._placer = Placer(engine, store, self.download_dir, notifier)
        self.private = PrivateGroups.load(config.state_dir)
        self.private.set_certificates(engine)
        self.selection = Selection(config.state_dir, config.select, config.max_size)
        self._planner = ItemPlanner(
            store,
            engine,
            self._placer,
            delete_removed=config.delete_removed,
            stop=stop,
            selection=self.selection,
        )
        self._starter = Starter(
            store=store,
            engine=engine,
            placer=self._placer,
            active=self._active,
            ledger=self._ledger,
            fetch=self.torrents,
            jobs=(self._jobs["torrent fetch"], self._jobs["file check"]),
            min_free=config.min_free,
            peers=self.curator_peers,
            private=self.private,
        )
        self._downloads = Downloads(
            engine=engine,
            placer=self._placer,
            active=self._active,
            ledger=self._ledger,
            jobs=(self._jobs["file check"], self._jobs["placement"]),
            min_free=config.min_free,
            peers=self.curator_peers,
        )
        engine.subscribe(self._notify)

    @property
    def retries(self) -> bool:
        """Whether failed and paused items are tried again (--once turns this off)."""
        return self._starter.retries

    @retries.setter
    def retries(self, value: bool) -> None:
        self._starter.retries = value

    @property
    def retry_base(self) -> float:
        """Seconds before a failed item is first tried again (doubling after that)."""
        return self._ledger.retry_base

    @retry_base.setter
    def retry_base(self, value: float) -> None:
        self._ledger.retry_base = value

    # -- manifests -------------------------------------------------------------
    def saved_manifest(self, url: str) -> tuple[bytes, str | None] | None:
        """The last good manifest of `url` kept in the store (body, ETag), or None."""
        return saved_manifest(self.store, url)

    def apply(
        self,
        url: str,
        body: bytes,
        etag: str | None = None,
        *,
        trust: TrustPolicy | None = None,
    ) -> bool:
        """Parse a fetched manifest, check its signature with `trust` (default: the
        client's --trust policy), plan its items and keep it as the last good one.

        Returns False (and keeps the previous manifest) when the document is
        unusable or refused; never raises. A manifest is kept only once it is fully
        planned.
        """
        try:
            return self._apply(url, body, etag, trust or self.trusts.get(url) or self.trust)
        except Exception:  # no document may stop the client: log it, keep the last good one
            log.exception("manifest %s could not be applied; keeping the last good one", url)
            return False

    def _apply(self, url: str, body: bytes, etag: str | None, trust: TrustPolicy) -> bool:
        cache = self._item_caches.setdefault(url, ItemCache())
        read = read_manifest(url, body, trust, cache)
        if read is None:
            return False
        manifest, rejected = read
        moved = self.curator_peers.update(url, manifest.extra)
        log.info("planning %d items of %s", len(manifest.items), url)
        self.events.set_group(url, manifest.group)
        with self._lock:
            # No placement may run while rows change under it (none starts: the lock).
            if not self._jobs["placement"].wait_idle(CLOSE_TIMEOUT):
                log.warning("planning %s while a placement is still under way", url)
            self.rejected[url] = [str(bad) for bad in rejected]
            planned = self._planner.plan(url, manifest, rejected)
            self._starter.forget()
            self._active.reload()
            if planned is None:
                log.info("planning %s stopped before the end", url)
                return False
        self._planner.delete_gone(planned)  # files only: slow, and no other item's
        keep_manifest(self.store, url, body, etag)
        if moved:  # the curator's addresses changed (a router mapped, a new address)
            with self._lock:
                self._downloads.redial(url)
        self.versions[url] = manifest.version
        self._wakeup.set()
        return True

    def reselect(self) -> bool:
        """When selection.json changed: plan every followed manifest again, so newly
        wanted items start and unwanted ones stop. True when it changed."""
        if not self.selection.reload():
            return False
        for url in self.config.manifest_urls:
            saved = self.saved_manifest(url)
            if saved is not None:
                self.apply(url, *saved)
        return True

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
            self._downloads.check_all()
            self._starter.start_due()

    def _on_event(self, event: EngineEvent) -> None:
        if event.kind == EventKind.FINISHED:
            self._downloads.finished(event.info_hash)
        elif event.kind == EventKind.FILE_ERROR and is_disk_full(event.message):
            with self._lock:
                self._downloads.disk_full(event.info_hash, event.message)

    def _notify(self, event: EngineEvent) -> None:
        self._events.put(event)
        self._wakeup.set()

    def _job_done(self) -> None:
        self._active.due_now()  # a fetch or a check may let a waiting item go on
        self._wakeup.set()

    def wait(self, timeout: float) -> None:
        """Sleep until the engine reports something, a job finishes, or `timeout` passes.

        While a finished download waits for its status to say seeding, the
        sleeps are short, so a verified file lands within a few tens of ms.
        """
        with self._lock:
            waiting = self._downloads.awaiting_status()
        if waiting:
            timeout = min(timeout, PLACEMENT_POLL)
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Wait (at most `timeout`) for the placements under way, before the engine closes;
        checks and fetches still running are left to end with the process."""
        if not self._jobs["placement"].wait_idle(timeout):
            log.warning("a placement was still under way after %.0f s", timeout)

    # -- looking ---------------------------------------------------------------
    def items(self) -> list[ClientItem]:
        """Every item of every followed manifest."""
        return self.store.client_items()

    def downloading(self) -> list[ClientItem]:
        """The items downloading now (from memory: no database read)."""
        with self._lock:
            return self._active.downloading()

    def settled(self) -> bool:
        """True when no item is queued or downloading."""
        return self.store.count_client_items(UNSETTLED) == 0

    def status_json(self) -> dict[str, Any]:
        """The engine snapshot plus each item's state (GET /status)."""
        keys = ("url", "path", "info_hash", "state", "attempts", "next_attempt", "error")
        urls = sorted({*self.config.manifest_urls, *self.versions})
        return {
            "engine": self.engine.snapshot().to_json(),
            "items": [dict(zip(keys, row, strict=True)) for row in self.store.client_item_states()],
            "rejected": self.rejected,
            "selection": {url: self.selection.choice(url).describe() for url in urls},
        }
