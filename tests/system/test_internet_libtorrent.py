"""Real libtorrent 2.1 sessions in the internet lab: port mapping through miniupnpd, a
download across two NATs, a strict home dialing out, BEP 55 hole punching between two
strict homes. The facts the package's NAT work rests on (native_notes/nat.md); run with -s
for the figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import random_file, wait_for
from tests.system.internet import HomeSpec, Internet, Mapping
from tests.system.ltagent import LtPeer, make_torrent
from tests.system.nodes import sha256

pytestmark = pytest.mark.system

STRICT: dict[str, Any] = {"upnp": False, "natpmp": False}


def payload(tmp_path: Path, size: int) -> tuple[Path, Path]:
    """A random file and its .torrent."""
    source = random_file(tmp_path / "seed" / "film.bin", size, seed=size)
    return source, make_torrent(source)


def seeding(peer: LtPeer) -> bool:
    """True once the peer has every piece."""
    return bool(peer.status()["is_seeding"])


def test_a_session_maps_its_port_and_an_extra_port_and_removes_them_on_close(
    internet: Internet, tmp_path: Path
) -> None:
    home = internet.homes["a"]
    a0, router = home.hosts[0], home.router
    source, torrent = payload(tmp_path, 1 << 20)
    peer = LtPeer(a0, tmp_path, torrent, source.parent, seed=True)
    agent = peer.agent
    wait_for(lambda: len(agent.alerts("portmap_alert")) >= 4, 30)  # TCP+UDP, UPnP+NAT-PMP
    alerts = agent.alerts("portmap_alert")
    mapped = {(e["map_transport"], e["map_protocol"], e["external_port"]) for e in alerts}
    assert mapped == {(t, p, 6881) for t in ("upnp", "natpmp") for p in ("tcp", "udp")}
    external = agent.alerts("external_ip_alert")
    assert external[0]["external_address"] == router.address
    first = min(e["t"] for e in alerts)
    start = len(agent.events)
    handles = agent.request("map", protocol="tcp", external=5000, local=5000)["handles"]
    wait_for(lambda: len(agent.alerts("portmap_alert", start)) >= 2, 30)  # UPnP and NAT-PMP
    assert Mapping("tcp", 5000, a0.address, 5000) in router.mappings()
    extra = agent.alerts("portmap_alert", start)
    assert {e["external_port"] for e in extra} == {5000}
    assert Mapping("udp", 6881, a0.address, 6881) in router.mappings()
    peer.close()
    assert router.mappings() == []  # a clean session close deletes what it mapped
    print(f"first mapping {first:.2f} s after start, external ip {external[0]['external_address']}")
    print(f"add_port_mapping -> handles {handles}, {[(e['map_transport'], e['t']) for e in extra]}")


def test_a_download_crosses_two_nats_and_a_strict_home_dials_out(
    internet: Internet, tmp_path: Path
) -> None:
    homes = internet.homes
    source, torrent = payload(tmp_path, 8 << 20)
    seed = LtPeer(homes["a"].hosts[0], tmp_path, torrent, source.parent, seed=True)
    wait_for(lambda: seed.agent.alerts("portmap_alert"), 30)
    b = LtPeer(homes["b"].hosts[0], tmp_path, torrent, tmp_path / "b")
    c = LtPeer(homes["c"].hosts[0], tmp_path, torrent, tmp_path / "c")
    start = time.monotonic()
    b.connect(homes["a"].router.address)  # the seed's external address, mapped port
    wait_for(lambda: seeding(b), 120)
    b_took = time.monotonic() - start
    c.connect(homes["b"].router.address)  # the strict home knows only b, and dials it
    wait_for(lambda: b.peer(homes["c"].router.address), 30)
    seen_by_b = b.peer(homes["c"].router.address)
    assert seen_by_b is not None
    assert not seen_by_b["outgoing"]  # c dialed out through its masquerade
    wait_for(lambda: seeding(c), 120)
    assert b.status()["total_upload"] >= 8 << 20  # every byte c has came from b
    for folder in (tmp_path / "b", tmp_path / "c"):
        assert sha256(folder / "film.bin") == sha256(source)
    c_external = [e["external_address"] for e in c.agent.alerts("external_ip_alert")]
    assert homes["c"].router.address in c_external  # learnt from b's handshake
    print(f"a -> b through a's mapping: 8 MiB in {b_took:.2f} s; c (strict) from b's mapped")
    print(f"  port; c's external address from peers: {c_external}")


def test_two_strict_homes_punch_a_hole_through_the_seed_they_both_reach(
    internet_factory: Callable[..., Internet], tmp_path: Path
) -> None:
    net = internet_factory(
        homes=[HomeSpec("a"), HomeSpec("b"), HomeSpec("c", **STRICT), HomeSpec("d", **STRICT)]
    )
    homes = net.homes
    source, torrent = payload(tmp_path, 16 << 20)
    # Slow enough that nobody finishes in the test's time; connect timeouts as recommended.
    fast: dict[str, Any] = {"peer_connect_timeout": 5, "utp_connect_timeout": 3000}
    seed = LtPeer(homes["a"].hosts[0], tmp_path, torrent, source.parent, seed=True,
                  upload_rate_limit=100_000, **fast)  # fmt: skip

    # b only makes a send its first PEX message early; it tells nobody of anybody.
    def lab_peer(name: str) -> LtPeer:
        flags = ("disable_pex",) if name == "b" else ()
        host = homes[name].hosts[0]
        save = tmp_path / name
        return LtPeer(host, tmp_path, torrent, save, log="HOLEPUNCH", flags=flags, **fast)

    peers = {name: lab_peer(name) for name in "bcd"}
    for name in "bc":
        peers[name].connect(homes["a"].router.address)
    # ut_pex sends its first peer list once a torrent has two peers, then every 60 s: c has
    # had its list (a, b) before d arrives, so it can learn d only from the hole punch.
    wait_for(lambda: peers["c"].peer(homes["b"].router.address), 30)
    start = time.monotonic()
    peers["d"].connect(homes["a"].router.address)

    def punched() -> dict[str, Any] | None:
        link = peers["c"].peer(homes["d"].router.address)
        return link if link and link["total_download"] + link["total_upload"] > 0 else None

    link: dict[str, Any] = wait_for(punched, 50, interval=0.25)
    took = time.monotonic() - start
    back = peers["d"].peer(homes["c"].router.address)
    assert back is not None
    assert link["utp"]
    # a, the introducer, told c to connect to d (BEP 55): the only way c could know d.
    told = [e["t"] for e in peers["c"].agent.alerts("peer_log_alert")
            if f"msg:connect to: {homes['d'].router.address}" in e["msg"]]  # fmt: skip
    assert told
    conntrack = [line for line in homes["c"].router.conntrack("-p", "udp") if "dport=6881" in line]
    print(f"c <-> d (both strict) exchanging pieces {took:.2f} s after d joined, over uTP,")
    flags = f"c:{link['holepunched']} d:{back['holepunched']}"
    print(f"  holepunched flag {flags}; c's router: {conntrack}")
    for peer in (seed, *peers.values()):
        peer.close()
