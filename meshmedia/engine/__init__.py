"""The BitTorrent engine: one libtorrent session behind a facade of frozen values.

Only this package imports libtorrent. It knows nothing of HTTP, click, watchdog,
the curator or the client; callers get snapshots and events, never live handles.
"""

from __future__ import annotations

from .building import BuiltTorrent, SourceFile, build_torrent
from .dht import MutableItem, wait_for_dht_nodes
from .session import Engine
from .snapshots import EngineEvent, EngineSnapshot, TorrentState, TorrentStatus

__all__ = [
    "BuiltTorrent",
    "Engine",
    "EngineEvent",
    "EngineSnapshot",
    "MutableItem",
    "SourceFile",
    "TorrentState",
    "TorrentStatus",
    "build_torrent",
    "wait_for_dht_nodes",
]
