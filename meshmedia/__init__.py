"""meshmedia: share a media library among family and friends over BitTorrent.

A curator publishes files from a drop folder into a JSON manifest and seeds them
from an in-process libtorrent session; clients follow the manifest, download,
verify and place each file atomically, and keep seeding to each other.
"""

from __future__ import annotations

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

__all__ = [
    "Config",
    "ConfigError",
    "EngineError",
    "ManifestError",
    "MeshmediaError",
    "PublishError",
    "Share",
    "StoreError",
    "__version__",
    "load_config",
]
