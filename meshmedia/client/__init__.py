"""The client: follows manifests, downloads, verifies and places each item, keeps
seeding; `SyncClient` is the logic, `sync_forever` / `sync_once` the daemon."""

from __future__ import annotations

from .daemon import SyncSummary, sync_forever, sync_once
from .plan import MANIFEST_KEY
from .sync import SyncClient

__all__ = ["MANIFEST_KEY", "SyncClient", "SyncSummary", "sync_forever", "sync_once"]
