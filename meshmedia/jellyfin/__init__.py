"""Telling Jellyfin which files arrived: a batching notifier and the API calls it makes."""

from __future__ import annotations

from .api import JellyfinCheck, check
from .notifier import JellyfinNotifier, map_path

__all__ = ["JellyfinCheck", "JellyfinNotifier", "check", "map_path"]
