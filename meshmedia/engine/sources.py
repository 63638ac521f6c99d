"""What the engine can be asked to download or seed, turned into add_torrent_params:
`.torrent` bytes, a magnet URI, or an http(s) URL of a `.torrent`.

Trackers (`tr=`, `announce`, `announce-list`), web seeds (`ws=`, `url-list`) and
DHT nodes (`nodes`) that a download's source names make libtorrent contact hosts
chosen by whoever wrote the manifest or the `.torrent`; they are dropped unless
the caller allows them (`--allow-trackers`). `load_torrent_buffer` moves them
from the torrent_info into the params (measured, libtorrent 2.1.1: `ti.trackers()`
is empty afterwards), so clearing the params' lists is enough.
"""

from __future__ import annotations

import logging
from typing import Any

import libtorrent as lt

from meshmedia.bounded import bounded_session
from meshmedia.errors import EngineError
from meshmedia.torrentinfo import fetch_torrent as fetch_torrent_bytes

log = logging.getLogger(__name__)


def load_torrent(data: bytes) -> Any:
    """add_torrent_params for `.torrent` bytes; EngineError when they are not one."""
    try:
        return lt.load_torrent_buffer(data)
    except RuntimeError as exc:
        raise EngineError(f"not a valid .torrent: {exc}") from exc


def fetch_torrent(url: str, timeout: float = 30.0) -> bytes:
    """The `.torrent` at an http(s) URL: at most 16 MiB, within `timeout` seconds in all."""
    with bounded_session() as session:
        return fetch_torrent_bytes(session, url, deadline=timeout)


def without_contacts(atp: Any, source: str) -> Any:
    """Drop the trackers, web seeds and DHT nodes `atp` brought from its source."""
    dropped = [*atp.trackers, *atp.url_seeds, *(f"{h}:{p}" for h, p in atp.dht_nodes)]
    if dropped:
        log.info(
            "ignoring %d trackers, web seeds and DHT nodes of %s (--allow-trackers): %s",
            len(dropped),
            source,
            " ".join(str(d)[:80] for d in dropped[:5]),
        )
    atp.trackers = []
    atp.url_seeds = []
    atp.dht_nodes = []
    return atp


def params_for(source: str | bytes, *, allow_trackers: bool = True) -> Any:
    """add_torrent_params for `.torrent` bytes, a magnet URI or an http(s) `.torrent` URL;
    without `allow_trackers`, the source's trackers, web seeds and DHT nodes are dropped."""
    atp = _params(source)
    if allow_trackers:
        return atp
    return without_contacts(atp, "a .torrent" if isinstance(source, bytes) else source[:80])


def _params(source: str | bytes) -> Any:
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
