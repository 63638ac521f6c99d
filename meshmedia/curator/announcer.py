"""The curator's side of manifests in the DHT: puts every group's pointer (BEP 46).

The pointer format is manifest/pointers.py's: the manifest itself when it is
small enough, else the info hash of a one-file torrent of it, which the curator
seeds here; a client following the key (`DhtFollower`, in client/follow.py)
looks the pointer up, fetches the manifest, checks the manifest's own signature
against the key, and applies it like one fetched over HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshmedia.config import Config
from meshmedia.engine import MAX_DHT_VALUE, Engine
from meshmedia.engine.building import SourceFile, build_torrent
from meshmedia.errors import MeshmediaError
from meshmedia.groups.sealing import OVERHEAD, seal
from meshmedia.hashing import hash_file
from meshmedia.manifest import Manifest, ManifestStore, Pointer, SigningKey
from meshmedia.manifest.durability import write_atomic
from meshmedia.private_files import private_dir
from meshmedia.store import Store

from .addresses import advertised_addresses
from .swarms import SealedGroup

log = logging.getLogger(__name__)

REPUT_INTERVAL = 15 * 60.0  # BEP 44 nodes drop items after about two hours
FIRST_RETRY = 5.0  # a put that reached no node is tried again after this, then doubling
SEED_KEY = "dht.seed:"  # + group: info hash of the manifest torrent the curator seeds


@dataclass
class _Announced:
    etag: str
    due: float
    retry: float


class DhtAnnouncer:
    """The curator's side: puts every group's latest manifest version into the DHT.

    A thread compares each group's manifest with what it last announced (once a
    second; the manifests are in memory) and announces a new version at once.
    It puts again every `reput_interval` seconds (DHT nodes forget items), and
    sooner, with a doubling delay, while a put reaches no node at all (at start
    the DHT is often still empty).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: Engine,
        manifests: ManifestStore,
        key: SigningKey,
        *,
        reput_interval: float = REPUT_INTERVAL,
        poll: float = 1.0,
        sealed: Callable[[str], SealedGroup | None] = lambda group: None,
    ) -> None:
        """`sealed(group)`: how a private group's pointer is sealed (None: a public group,
        its pointer in clear under `key` and the group's name as salt, as before)."""
        self._config = config
        self._sealed = sealed
        self._store = store
        self._engine = engine
        self._manifests = manifests
        self._key = key
        self._reput = reput_interval
        self._poll = poll
        self._folder = Path(config.state_dir) / "dht"
        self._announced: dict[str, _Announced] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="meshmedia-dht-announce", daemon=True
        )

    def start(self) -> None:
        """Start announcing in the background."""
        private_dir(self._folder)
        self._thread.start()
        log.info("announcing manifests in the DHT under key %s", self._key.public_hex)

    def close(self) -> None:
        """Stop announcing (a put under way is left to finish)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for group in self._manifests.groups():
                try:
                    self._maybe_announce(group)
                except Exception:
                    log.exception("announcing group %s in the DHT failed", group)
            self._stop.wait(self._poll)

    def _maybe_announce(self, group: str) -> None:
        manifest = self._manifests.get(group)
        last = self._announced.get(group)
        now = time.monotonic()
        if manifest.version == 0 or (last and last.etag == manifest.etag and now < last.due):
            return
        retry = last.retry if last and last.etag == manifest.etag else FIRST_RETRY
        try:
            nodes = self.announce(manifest, self._sealed(group))
        except MeshmediaError as exc:
            log.warning("cannot announce %s v%d: %s", group, manifest.version, exc)
            nodes = 0
        if nodes > 0:
            self._announced[group] = _Announced(manifest.etag, now + self._reput, FIRST_RETRY)
        else:
            log.info("DHT put of %s reached no node yet; again in %.0f s", group, retry)
            self._announced[group] = _Announced(
                manifest.etag, now + retry, min(retry * 2, self._reput)
            )

    def announce(self, manifest: Manifest, sealed: SealedGroup | None = None) -> int:
        """Put the pointer to `manifest` into the DHT now; returns how many nodes took it.
        A private group's (`sealed`) is encrypted, under the group's own key and a salt
        that does not name it; its manifest torrent is an SSL torrent of the group."""
        room = MAX_DHT_VALUE - (OVERHEAD if sealed is not None else 0)
        pointer = Pointer(manifest.group, manifest.version, manifest.to_json())
        if len(pointer.encode()) > room:
            torrent = self._seed(manifest, sealed.ca if sealed is not None else None)
            peers = self._peers(ssl=sealed is not None)
            pointer = Pointer(manifest.group, manifest.version, torrent=torrent, peers=peers)
        if sealed is None:
            key, salt, value = self._key, manifest.group.encode(), pointer.encode()
        else:
            key, salt = sealed.key, sealed.salt
            value = seal(sealed.secret, key.public, salt, pointer.encode())
        nodes = self._engine.dht.put(key.expanded_secret, key.public, value, salt, timeout=30)
        how = "inline" if pointer.manifest is not None else f"torrent {pointer.torrent}"
        log.info(
            "DHT: %s v%d (%s) stored on %d nodes", manifest.group, manifest.version, how, nodes
        )
        return nodes

    def _seed(self, manifest: Manifest, ca: bytes | None) -> str:
        """Seed a torrent of the manifest file (a private group's: SSL with its CA, named
        by its hash, not its group); stop seeding the group's previous one."""
        name = f"{manifest.group}.v{manifest.version}.json"
        if ca is not None:
            name = f"{hashlib.sha256(manifest.dumps()).hexdigest()[:16]}.json"
        path = self._folder / name
        write_atomic(path, manifest.dumps())
        built = build_torrent([SourceFile(path.name, path, hash_file(path))], ca)
        info_hash = self._engine.add_seed(built.data, self._folder, private_ca=ca)
        previous = self._store.get(SEED_KEY + manifest.group)
        if previous and previous != info_hash and self._engine.status(previous) is not None:
            self._engine.remove(previous, delete_files=True)
        self._store.put(SEED_KEY + manifest.group, info_hash)
        return info_hash

    def _peers(self, ssl: bool = False) -> tuple[str, ...]:
        """The advertised addresses; for a private group's pointer the same hosts on the
        SSL port."""
        peers = advertised_addresses(self._config, self._engine)
        if not ssl:
            return tuple(peers)
        port = self._engine.ssl_listen_port
        return tuple(f"{peer.rsplit(':', 1)[0]}:{port}" for peer in peers)
