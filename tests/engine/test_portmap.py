"""The port-mapping state and its one warning, on a real libtorrent session (no router here:
the lab's tests in tests/system/test_across_homes.py show the mappings themselves)."""

from __future__ import annotations

import logging
from pathlib import Path

import libtorrent as lt
import pytest

from meshmedia.config import Config
from meshmedia.engine import Engine
from meshmedia.engine.portmap import NO_MAPPING_AFTER, PortMapper, PortMapState
from meshmedia.engine.settings import build_settings
from meshmedia.store import Store
from tests.helpers import make_config


def test_the_state_counts_changes_and_keeps_ipv4() -> None:
    state = PortMapState()
    assert not state.view().mapped
    assert state.external("203.0.113.7")
    assert not state.external("203.0.113.7")  # the same again: no change
    assert not state.external("2001:db8::1")  # an IPv4 address is kept over IPv6
    assert state.mapped("natpmp", "tcp", 6881, http=False)
    assert state.mapped("upnp", "udp", 6881, http=False)
    assert state.mapped("natpmp", "tcp", 5000, http=True)
    view = state.view()
    assert (view.external_address, view.peer_port, view.udp_port, view.http_port) == (
        "203.0.113.7",
        6881,
        6881,
        5000,
    )
    assert view.mapped
    assert view.transports == {"natpmp", "upnp"}
    assert view.version == 4
    assert not state.give_up()  # mapped: never "no mapping possible"


def test_the_ssl_sockets_mapping_never_becomes_the_peer_port() -> None:
    """libtorrent maps the SSL listen socket (private groups) too; its mapping arrived
    after the plain one in the lab and made other homes dial the SSL port (issue 14)."""
    state = PortMapState()
    assert state.mapped("natpmp", "tcp", 6881, http=False)
    assert state.mapped("natpmp", "tcp", 6882, http=False, ssl=True)
    assert state.mapped("natpmp", "udp", 6881, http=False)
    state.mapped("natpmp", "udp", 6882, http=False, ssl=True)
    view = state.view()
    assert (view.peer_port, view.udp_port, view.ssl_port) == (6881, 6881, 6882)


def test_give_up_once_and_a_late_mapping_clears_it() -> None:
    state = PortMapState()
    assert state.give_up()
    assert not state.give_up()
    assert state.mapped("upnp", "tcp", 6881, http=False)
    assert not state.view().gave_up


def _session() -> lt.session:
    return lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
                       "enable_upnp": False, "enable_natpmp": False})  # fmt: skip


def test_no_mapping_is_said_once_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    session = _session()
    mapper = PortMapper(session, upnp=True, natpmp=True, clock=lambda: now[0])
    mapper.map_http(5000, "192.168.1.10")
    caplog.set_level(logging.WARNING, "meshmedia.engine.portmap")
    mapper.tick()
    now[0] = NO_MAPPING_AFTER - 0.1
    mapper.tick()
    assert caplog.records == []
    for step in range(5):
        now[0] = NO_MAPPING_AFTER + step
        mapper.tick()
    (record,) = caplog.records
    port = session.listen_port()
    assert f"forward TCP and UDP port {port} and TCP port 5000" in record.message
    assert "to 192.168.1.10" in record.message
    assert mapper.view().gave_up
    mapper.close()


def test_nothing_is_said_when_mapping_is_off(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    mapper = PortMapper(_session(), upnp=False, natpmp=False, clock=lambda: now[0])
    now[0] += 60
    mapper.tick()
    assert caplog.records == []
    assert not mapper.view().gave_up


@pytest.mark.parametrize(
    ("transport", "mapping", "dials_utp", "dials_tcp"),
    [("both", True, True, True), ("both", False, False, True), ("tcp", True, False, True),
     ("utp", False, True, False)],
)  # fmt: skip
def test_a_session_that_maps_ports_dials_utp_first(
    tmp_path: Path, transport: str, mapping: bool, dials_utp: bool, dials_tcp: bool
) -> None:
    """Across homes (port mapping on) uTP first, TCP after a failure: hole punching and
    LEDBAT need uTP; on a LAN-only setup (mapping off) TCP, faster on loopback."""
    config = Config(state_dir=tmp_path, transport=transport, upnp=mapping, natpmp=mapping)
    settings = build_settings(config)
    assert settings["enable_outgoing_utp"] is dials_utp
    assert settings["enable_outgoing_tcp"] is dials_tcp
    # the recovery timers of native_notes/nat.md "d." for every session
    assert (settings["peer_timeout"], settings["min_reconnect_time"]) == (20, 1)
    assert settings["alert_mask"] & lt.alert.category_t.port_mapping_notification


def test_find_peers_is_harmless_for_a_torrent_gone_or_without_the_dht(tmp_path: Path) -> None:
    """A download removed between its status and its DHT announce fails nothing."""
    for dht in (False, True):
        config = make_config(tmp_path, f"node-{dht}", dht=dht)
        with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
            engine.find_peers("ab" * 20)  # unknown: no error


class _Mapped:
    """The fields of a portmap_alert (no router here to send a real one)."""

    def __init__(self, transport: str, handle: int, port: int) -> None:
        self.map_transport = getattr(lt.portmap_transport, transport)
        self.map_protocol = lt.portmap_protocol.tcp
        self.mapping = handle
        self.external_port = port


class _AnswersAtOnce:
    """A real session whose router answers the HTTP mapping before add_port_mapping has
    returned: the alert thread can see the portmap_alert first (seen in the lab). UPnP
    and NAT-PMP stay off in the real session (they would talk to this machine's router),
    so the mapping's handle is the one the lab's first mapping got: 0."""

    def __init__(self, session: lt.session) -> None:
        self.session = session
        self.mapper: PortMapper | None = None

    def add_port_mapping(self, protocol: object, external: int, local: int) -> list[int]:
        assert self.mapper is not None
        self.mapper.on_mapped(_Mapped("natpmp", 0, external))
        return [0]

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)


def test_an_http_mapping_answered_before_its_handles_are_known_stays_http() -> None:
    session = _AnswersAtOnce(_session())
    mapper = PortMapper(session, upnp=True, natpmp=True)
    session.mapper = mapper
    mapper.map_http(5000)
    view = mapper.view()
    assert view.http_port == 5000
    assert view.peer_port is None  # not taken for the BitTorrent port
    mapper.close()
