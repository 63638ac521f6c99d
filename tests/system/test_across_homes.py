"""Issue 19: real `meshmedia serve/sync` processes in homes behind NAT routers (the internet
lab, tests/system/internet.py), nobody configuring a port forwarding.

Home a holds the curator (its router maps by UPnP and NAT-PMP), homes b and d a client
each behind such routers, home c a client behind a strict router (nothing can be mapped).
Clients follow the manifest at the curator's *external* address: it is reachable only
because the curator mapped its HTTP port itself. One lab serves the whole module; each
test starts its own daemons and leaves the lab as it found it. Run with -s for the
figures (native_notes/nat.md, "Implementation").
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import random_file
from tests.system.internet import HomeSpec, Internet, Mapping, missing_tools
from tests.system.netlab import Machine
from tests.system.nodes import (
    HTTP_PORT,
    PEER_PORT,
    ClientNode,
    CuratorNode,
    Node,
    assert_identical,
    sha256,
    wait_until,
)
from tests.test_readme import blocks, section

pytestmark = pytest.mark.system

MIB = 1 << 20
# Every address, as a user would run it; LSD off (it cannot cross a router). Clients use
# the curator as their DHT bootstrap node, at its router's address (its UDP port mapped).
EVERYWHERE = ("--listen-host", "0.0.0.0", "--no-lsd")
UPLINK_MBIT = 16.78  # 2 MiB/s
NO_MAPPING = "no port mapping"


@pytest.fixture(scope="module")
def lab(netns_support: None) -> Iterator[Internet]:
    """Homes a, b, d (UPnP + NAT-PMP) and c (strict), one host each, for the module."""
    if reason := missing_tools():
        pytest.skip(reason)
    homes = [HomeSpec("a"), HomeSpec("b"), HomeSpec("c", upnp=False, natpmp=False), HomeSpec("d")]
    with Internet(homes=homes, public=("dht",)) as net:
        yield net


@pytest.fixture
def nodes(lab: Internet) -> Iterator[list[Node]]:
    """The daemons a test starts (stopped at its end); the lab's impairments lifted."""
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()
    lab.clear()
    for home in lab.homes.values():
        lab.link_up(home)
        lab.limit_rate(home, None, None)


def curator_in(lab: Internet, tmp_path: Path, nodes: list[Node], *extra: str) -> CuratorNode:
    """The curator in home a, started, once its router holds its three mappings."""
    curator = CuratorNode(lab.homes["a"].hosts[0], tmp_path / "curator", *extra, *EVERYWHERE)
    nodes.append(curator)
    started = time.monotonic()
    curator.start()
    wait_mapped(lab, curator, 30)
    print(f"\ncurator up and mapped in {time.monotonic() - started:.1f} s")
    return curator


def wanted_mappings(curator: CuratorNode) -> set[Mapping]:
    """The forwardings the curator's router must hold: BitTorrent TCP+UDP, HTTP TCP."""
    address = curator.host.address
    return {
        Mapping("tcp", PEER_PORT, address, PEER_PORT),
        Mapping("udp", PEER_PORT, address, PEER_PORT),
        Mapping("tcp", HTTP_PORT, address, HTTP_PORT),
    }


def wait_mapped(lab: Internet, curator: CuratorNode, timeout: float) -> None:
    """Wait until home a's router forwards every port of the curator."""
    router = lab.homes["a"].router
    wait_until(
        lambda: wanted_mappings(curator) <= set(router.mappings()),
        timeout,
        f"the curator's ports mapped on its router (has {router.mappings()})",
        [curator],
    )


def external_url(lab: Internet) -> str:
    """The manifest URL as other homes reach it: home a's router's address."""
    return f"http://{lab.homes['a'].router.address}:{HTTP_PORT}/manifest/default.json"


