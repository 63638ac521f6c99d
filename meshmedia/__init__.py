"""meshmedia: share a media library among family and friends over BitTorrent.

A curator publishes files from a drop folder into a JSON manifest and seeds them
from an in-process libtorrent session; clients follow the manifest, download,
verify and place each file atomically, and keep seeding to each other.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .config import Config, Share, load_config
from .errors import (
    ConfigError,
    EngineError,
    ManifestError,
    MeshmediaError,
    PublishError,
    StoreError,
)

# The daemons' entry points load libtorrent: imported on first use, so that
# `import meshmedia` and `meshmedia --help` stay fast.
_LAZY = {
    "Curator": "curator",
    "serve": "curator",
    "sync_once": "client",
    "sync_forever": "client",
    "Engine": "engine",
    "TorrentState": "engine",
    "Publisher": "curator",
    "ManifestStore": "manifest",
    "Store": "store",
}


def __getattr__(name: str) -> object:
    """Load the daemon classes and functions named in `_LAZY` on first use."""
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'meshmedia' has no attribute {name!r}")


__all__ = [
    "Config",
    "ConfigError",
    "Curator",
    "Engine",
    "EngineError",
    "ManifestError",
    "ManifestStore",
    "MeshmediaError",
    "PublishError",
    "Publisher",
    "Share",
    "Store",
    "StoreError",
    "TorrentState",
    "__version__",
    "load_config",
    "serve",
    "sync_forever",
    "sync_once",
]
