"""The curator's addresses a client dials for each item of a manifest.

Every advertised address of the curator: the item's magnet `x.pe`, the manifest's
top-level `peers` (the curator keeps it current: LAN address, and the router's external
address with the mapped port; curator/addresses.py), and the host the manifest was
fetched from with each of those ports (an operator may reach the curator by an address
it does not know it has). The list is untrusted input: bad entries are dropped with a
warning, at most MAX_PEERS are kept.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from meshmedia.engine.peers import PeerError, magnet_peers, parse_peer

log = logging.getLogger(__name__)

MAX_PEERS = 16
Peer = tuple[str, int]


def listed_peers(url: str, extra: Mapping[str, Any]) -> list[Peer]:
    """The dialable entries of a manifest's `peers` (from `url`), in order, deduplicated."""
    raw = extra.get("peers")
    if raw is None:
        return []
    if not isinstance(raw, list):
        log.warning("manifest %s: ignoring its 'peers', not a list", url)
        return []
    found: list[Peer] = []
    for entry in raw[:MAX_PEERS]:
        try:
            if not isinstance(entry, str):
                raise PeerError(f"peer {entry!r:.60} is not a string")
            peer = parse_peer(entry)
        except PeerError as exc:
            log.warning("manifest %s: ignoring a peer: %s", url, exc)
            continue
        if peer not in found:
            found.append(peer)
    return found


def manifest_host(url: str) -> str | None:
    """The IP literal the manifest URL names, or None (a host name, or no HTTP URL)."""
    try:
        host = urlsplit(url).hostname
        ipaddress.ip_address(host or "")
    except ValueError:
        return None
    return host


def dial_list(url: str, listed: list[Peer], torrent: str) -> list[Peer]:
    """What to dial for one item: its magnet's peers, the manifest's, then the manifest's
    host with each of their ports."""
    found: list[Peer] = []
    own = magnet_peers(torrent)[0] if torrent.startswith("magnet:?") else []
    for peer in [*own, *listed]:
        if peer not in found:
            found.append(peer)
    host = manifest_host(url)
    if host is not None:
        for port in sorted({port for _host, port in found}):
            if (host, port) not in found:
                found.append((host, port))
    return found


class CuratorPeers:
    """The `peers` of each followed manifest, as last applied; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_url: dict[str, list[Peer]] = {}

    def update(self, url: str, extra: Mapping[str, Any]) -> bool:
        """Take the `peers` of a manifest just applied; True when they changed."""
        peers = listed_peers(url, extra)
        with self._lock:
            changed = self._by_url.get(url, []) != peers
            self._by_url[url] = peers
        if changed and peers:
            log.info("manifest %s: the curator is at %s", url, " ".join(map(_shown, peers)))
        return changed

    def for_item(self, url: str, torrent: str) -> list[Peer]:
        """The peers to dial for an item of `url` with this `torrent`."""
        with self._lock:
            listed = list(self._by_url.get(url, []))
        return dial_list(url, listed, torrent)


def _shown(peer: Peer) -> str:
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
