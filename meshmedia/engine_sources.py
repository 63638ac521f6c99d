"""What the engine can be asked to download or seed, turned into add_torrent_params:
`.torrent` bytes, a magnet URI, or an http(s) URL of a `.torrent`."""

from __future__ import annotations

import urllib.request
from typing import Any

import libtorrent as lt

from .errors import EngineError
from .torrentinfo import MAX_TORRENT_BYTES


def load_torrent(data: bytes) -> Any:
    """add_torrent_params for `.torrent` bytes; EngineError when they are not one."""
    try:
        return lt.load_torrent_buffer(data)
    except RuntimeError as exc:
        raise EngineError(f"not a valid .torrent: {exc}") from exc


def fetch_torrent(url: str, timeout: float = 30.0) -> bytes:
    """The `.torrent` at an http(s) URL, at most MAX_TORRENT_BYTES."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only
            data = response.read(MAX_TORRENT_BYTES + 1)
    except OSError as exc:
        raise EngineError(f"cannot fetch {url}: {exc}") from exc
    if len(data) > MAX_TORRENT_BYTES:
        raise EngineError(f"{url} is larger than {MAX_TORRENT_BYTES} bytes")
    return data


def params_for(source: str | bytes) -> Any:
    """add_torrent_params for `.torrent` bytes, a magnet URI or an http(s) `.torrent` URL."""
    if isinstance(source, bytes):
        return load_torrent(source)
    if source.startswith("magnet:"):
        try:
            return lt.parse_magnet_uri(source)
        except RuntimeError as exc:
            raise EngineError(f"not a usable magnet URI: {exc}") from exc
    if source.startswith(("http://", "https://")):
        return load_torrent(fetch_torrent(source))
    raise EngineError(f"unknown torrent source {source[:80]!r}")