def client_in(
    lab: Internet, home: str, tmp_path: Path, nodes: list[Node], *extra: str
) -> ClientNode:
    """A started client in `home` following the curator at its external address."""
    host = lab.homes[home].hosts[0]
    bootstrap = ("--dht-bootstrap", f"{lab.homes['a'].router.address}:{PEER_PORT}")
    client = ClientNode(
        host, tmp_path / f"client-{home}", external_url(lab), *extra, *bootstrap, *EVERYWHERE
    )
    nodes.append(client)
    client.start()
    return client


def drop(curator: CuratorNode, size: int, name: str) -> tuple[str, str, float]:
    """Drop a random file into the running curator's share; (path, SHA-256, drop time)."""
    staged = random_file(curator.base / "staged" / name, size, seed=size)
    digest = sha256(staged)
    dropped = time.monotonic()
    staged.rename(curator.share / name)
    item = curator.wait_items(1)[0]
    assert item["sha256"] == digest
    return item["path"], digest, dropped


def wait_placed(clients: list[ClientNode], path: str, timeout: float, others: list[Node]) -> None:
    """Wait until every client has `path` verified and in place (asked once a second: the
    daemons share two cores with the test, and their speed is what is measured)."""
    wait_until(
        lambda: all(c.placed(path) for c in clients),
        timeout,
        f"{path} placed in {[c.host.name for c in clients]}",
        [*others, *clients],
        interval=1.0,
    )


def test_a_dropped_file_reaches_a_upnp_home_and_a_strict_home(
    lab: Internet, tmp_path: Path, nodes: list[Node]
) -> None:
    curator = curator_in(lab, tmp_path, nodes)
    router_a = lab.homes["a"].router
    lan = f"{curator.host.address}:{PEER_PORT}"
    external = f"{router_a.address}:{PEER_PORT}"
    b = client_in(lab, "b", tmp_path, nodes)
    c = client_in(lab, "c", tmp_path, nodes)
    path, digest, dropped = drop(curator, 8 * MIB, "film.mkv")
    wait_until(lambda: "peers" in curator.manifest(), 10, "peers in the manifest", [curator])
    manifest = curator.manifest()
    assert manifest["peers"] == [lan, external], manifest
    magnet = manifest["items"][0]["torrent"]
    assert f"x.pe={lan}" in magnet, magnet
    assert f"x.pe={external}" in magnet, magnet
    # What `meshmedia invite` puts in a code: the LAN and the router's mapped HTTP port.
    http = [f"http://{curator.host.address}:{HTTP_PORT}", f"http://{router_a.address}:{HTTP_PORT}"]
    wait_until(
        lambda: (curator.get("/status") or {}).get("advertised_http") == http,
        10,
        f"advertised_http {http} in /status",
        [curator],
    )
    wait_placed([b, c], path, 120, [curator])
    took = time.monotonic() - dropped
    assert_identical([b, c], path, digest)
    # The strict home's client says once that nothing could be mapped, with the fix.
    wait_until(lambda: NO_MAPPING in c.log.read_text(), 30, "the no-mapping warning", [c])
    text = c.log.read_text()
    assert text.count(NO_MAPPING) == 1, c.tail()
    assert f"forward TCP and UDP port {PEER_PORT}" in text, c.tail()
    assert NO_MAPPING not in b.log.read_text() + curator.log.read_text()
    print(f"8 MiB dropped in home a: placed in homes b (UPnP) and c (strict) {took:.1f} s later")


