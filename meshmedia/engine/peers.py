"""Peer endpoints from untrusted text: a magnet's `x.pe`, a DHT pointer's `peers`.

libtorrent dials only IP literals: a host name handed to `connect_peer` raised
Boost.Python.ArgumentError and a port over 65535 OverflowError (review12 finding
6: each killed the DHT follower thread or failed every item), and
`parse_magnet_uri` drops such an `x.pe` without a word (measured, 2.1.1:
`x.pe=localhost:6881` and `x.pe=127.0.0.1:70000` give no peer). So every peer is
checked here first, and refused with a message naming it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl

from meshmedia.errors import EngineError


class PeerError(EngineError):
    """A peer that cannot be dialled: not `IP:PORT` with a port from 1 to 65535."""


def check_peer(host: str, port: int) -> tuple[str, int]:
    """`(host, port)` when host is an IP literal and 1 <= port <= 65535, else PeerError."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise PeerError(
            f"peer {shown!r:.100} is not an IP address (host names are not resolved)"
        ) from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise PeerError(f"peer {shown!r:.100} has no port from 1 to 65535")
    return host, port


def parse_peer(text: str) -> tuple[str, int]:
    """`IP:PORT` or `[IPv6]:PORT` as `(ip, port)`; PeerError naming `text` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or len(port) > 5:
        raise PeerError(f"peer {text!r:.100} is not IP:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise PeerError(f"peer {text!r:.100}: an IPv6 address must be in brackets")
    return check_peer(host, int(port))


def magnet_peers(magnet: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The `x.pe` peers of a magnet that can be dialled, and why each other one cannot."""
    good: list[tuple[str, int]] = []
    bad: list[str] = []
    for key, value in parse_qsl(magnet[len("magnet:?") :]):
        if key != "x.pe":
            continue
        try:
            good.append(parse_peer(value))
        except PeerError as exc:
            bad.append(str(exc))
    return good, bad
