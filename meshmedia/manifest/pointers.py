"""Manifests with no server at all: the pointer a curator keeps in the DHT for each group.

The curator stores, for each group, a small signed pointer in the DHT (a BEP 46
mutable item) under its ed25519 public key with the group name as salt:

    {"group": "family", "version": 12, "manifest": {...}}            (small enough)
    {"group": "family", "version": 12, "torrent": "<info hash>",
     "peers": ["192.168.1.10:6881"]}                                  (otherwise)

The torrent carries one file, the signed manifest JSON; the curator seeds it
and so do the clients that fetched it. `peers` is a hint: the DHT finds the
seeders anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshmedia.bounded import ReadError, load_json
from meshmedia.config import GROUP_RE
from meshmedia.errors import ManifestError

from .format import canonical_json
from .signing import parse_public_key

MAX_ITEM_BYTES = 1000  # BEP 44: a DHT item's value holds at most 1000 bytes


@dataclass(frozen=True)
class Pointer:
    """The value stored in the DHT for one group: the manifest, or where to fetch it."""

    group: str
    version: int
    manifest: Mapping[str, Any] | None = None
    torrent: str | None = None
    peers: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """Compact JSON, the bytes that go into the DHT."""
        body: dict[str, Any] = {"group": self.group, "version": self.version}
        if self.manifest is not None:
            body["manifest"] = dict(self.manifest)
        else:
            body["torrent"] = self.torrent
            if self.peers:
                body["peers"] = list(self.peers)
        return canonical_json(body)

    @classmethod
    def decode(cls, data: bytes) -> Pointer:
        """Parse a DHT value; ManifestError when it is not a meshmedia pointer."""
        try:
            obj = load_json(data, max_bytes=MAX_ITEM_BYTES)
        except ReadError as exc:
            raise ManifestError(f"the DHT item is not usable JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ManifestError("the DHT item is not a JSON object")
        group, version = obj.get("group"), obj.get("version")
        manifest, torrent, peers = obj.get("manifest"), obj.get("torrent"), obj.get("peers", [])
        if not isinstance(group, str) or GROUP_RE.match(group) is None:
            raise ManifestError(f"the DHT item names no valid group: {group!r:.80}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ManifestError(f"the DHT item's version {version!r:.40} is not a number")
        if manifest is not None and not isinstance(manifest, dict):
            raise ManifestError("the DHT item's manifest is not a JSON object")
        if manifest is None and not _is_info_hash(torrent):
            raise ManifestError("the DHT item holds neither a manifest nor a torrent info hash")
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ManifestError("the DHT item's peers are not a list of HOST:PORT")
        return cls(group, version, manifest, torrent, tuple(peers))


def _is_info_hash(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 40 and all(c in "0123456789abcdef" for c in value)
    )


def parse_follow(text: str, default_group: str) -> tuple[bytes, str]:
    """Parse `PUBLIC_KEY[:GROUP]` (--follow) into (32-byte key, group)."""
    key, _, group = text.strip().partition(":")
    group = group or default_group
    if GROUP_RE.match(group) is None:
        raise ManifestError(f"{text!r}: {group!r} is not a valid group name")
    return parse_public_key(key), group


def source_name(public: bytes, group: str) -> str:
    """The name a followed key's manifest goes by in the client's store: dht:<key>/<group>."""
    return f"dht:{public.hex()}/{group}"
