"""The client's side of DHT manifests: follow a curator's public key (`sync --follow`).

`DhtFollower` looks up the pointer the curator keeps in the DHT (the format is
manifest/pointers.py's), fetches the manifest it points to (inline, or a one-file
torrent found through the DHT) and applies it under the source name
`dht:<key>/<group>` with a trust policy pinned to the followed key (the one check
of its signature, rollback protection included). It keeps seeding the latest
manifest torrent, so the manifest spreads among the clients even while the curator
is away. Its collaborators come in through its constructor: the engine, the store,
and the function that applies a manifest (`SyncClient.apply`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from meshmedia.config import Config
from meshmedia.engine import Engine, TorrentState
from meshmedia.engine.peers import PeerError, parse_peer
from meshmedia.errors import EngineError, ManifestError, MeshmediaError
from meshmedia.groups import load_memberships
from meshmedia.groups.sealing import dht_salt, unseal
from meshmedia.manifest import (
    Pointer,
    TrustPolicy,
    canonical_json,
    parse_follow,
    parse_public_key,
    source_name,
)
from meshmedia.private_files import private_dir
from meshmedia.store import Store

from .fetcher import MAX_MANIFEST_BYTES
from .plan import saved_manifest

log = logging.getLogger(__name__)

FIRST_POLL = 10.0  # seconds between lookups at first; doubles up to the sync interval
LOOKUP_TIMEOUT = 15.0
FETCH_TIMEOUT = 120.0
ONCE_RETRY = 2.0  # seconds between lookups while --once waits for a pointer
MAX_HINTS = 16  # peers dialled from one pointer (a 1000-byte value holds ~50)
TORRENT_KEY = "dht.torrent:"  # + source: the manifest torrent this client seeds


class Applies(Protocol):
    """How a follower hands a manifest on (SyncClient.apply)."""

    def __call__(
        self, url: str, body: bytes, etag: str | None = None, *, trust: TrustPolicy | None = None
    ) -> bool:
        """Plan the manifest `body` from `url` if `trust` admits it; False when unusable."""


@dataclass(frozen=True)
class Sealed:
    """A private group's BEP 46 item: its salt and secret (groups/sealing.py), the CA of
    its manifest torrent, and the curator's signing key its manifests must carry (the
    item's own key is the group's, not the curator's)."""

    salt: bytes
    secret: bytes = field(repr=False)
    ca: bytes
    signer: bytes


@dataclass(frozen=True)
class Following:
    """What the followers of a client share: its engine, its store, how it applies."""

    engine: Engine
    store: Store
    apply: Applies


class DhtFollower:
    """Follows one (public key, group) through the DHT and applies each new version."""

    def __init__(
        self,
        parts: Following,
        folder: Path,
        follow: tuple[bytes, str],
        stop: threading.Event | None = None,
        sealed: Sealed | None = None,
    ) -> None:
        """Follow `follow` = (public key, group); keep its manifest torrents in `folder`;
        `sealed`: a private group's item (encrypted, its own salt, SSL manifest torrent)."""
        self._sealed = sealed
        # a joined group's sealed pointer backs up its HTTP manifest URL (followed too):
        # not finding it is no failure of `--once` by itself
        self.fallback = sealed is not None
        self.engine = parts.engine
        self.store = parts.store
        self._apply = parts.apply
        self.public, self.group = follow
        self.source = source_name(self.public, self.group)
        self.version = -1  # the newest version applied
        self._refused = -1  # the newest version refused: not fetched again
        self._stop = stop or threading.Event()
        signer = sealed.signer if sealed is not None else self.public
        self._trust = TrustPolicy(self.store, trusted=signer)
        self._folder = folder / f"{self.public.hex()[:16]}-{self.group}"

    def restore(self) -> None:
        """Apply the last good manifest of this source kept in the store, if any."""
        saved = saved_manifest(self.store, self.source)
        if saved is not None and self._apply(self.source, *saved, trust=self._trust):
            self.version = int(json.loads(saved[0]).get("version", -1))
            log.info("using the last good manifest of %s (v%d)", self.source, self.version)

    def check(self, timeout: float = LOOKUP_TIMEOUT) -> bool | None:
        """One lookup: True when a new version was applied, False when none was found
        to apply, None when the DHT holds nothing under the key yet."""
        sealed = self._sealed
        salt = sealed.salt if sealed is not None else self.group.encode()
        item = self.engine.dht.get(self.public, salt, timeout)
        if item is None:
            log.debug("nothing in the DHT for %s yet", self.source)
            return None
        value = item.value
        if sealed is not None:
            value = unseal(sealed.secret, self.public, salt, value)
        pointer = Pointer.decode(value)
        if pointer.group != self.group:
            raise ManifestError(f"the DHT item for {self.source} names group {pointer.group}")
        if pointer.version <= max(self.version, self._refused):
            return False
        log.info("%s: version %d in the DHT (seq %d)", self.source, pointer.version, item.seq)
        body = self._body(pointer)
        if not self._apply(self.source, body, trust=self._trust):
            self._refused = pointer.version  # refused or unusable (logged): not fetched again
            return False
        self.version = pointer.version
        return True

    def _body(self, pointer: Pointer) -> bytes:
        if pointer.manifest is not None:
            return canonical_json(pointer.manifest)
        return self._fetch(pointer.torrent or "", _peers(pointer.peers))

    def _fetch(self, info_hash: str, peers: list[tuple[str, int]]) -> bytes:
        """Download the manifest torrent, read its one file, keep seeding it."""
        magnet = f"magnet:?xt=urn:btih:{info_hash}"
        private_dir(self._folder.parent)
        private_dir(self._folder)
        ca = self._sealed.ca if self._sealed is not None else None
        ih = self.engine.add_download(magnet, self._folder, peers, private_ca=ca)
        deadline = time.monotonic() + FETCH_TIMEOUT
        while True:
            try:
                self.engine.wait_until(ih, TorrentState.SEEDING, 1.0)
                break
            except TimeoutError:
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise EngineError(f"manifest torrent {ih} did not arrive") from None
        files = self.engine.files(ih)
        if len(files) != 1 or files[0][1] > MAX_MANIFEST_BYTES:
            self.engine.remove(ih, delete_files=True)
            raise ManifestError(f"torrent {ih} is not one manifest file")
        body = (self._folder / files[0][0]).read_bytes()
        previous = self.store.get(TORRENT_KEY + self.source)
        if previous and previous != ih and self.engine.status(previous) is not None:
            self.engine.remove(previous, delete_files=True)
        self.store.put(TORRENT_KEY + self.source, ih)
        return body

    def follow(self, interval: float) -> None:
        """Look up until stopped: every FIRST_POLL s at first, doubling up to `interval`,
        and back to FIRST_POLL after each new version."""
        first = min(FIRST_POLL, interval)
        pause = first
        while not self._stop.is_set():
            try:
                changed = self.check()
            except MeshmediaError as exc:
                log.warning("DHT lookup for %s failed: %s", self.source, exc)
                changed = False
            except Exception:  # no pointer may end the follower thread (finding 6)
                log.exception("DHT lookup for %s failed unexpectedly", self.source)
                changed = False
            pause = first if changed else min(pause * 2, interval)
            self._stop.wait(pause)


