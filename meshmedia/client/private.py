"""The client's private groups: which manifests are a joined group's, and how their
items are fetched (native_notes/privacy.md 3.2).

An item of a private group is an SSL torrent whose info dict carries the group CA.
Its manifest lists a bare magnet (no name, no peer), so the client takes the
`.torrent` from the curator (`GET /torrents/<ih>.torrent`, with the member's read
credential), falls back to the magnet with the group CA as its root certificate,
refuses a torrent without that CA, sets the member certificate on the engine and
dials the members' SSL addresses the curator handed out.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import requests

from meshmedia.bounded import bounded_session
from meshmedia.engine import Engine
from meshmedia.engine.peers import PeerError, parse_peer
from meshmedia.errors import EngineError
from meshmedia.groups import Membership, load_memberships
from meshmedia.manifest import source_name
from meshmedia.torrentinfo import fetch_torrent

log = logging.getLogger(__name__)

# The read credential's header (http/routes.py CREDENTIAL_HEADER, kept equal by a test):
# the client does not import the curator's routes.
CREDENTIAL_HEADER = "Meshmedia-Member"


class PrivateGroups:
    """The joined groups of this client, by manifest URL; thread-safe reads."""

    def __init__(self, memberships: list[Membership]) -> None:
        """Hold `memberships` (see load)."""
        self._by_url = {m.manifest_url: m for m in memberships}
        for m in memberships:  # the group's sealed DHT item is a source of its manifest too
            if m.dht_public_key is not None:
                self._by_url[source_name(bytes.fromhex(m.dht_public_key), m.group)] = m
        self._local = threading.local()

    @classmethod
    def load(cls, state_dir: Path) -> PrivateGroups:
        """The groups joined in `state_dir` (none: an empty set)."""
        return cls(load_memberships(state_dir))

    def __len__(self) -> int:
        return len({m.group for m in self._by_url.values()})

    def for_url(self, manifest_url: str) -> Membership | None:
        """The membership whose manifest is at `manifest_url`, or None (a public group)."""
        return self._by_url.get(manifest_url)

    def pins(self) -> dict[str, str]:
        """`https://host:port` of each joined curator -> its certificate's SHA-256."""
        found = {}
        for m in self._by_url.values():
            parts = urlsplit(m.manifest_url)
            if parts.scheme == "https" and m.curator_pin:
                found[f"https://{parts.netloc}"] = m.curator_pin
        return found

    def set_certificates(self, engine: Engine) -> None:
        """Give the engine each group's member certificate (at every start: libtorrent
        keeps certificates in memory only)."""
        for m in {m.group: m for m in self._by_url.values()}.values():
            engine.set_group_certificate(m.ca, m.certificate, m.key)
            log.info("member %s of private group %s", m.member_id, m.group)

    def fetch_torrent(self, m: Membership, info_hash: str) -> bytes | str:
        """The `.torrent` of an item of `m`'s group from its curator, or why not."""
        url = torrent_url(m.manifest_url, info_hash)
        headers = {CREDENTIAL_HEADER: m.credential} if m.credential else {}
        try:
            return fetch_torrent(self._session(headers), url)
        except EngineError as exc:
            return str(exc)

    def _session(self, headers: dict[str, str]) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:  # the joined curators' certificates pinned (curator_tls.py)
            session = self._local.session = bounded_session(self.pins())
        session.headers.pop(CREDENTIAL_HEADER, None)
        session.headers.update(headers)
        return session


def torrent_url(manifest_url: str, info_hash: str) -> str:
    """`<scheme>://<host:port>/torrents/<ih>.torrent` on the manifest's server."""
    parts = urlsplit(manifest_url)
    return f"{parts.scheme}://{parts.netloc}/torrents/{info_hash}.torrent"


def member_peers(m: Membership) -> list[tuple[str, int]]:
    """The members' SSL addresses the curator handed out, as (host, port); a bad one is
    skipped with a log line."""
    peers = []
    for text in m.peers:
        try:
            peers.append(parse_peer(text))
        except PeerError as exc:
            log.warning("group %s: ignoring peer %r: %s", m.group, text[:80], exc)
    return peers
