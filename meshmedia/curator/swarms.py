"""Which groups' items are private SSL torrents, and the curator's own place in each swarm.

A group that is not public (`--public`) is private: its items are built as SSL
torrents with the group's CA in the info dict (native_notes/privacy.md 3.2), seeded
off the DHT and LSD, and listed with a bare magnet (no name, no peer: members get
the `.torrent` from the curator and the peers from it). The curator seeds as a
member like any other, with a certificate its group CA issues it at start under
an opaque random id (a certificate is shown to whoever dials with a hash, 2.1).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshmedia.engine import Engine
from meshmedia.engine.certificates import ca_key, torrent_ca_of
from meshmedia.groups import GroupAuthority
from meshmedia.groups.sealing import dht_salt
from meshmedia.manifest import SigningKey

log = logging.getLogger(__name__)

# The curator holds the CA key itself, so a long-lived certificate of its own adds no
# risk; a year means a curator that runs without a restart for a year must be renewed.
CURATOR_CERT_DAYS = 365


@dataclass(frozen=True)
class SealedGroup:
    """How a private group's BEP 46 item is put: under its own key and salt, sealed with
    its secret; a manifest torrent it points to is an SSL torrent of its CA."""

    key: SigningKey
    salt: bytes
    secret: bytes = field(repr=False)
    ca: bytes


class PrivateSwarms:
    """The CA of each private group (made on first use) and the curator's certificate
    in each, set on the engine once per group; thread-safe."""

    def __init__(self, state_dir: Path, engine: Engine, is_private: Callable[[str], bool]):
        """Groups for which `is_private(group)` keep their CA under `state_dir`."""
        self._state_dir = Path(state_dir)
        self._engine = engine
        self._is_private = is_private
        self._lock = threading.Lock()
        self._authorities: dict[str, GroupAuthority] = {}

    def ca_for(self, group: str) -> bytes | None:
        """The CA (PEM) of `group`'s torrents; None for a public group (plain torrents)."""
        if not self._is_private(group):
            return None
        return self._authority(group).ca_pem

    def sealed(self, group: str) -> SealedGroup | None:
        """How `group`'s BEP 46 item is sealed; None for a public group (as before)."""
        if not self._is_private(group):
            return None
        authority = self._authority(group)
        key = SigningKey(authority.dht_seed, authority.dht_public)
        return SealedGroup(key, dht_salt(authority.secret), authority.secret, authority.ca_pem)

    def _authority(self, group: str) -> GroupAuthority:
        with self._lock:
            authority = self._authorities.get(group)
            if authority is None:
                authority = GroupAuthority.open(self._state_dir, group)
                member_id = secrets.token_hex(8)
                cert, key = authority.issue_self(member_id, days=CURATOR_CERT_DAYS)
                self._engine.set_group_certificate(authority.ca_pem, cert, key)
                self._authorities[group] = authority
                log.info("group %s is private: its items are SSL torrents", group)
        return authority

    def fits(self, group: str, torrent: bytes) -> bool:
        """True when `torrent` is what `group` needs: SSL with its CA when the group is
        private, plain when it is public."""
        want = self.ca_for(group)
        have = torrent_ca_of(torrent)
        return (have == "") if want is None else (have == ca_key(want))

    def peers(self, host: str | None) -> list[str]:
        """The curator's SSL addresses for members (`host:port`): on `host`, then the
        router's external address with the mapped SSL port (members in other homes)."""
        port = self._engine.ssl_listen_port
        if host is None or not port:
            return []
        found = [_endpoint(host, port)]
        view = self._engine.portmap.view()
        if view.external_address and view.ssl_port:
            external = _endpoint(view.external_address, view.ssl_port)
            if external not in found:
                found.append(external)
        return found


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
