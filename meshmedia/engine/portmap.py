"""Port mapping on the home router: what libtorrent's UPnP and NAT-PMP achieved, kept up.

libtorrent maps the BitTorrent port (TCP and UDP) by itself; `map_http` adds the
curator's HTTP port. The state comes only from alerts (`portmap_alert`,
`portmap_error_alert`, `external_ip_alert`), copied into plain values at once.
Measured against miniupnpd (native_notes/nat.md, "a."): a router that maps answers
within 0.2 s; one that does not never says so in a useful time (UPnP gives up after
156 s, NAT-PMP silently never), so "no mapping possible" is decided here, 10 s after
start, and said once with the fix. libtorrent renews a NAT-PMP mapping only at 2/3 of
its hour and misses a router's reboot, so the mappings are redone every few minutes
(turning the protocols off and on re-maps in 0.07 s).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libtorrent as lt

log = logging.getLogger(__name__)

NO_MAPPING_AFTER = 10.0  # seconds; a mapping took <= 0.2 s in the lab (nat.md "a.")
REMAP_INTERVAL = 300.0  # seconds between re-mappings (a NAT-PMP-only router's reboot)


@dataclass(frozen=True)
class PortMapView:
    """What the router gave us, as values: the external address (None until known) and
    the external ports of the BitTorrent TCP/UDP port and of the HTTP port (None: not
    mapped). `version` grows with every change; `gave_up`: no mapping in time."""

    external_address: str | None = None
    peer_port: int | None = None
    udp_port: int | None = None
    http_port: int | None = None
    ssl_port: int | None = None  # private groups' SSL socket (TCP), never the peer port
    transports: frozenset[str] = frozenset()
    gave_up: bool = False
    version: int = 0

    @property
    def mapped(self) -> bool:
        """True when other homes can dial the BitTorrent port through the router."""
        return self.peer_port is not None and self.external_address is not None


class PortMapState:
    """The mapping state, fed plain values (the alert handlers' copies); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view = PortMapView()

    def view(self) -> PortMapView:
        """The current state."""
        with self._lock:
            return self._view

    def _change(self, **changes: Any) -> bool:
        with self._lock:
            old = self._view
            new = PortMapView(**{**old.__dict__, **changes, "version": old.version})
            if new == old:
                return False
            self._view = PortMapView(**{**new.__dict__, "version": old.version + 1})
            return True

    def mapped(
        self, transport: str, protocol: str, external_port: int, http: bool, ssl: bool = False
    ) -> bool:
        """A mapping succeeded; True when that changed the state. `ssl`: the mapping of the
        SSL listen socket (libtorrent maps it too; it must not become the peer port)."""
        transports = self.view().transports | {transport}
        if http:
            return self._change(http_port=external_port, transports=transports)
        if ssl:
            if protocol != "tcp":
                return self._change(transports=transports)
            return self._change(ssl_port=external_port, transports=transports)
        key = "peer_port" if protocol == "tcp" else "udp_port"
        return self._change(**{key: external_port}, transports=transports, gave_up=False)

    def external(self, address: str) -> bool:
        """The router (or a peer) told us our external address; an IPv4 one is kept
        over IPv6 (the lab's and most homes' NAT is IPv4). True when it changed."""
        known = self.view().external_address
        if known is not None and ":" not in known and ":" in address:
            return False
        return self._change(external_address=address)

    def give_up(self) -> bool:
        """Mark "no mapping possible"; True the first time (then the caller says so)."""
        view = self.view()
        if view.peer_port is not None or view.gave_up:
            return False
        return self._change(gave_up=True)


class PortMapper:
    """The engine's port mapping: alert handlers, the HTTP port, the re-map tick."""

    def __init__(
        self,
        session: Any,
        *,
        upnp: bool,
        natpmp: bool,
        clock: Callable[[], float] = time.monotonic,
        remap_interval: float = REMAP_INTERVAL,
    ) -> None:
        self._session: Any = session
        self._protocols = {"enable_upnp": upnp, "enable_natpmp": natpmp}
        self._clock = clock
        self._started = clock()
        self._remap_at = self._started + remap_interval
        self._remap_interval = remap_interval
        self.state = PortMapState()
        self._http_port: int | None = None
        self._http_handles: set[tuple[str, int]] = set()
        # While add_port_mapping runs, the alert thread may see its answer before the
        # handles are known here (the lab's curator once advertised its HTTP port as its
        # BitTorrent port): mappings seen meanwhile wait in `_deferred`.
        self._lock = threading.Lock()
        self._deferred: list[tuple[str, str, int, int]] | None = None
        self._lan_address: str | None = None
        self._listeners: list[Callable[[PortMapView], None]] = []

    @property
    def enabled(self) -> bool:
        """True when UPnP or NAT-PMP is on."""
        return any(self._protocols.values())

    def view(self) -> PortMapView:
        """The current mapping state."""
        return self.state.view()

    def subscribe(self, callback: Callable[[PortMapView], None]) -> None:
        """Call `callback(view)` (on the alert thread) after every change."""
        self._listeners.append(callback)

    def map_http(self, port: int, lan_address: str | None = None) -> None:
        """Map TCP `port` (the curator's HTTP port) to the same port on the router."""
        self._http_port, self._lan_address = port, lan_address
        if not self.enabled or self._session is None:
            return
        with self._lock:
            self._deferred = []
        handles: list[Any] = []
        try:
            handles = list(self._session.add_port_mapping(lt.portmap_protocol.tcp, port, port))
        finally:
            with self._lock:
                self._http_handles = {(t, int(h)) for h in handles for t in ("upnp", "natpmp")}
                deferred, self._deferred = self._deferred or [], None
        for mapping in deferred:
            self._record(*mapping)

    # -- alerts ------------------------------------------------------------------
    def on_mapped(self, alert: Any) -> None:
        """portmap_alert: one mapping (UPnP or NAT-PMP, TCP or UDP) is in the router."""
        # An alert is valid only until the next pop: keep its fields, never the alert.
        mapping = (
            alert.map_transport.name,
            alert.map_protocol.name,
            int(alert.mapping),
            int(alert.external_port),
        )
        with self._lock:
            if self._deferred is not None:
                self._deferred.append(mapping)
                return
        self._record(*mapping)

    def _record(self, transport: str, protocol: str, handle: int, port: int) -> None:
        http = (transport, handle) in self._http_handles and protocol == "tcp"
        # The alert names no local port: libtorrent asks the router for the local port, so
        # a mapping to the SSL port (and not the plain one) is the SSL socket's.
        ssl = not http and port == self._ssl_port() and port != self._plain_port()
        if self.state.mapped(transport, protocol, port, http, ssl):
            what = "HTTP" if http else f"BitTorrent {'SSL ' if ssl else ''}{protocol.upper()}"
            log.info("port mapping: %s port mapped to external port %d (%s)", what, port, transport)
            self._changed()

    def _ssl_port(self) -> int:
        return int(self._session.ssl_listen_port()) if self._session is not None else 0

    def _plain_port(self) -> int:
        return int(self._session.listen_port()) if self._session is not None else 0

    def on_error(self, alert: Any) -> None:
        """portmap_error_alert: logged only; a re-map's removals produce these before the
        successes (nat.md), so an error never undoes a mapping."""
        log.debug("port mapping: %s", alert.message())

    def on_external_ip(self, alert: Any) -> None:
        """external_ip_alert: our address as the router or a peer sees it."""
        address = str(alert.external_address)
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return
        if self.state.external(address):
            log.info("external address %s", address)
            self._changed()

    def _changed(self) -> None:
        view = self.view()
        for callback in self._listeners:
            try:
                callback(view)
            except Exception:
                log.exception("a port-mapping listener failed")

    # -- the tick ----------------------------------------------------------------
    def tick(self) -> None:
        """Once a second on the alert thread: decide "no mapping", re-map when due."""
        if not self.enabled or self._session is None:
            return
        now = self._clock()
        if now - self._started >= NO_MAPPING_AFTER and self.state.give_up():
            log.warning("%s", self.no_mapping_message())
        if now >= self._remap_at:
            self._remap_at = now + self._remap_interval
            self.remap()

    def no_mapping_message(self) -> str:
        """The one warning: what failed, what it means, and the fix."""
        port = int(self._session.listen_port()) if self._session is not None else 0
        to = f" to {self._lan_address}" if self._lan_address else " to this machine"
        http = f" and TCP port {self._http_port}" if self._http_port else ""
        return (
            f"no port mapping: the router answered neither UPnP nor NAT-PMP within "
            f"{NO_MAPPING_AFTER:.0f} s, so peers in other homes cannot dial this machine "
            f"(it still dials them). Fix: forward TCP and UDP port {port}{http} on the "
            f"router{to}, or turn UPnP/NAT-PMP on there, or run DHT-only "
            f"(--advertise-host none, clients following the curator's key)"
        )

    def remap(self) -> None:
        """Map everything again: each protocol off and on (0.07 s in the lab), then the
        HTTP port again (turning a protocol off forgets extra mappings)."""
        on = {name: True for name, wanted in self._protocols.items() if wanted}
        self._session.apply_settings(dict.fromkeys(on, False))
        self._session.apply_settings(on)
        if self._http_port is not None:
            self.map_http(self._http_port, self._lan_address)
        log.debug("port mapping: re-mapped")

    def close(self) -> None:
        """Let go of the session (its clean close removes the mappings)."""
        self._session = None
        self._listeners.clear()
