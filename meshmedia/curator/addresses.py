"""Where other machines reach this curator: the LAN address, and the router's mapped ports.

`advertised_addresses(config, engine)` is the one answer, used in magnets (`x.pe`),
in each manifest's top-level `peers` list and by invite codes: the LAN address with
the BitTorrent port (clients at home: the lab's routers, like many, do no hairpin NAT),
plus the external address with the *mapped* port once the router mapped it (a strict
home's external address, learned from peers, is not advertised: nothing there answers).
An explicit `--advertise-host` wins: then it alone is advertised (`none`: nothing).
The `PeerAdvertiser` keeps every manifest's `peers` list equal to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from urllib.parse import quote

from meshmedia.config import Config
from meshmedia.engine import Engine
from meshmedia.engine.building import advertise_host, magnet_uri
from meshmedia.engine.portmap import PortMapView
from meshmedia.manifest import ManifestStore

log = logging.getLogger(__name__)


def endpoint(host: str, port: int) -> str:
    """`host:port`, an IPv6 host in brackets (the form `x.pe` and `peers` take)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised_addresses(config: Config, engine: Engine) -> list[str]:
    """The BitTorrent endpoints (`IP:PORT`) peers should dial for this curator, best first
    for its own home: the LAN address, then the external address with the mapped port."""
    return _advertised(config, engine.listen_port, engine.portmap.view())


def _advertised(config: Config, listen_port: int, view: PortMapView) -> list[str]:
    lan = advertise_host(config)
    if lan is None:
        return []
    found = [endpoint(lan, listen_port)]
    if config.advertise_host:  # the operator said where: nothing else
        return found
    if view.mapped and view.external_address and view.peer_port:
        external = endpoint(view.external_address, view.peer_port)
        if external not in found:
            found.append(external)
    return found


def magnet_for(info_hash: str, name: str, peers: Sequence[str]) -> str:
    """The item's magnet with one `x.pe` per advertised address."""
    uri = magnet_uri(info_hash, name, None, 0)
    return uri + "".join(f"&x.pe={quote(peer, safe='[]:')}" for peer in peers)


def reachable_http(config: Config) -> bool:
    """True when the HTTP module listens where other machines can reach it."""
    return not (config.host in ("::1", "localhost") or config.host.startswith("127."))


def advertised_http(config: Config, engine: Engine) -> list[str]:
    """Base URLs (`http://IP:PORT`) of this curator's HTTP module for other machines: the
    LAN address, and the external address with the mapped HTTP port when mapped. Empty
    while it listens on loopback only."""
    if not reachable_http(config):
        return []
    lan = advertise_host(config)
    if lan is None:
        return []
    found = [f"http://{endpoint(lan, config.port)}"]
    view = engine.portmap.view()
    if not config.advertise_host and view.external_address and view.http_port:
        found.append(f"http://{endpoint(view.external_address, view.http_port)}")
    return found


class PeerAdvertiser:
    """Keeps the top-level `peers` of every manifest equal to `advertised_addresses`.

    Checked once a second and at once on a port-mapping change; a change is a new
    manifest version (signed like any other), so clients following it redial.
    """

    def __init__(
        self, config: Config, engine: Engine, manifests: ManifestStore, poll: float = 1.0
    ) -> None:
        self._config = config
        self._engine = engine
        self._manifests = manifests
        self._poll = poll
        self._said: dict[str, list[str]] = {}  # what the log said each group advertises
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshmedia-peers", daemon=True)

    def start(self) -> None:
        """Start keeping the lists; advertised at once."""
        self._engine.portmap.subscribe(lambda _view: self._wake.set())
        self.update()
        self._thread.start()

    def update(self) -> None:
        """Write the current addresses into each manifest that has items and differs."""
        # One view for both: read twice, a mapping that arrived in between gave the LAN
        # address alone as not settling, and a restart made two versions (the lab, 2026-12-03).
        view = self._engine.portmap.view()
        peers = _advertised(self._config, self._engine.listen_port, view)
        # Right after a restart the router has not answered yet (<= 0.2 s in the lab, 10 s
        # at most): the external address listed before is kept until then, so a restart
        # does not make two new versions (without it, then with it again).
        settling = self._engine.portmap.enabled and not (view.mapped or view.gave_up)
        if not settling:
            self._manifests.use_peers(peers)
        for group in self._manifests.groups():
            manifest = self._manifests.get(group)
            listed = manifest.extra.get("peers")
            if settling and isinstance(listed, list) and set(peers) < set(listed):
                continue
            if manifest.version > 0 and listed != peers:
                self._manifests.set_peers(group, peers)
                listed = peers
            # said once per change, also when a new item's version already carried them
            if listed == peers and self._said.get(group) != peers:
                self._said[group] = list(peers)
                log.info("manifest %s: advertising %s", group, " ".join(peers) or "no peer")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.update()
            except Exception:
                log.exception("advertising the curator's addresses failed")

    def close(self) -> None:
        """Stop keeping the lists."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