def _peers(hints: tuple[str, ...]) -> list[tuple[str, int]]:
    """The pointer's peers that can be dialled; each other one is named in a warning."""
    peers = []
    for hint in hints[:MAX_HINTS]:
        try:
            peers.append(parse_peer(hint))
        except PeerError as exc:
            log.warning("ignoring a peer of a DHT pointer: %s", exc)
    return peers


def followers(config: Config, parts: Following, stop: threading.Event) -> list[DhtFollower]:
    """One follower per --follow, each with the last good manifest applied."""
    folder = Path(config.state_dir) / "dht"
    result = []
    for spec in config.follow:
        follow = parse_follow(spec, config.group)
        follower = DhtFollower(parts, folder, follow, stop)
        follower.restore()
        result.append(follower)
    for m in load_memberships(config.state_dir) if config.dht else []:
        if m.dht_public_key is None or m.dht_secret is None:
            continue
        secret = bytes.fromhex(m.dht_secret)
        try:
            signer = parse_public_key(m.signing_key)
        except MeshmediaError as exc:
            log.error("group %s is not followed in the DHT: %s", m.group, exc)
            continue
        sealed = Sealed(dht_salt(secret), secret, m.ca, signer)
        follow = (bytes.fromhex(m.dht_public_key), m.group)
        follower = DhtFollower(parts, folder, follow, stop, sealed)
        follower.restore()
        result.append(follower)
    return result


def start_following(
    config: Config, parts: Following, stop: threading.Event, stack: ExitStack
) -> None:
    """Follow every --follow key on its own thread until `stop`; joined when `stack` closes."""
    threads = []
    for follower in followers(config, parts, stop):
        thread = threading.Thread(
            target=follower.follow, args=(config.interval,), name=f"follow {follower.source}"
        )
        thread.start()
        threads.append(thread)
        log.info("following %s through the DHT", follower.source)

    def join() -> None:
        stop.set()
        for thread in threads:
            thread.join(timeout=LOOKUP_TIMEOUT + 5)

    stack.callback(join)


def follow_once(
    config: Config,
    parts: Following,
    stop: threading.Event,
    problems: list[str],
    timeout: float = 60.0,
) -> None:
    """`--once`: look each followed key up until its pointer is found (or `timeout`, or
    `stop`); what could not be found is added to `problems`."""
    todo = followers(config, parts, stop)
    if todo:
        parts.engine.dht.wait_for_nodes(1, min(timeout, 30.0), stop)
    deadline = time.monotonic() + timeout
    for follower in todo:
        found: bool | None = None
        while found is None and time.monotonic() < deadline:
            try:
                found = follower.check()
            except MeshmediaError as exc:
                problems.append(f"{follower.source}: {exc}")
                break
            except Exception as exc:  # a hostile pointer fails this key, not the run
                log.exception("DHT lookup for %s failed unexpectedly", follower.source)
                problems.append(f"{follower.source}: {type(exc).__name__}: {exc}")
                break
            if found is None and stop.wait(ONCE_RETRY):
                break
        if follower.version < 0 and follower.fallback:
            log.info("no sealed pointer of %s in the DHT (its curator's URL is followed)",
                     follower.group)  # fmt: skip
        elif follower.version < 0:
            problems.append(f"no usable manifest found in the DHT for {follower.source}")