def test_a_capped_curator_sends_one_copy_and_the_homes_share(
    lab: Internet, tmp_path: Path, nodes: list[Node]
) -> None:
    size = 40 * MIB
    lab.impair(delay_ms=50, seed=19)
    lab.limit_rate(lab.homes["a"], up_mbit=UPLINK_MBIT)
    curator = curator_in(lab, tmp_path, nodes)
    clients = [client_in(lab, home, tmp_path, nodes) for home in ("b", "c", "d")]
    path, digest, dropped = drop(curator, size, "film.mkv")
    wait_placed(clients, path, 150, [curator])
    took = time.monotonic() - dropped
    assert_identical(clients, path, digest)
    sent = curator.uploaded()
    counters = [client.counters() for client in clients]
    wire = lab.queue(lab.homes["a"])["bytes"]
    print(
        f"40 MiB, curator uplink 2 MiB/s, 50 ms per link, clients in b, c (strict), d: all "
        f"placed {took:.1f} s after the drop; curator sent {sent / size:.2f} copies "
        f"({wire / size:.2f} on its uplink's wire); down/up MiB per client "
        f"{[(round(d / MIB, 1), round(u / MIB, 1)) for d, u in counters]}"
    )
    # Issue 19: at most 1.3 copies from the curator, and every client served the others,
    # the strict home's included. Before (whole_pieces_threshold 20 s, 2000 queued
    # requests at the curator) 1.09-1.77 copies and once a strict client that uploaded
    # nothing; now 1.01-1.18 (engine.md "Copies across homes").
    assert sent <= 1.3 * size, (sent / size, counters)
    assert all(up > 0 for _down, up in counters), counters


