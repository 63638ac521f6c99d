"""The client's planning: read a fetched manifest, keep it, and turn its items into rows.

Each followed manifest's items are rows of the store's client_items table, one
per (manifest URL, path). `ItemPlanner` compares a new manifest with those rows:
a new or changed item is (re)started, a placed item whose torrent the engine
lost is started again, and an item gone from the manifest stops seeding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from pathlib import Path

from .engine import Engine
from .errors import MeshmediaError
from .manifest import Manifest, Rejected, parse_manifest
from .placement import incomplete_dir, remove_tree
from .signing import RollbackError, SignatureError, TrustPolicy
from .store import ClientItem, Store

log = logging.getLogger("meshmedia.client")  # the client's lines keep the client's name

MANIFEST_KEY = "client.manifest:"  # + URL: the last good manifest, as JSON {etag, body}


class ItemState(str, Enum):
    """The state of one client item (stored as its value)."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PLACED = "placed"
    FAILED = "failed"
    PAUSED = "paused"


def saved_manifest(store: Store, url: str) -> tuple[bytes, str | None] | None:
    """The last good manifest of `url` kept in `store` (body, ETag), or None."""
    raw = store.get(MANIFEST_KEY + url)
    if raw is None:
        return None
    saved = json.loads(raw)
    return saved["body"].encode(), saved.get("etag")


def keep_manifest(store: Store, url: str, body: bytes, etag: str | None) -> None:
    """Keep `body` in `store` as the last good manifest of `url`."""
    text = json.dumps({"etag": etag, "body": body.decode("utf-8")})
    store.put(MANIFEST_KEY + url, text)


def read_manifest(
    url: str, body: bytes, trust: TrustPolicy
) -> tuple[Manifest, list[Rejected]] | None:
    """Parse a fetched manifest and check its signature; None (logged) when unusable."""
    try:
        manifest, rejected = parse_manifest(body)
        trust.admit(url, json.loads(body))
    except (SignatureError, RollbackError) as exc:
        log.error("manifest %s refused, keeping the last good one: %s", url, exc)
        return None
    except MeshmediaError as exc:
        log.error("manifest %s is unusable, keeping the last good one: %s", url, exc)
        return None
    for bad in rejected:
        log.warning("skipping %s from %s", bad, url)
    return manifest, rejected


class ItemPlanner:
    """Brings the client_items rows of a manifest in line with its latest version."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        download_dir: Path,
        start: Callable[[ClientItem], None],
        *,
        delete_removed: bool,
    ) -> None:
        """Plan into `store`; `start` adopts or downloads one item (the client's)."""
        self.store = store
        self.engine = engine
        self.download_dir = download_dir
        self.start = start
        self.delete_removed = delete_removed

    def plan(self, url: str, manifest: Manifest) -> None:
        """Start new and changed items of `manifest`, drop those it no longer lists."""
        current = {ci.path: ci for ci in self.store.client_items(url)}
        taken = {ci.path for ci in self.store.client_items() if ci.url != url}
        for item in manifest.items:
            if item.path in taken:
                log.warning("skipping %s from %s: another manifest has that path", item.path, url)
                continue
            known = current.pop(item.path, None)
            if known is not None and known.item == item.to_json():
                if known.state == ItemState.PLACED.value and self._lost(known):
                    self.start(replace(known, state=ItemState.QUEUED.value))
                continue
            if known is not None and known.info_hash:
                self._drop(known, delete_final=False)
            ih = item.info_hash
            self.start(ClientItem(url, item.path, ih, ItemState.QUEUED.value, item.to_json()))
        for gone in current.values():
            log.info("%s left the manifest %s", gone.path, url)
            self._drop(gone, delete_final=self.delete_removed)
            self.store.delete_client_item(gone.url, gone.path)

    def _lost(self, ci: ClientItem) -> bool:
        """A placed item whose torrent the engine no longer has (resume data lost)."""
        return ci.info_hash is None or self.engine.status(ci.info_hash) is None

    def _drop(self, ci: ClientItem, *, delete_final: bool) -> None:
        """Stop seeding an item; delete its partial download, and its file when told to."""
        if ci.info_hash and self.engine.status(ci.info_hash) is not None:
            self.engine.remove(ci.info_hash)
        if ci.info_hash:
            remove_tree(incomplete_dir(self.download_dir, ci.info_hash))
        if delete_final and ci.state == ItemState.PLACED.value:
            target = self.download_dir / ci.path
            remove_tree(target)
            log.info("deleted %s (delete_removed)", target)
