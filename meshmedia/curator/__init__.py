"""The curator: publishes what lands in the share folders, seeds it, keeps the manifests,
and announces them in the DHT; `Curator` composes the parts, `serve` runs them."""

from __future__ import annotations

from .daemon import Curator, serve
from .publisher import Publisher
from .watcher import Watcher

__all__ = ["Curator", "Publisher", "Watcher", "serve"]