def test_a_home_offline_for_20_s_moves_again_and_completes(
    lab: Internet, tmp_path: Path, nodes: list[Node]
) -> None:
    size = 16 * MIB
    lab.impair(delay_ms=50, seed=19)
    lab.limit_rate(lab.homes["a"], up_mbit=UPLINK_MBIT)
    curator = curator_in(lab, tmp_path, nodes)
    b = client_in(lab, "b", tmp_path, nodes)
    victim = client_in(lab, "c", tmp_path, nodes)  # strict: only its own dials bring it back
    path, digest, _ = drop(curator, size, "film.mkv")
    final = victim.media / path
    seen_sizes: set[int] = set()

    def look() -> int:
        if final.exists():
            seen_sizes.add(final.stat().st_size)
        return victim.counters()[0]

    wait_until(lambda: look() >= size // 4, 120, "a quarter on the victim", nodes)
    lab.link_down(lab.homes["c"])
    cut_at = victim.progress()
    assert cut_at < 1.0, "the download ended before the cut"
    deadline = time.monotonic() + 20  # the outage itself: nothing can arrive meanwhile
    while time.monotonic() < deadline:
        look()
        time.sleep(0.2)
    before = look()
    lab.link_up(lab.homes["c"])
    back = time.monotonic()
    wait_until(lambda: look() > before, 60, "bytes after the link came back", nodes)
    moved = time.monotonic() - back
    wait_until(lambda: (look(), victim.placed(path))[1], 120, "placed on the victim", nodes)
    done = time.monotonic() - back
    assert_identical([victim], path, digest)
    wait_placed([b], path, 60, [curator])
    print(
        f"home c (strict) offline 20 s at {cut_at:.0%} of 16 MiB (50 ms per link): bytes "
        f"again {moved:.1f} s after the link came back, placed {done:.1f} s after"
    )
    assert seen_sizes <= {size}, f"a partial file at the final path: {seen_sizes}"
    # `moved` is printed, not asserted: the bounded wait above (60 s) is the promise


def test_the_curator_restarts_behind_its_router_and_clients_go_on(
    lab: Internet, tmp_path: Path, nodes: list[Node]
) -> None:
    size = 24 * MIB
    lab.limit_rate(lab.homes["a"], up_mbit=UPLINK_MBIT)
    curator = curator_in(lab, tmp_path, nodes)
    clients = [client_in(lab, home, tmp_path, nodes) for home in ("b", "c")]
    path, digest, _ = drop(curator, size, "film.mkv")
    external = f"{lab.homes['a'].router.address}:{PEER_PORT}"
    wait_until(lambda: external in curator.manifest().get("peers", []), 10, "peers", [curator])
    manifest = curator.manifest()
    wait_until(
        lambda: all(c.counters()[0] >= size // 4 for c in clients), 120, "a quarter each", nodes
    )
    assert curator.stop() == 0, curator.tail()
    router = lab.homes["a"].router
    assert not wanted_mappings(curator) & set(router.mappings())  # a clean stop unmaps
    restarted = time.monotonic()
    curator.start()
    wait_mapped(lab, curator, 30)
    mapped = time.monotonic() - restarted
    assert curator.manifest()["items"] == manifest["items"]
    wait_placed(clients, path, 120, [curator])
    assert_identical(clients, path, digest)
    downloaded = [c.counters()[0] for c in clients]
    print(
        f"curator restarted with the clients at a quarter or more of 24 MiB: mapped again "
        f"{mapped:.1f} s after the restart; MiB downloaded per client "
        f"{[round(d / MIB, 1) for d in downloaded]}"
    )
    for client in clients:  # the same download went on: never started again
        assert client.log.read_text().count(f"downloading {path} ") == 1, client.tail()
    assert all(d <= 1.1 * size for d in downloaded), downloaded
    # the same addresses after the restart: no new version (none without the external one)
    assert curator.manifest()["version"] == manifest["version"], curator.tail()


class ReadmeNode(Node):
    """A node running one command of the README's "Across homes" as written, plus a state
    dir and a log level (the lab's homes share this machine's file system and HOME)."""

    def __init__(self, host: Machine, base: Path, role: str, argv: list[str]) -> None:
        self.role = role
        super().__init__(host, base)
        self.argv = argv

    def args(self) -> list[str]:
        """The README's command without `meshmedia`, then the state dir."""
        return [*self.argv, "--state-dir", str(self.state_dir)]


def readme_commands() -> tuple[str, str]:
    """The two commands of the README's "Across homes": the curator's, a home's."""
    curator, home = blocks(section("Across homes"), "sh")
    return curator, home


def test_the_readme_across_homes_walk(lab: Internet, tmp_path: Path, nodes: list[Node]) -> None:
    serve, sync = readme_commands()
    router = lab.homes["a"].router
    curator_host = lab.homes["a"].hosts[0]
    share = tmp_path / "share"
    share.mkdir()
    argv = shlex.split(serve.replace("~/share", str(share)))
    assert argv[:2] == ["meshmedia", "serve"], serve
    curator = ReadmeNode(curator_host, tmp_path / "curator", "curator", argv[1:])
    nodes.append(curator)
    curator.start()
    wanted = {Mapping("tcp", PEER_PORT, curator_host.address, PEER_PORT),
              Mapping("tcp", HTTP_PORT, curator_host.address, HTTP_PORT)}  # fmt: skip
    wait_until(lambda: wanted <= set(router.mappings()), 30, "the README's mappings", [curator])
    clients = []
    for home in ("b", "c"):
        media = tmp_path / f"media-{home}"
        text = sync.replace("203.0.113.7", router.address).replace("~/Videos/synced", str(media))
        argv = shlex.split(text)
        assert argv[:2] == ["meshmedia", "sync"], sync
        client = ReadmeNode(lab.homes[home].hosts[0], tmp_path / home, "client", argv[1:])
        nodes.append(client)
        client.start()
        clients.append((client, media))
    source = random_file(tmp_path / "staged" / "film.mkv", 4 * MIB, seed=4)
    source.rename(share / "film.mkv")
    digest = sha256(share / "film.mkv")
    for _client, media in clients:
        final = media / "film.mkv"
        wait_until(lambda f=final: f.is_file() and sha256(f) == digest, 120, f"{final}", nodes)
    said = f"advertising {curator_host.address}:{PEER_PORT} {router.address}:{PEER_PORT}"
    # the clients may finish through the LAN address before the router's answer is logged
    wait_until(lambda: said in curator.log.read_text(), 30, said, nodes)
    assert f"external address {router.address}" in curator.log.read_text(), curator.tail()
