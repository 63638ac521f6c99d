"""The BitTorrent engine: one libtorrent session behind a facade of frozen values.

Only this package imports libtorrent. It knows nothing of HTTP, click, watchdog,
the curator or the client; callers get snapshots and events, never live handles.
"""

from __future__ import annotations

from .building import BuiltTorrent, SourceFile, build_torrent
from .dht import MAX_DHT_VALUE, DhtItems, MutableItem
from .session import Engine
from .snapshots import (
    EngineEvent,
    EngineSnapshot,
    EngineTally,
    EventKind,
    TorrentState,
    TorrentStatus,
)

__all__ = [
    "MAX_DHT_VALUE",
    "BuiltTorrent",
    "DhtItems",
    "Engine",
    "EngineEvent",
    "EngineSnapshot",
    "EngineTally",
    "EventKind",
    "MutableItem",
    "SourceFile",
    "TorrentState",
    "TorrentStatus",
    "build_torrent",
]
