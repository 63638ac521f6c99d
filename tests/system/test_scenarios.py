"""Issue 7's scenarios: one curator and four clients, each in its own network namespace.

Real `python -m meshmedia serve/sync` processes on the lab network (h0 the
curator, h1..h4 the clients). Every scenario ends with the file byte-identical
at its final path on every client. Reasons and measurements:
native_notes/system-tests.md.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import libtorrent as lt
import pytest

from tests.helpers import random_file
from tests.system.netlab import Network
from tests.system.nodes import (
    PEER_PORT,
    QUIET,
    ClientNode,
    CuratorNode,
    assert_identical,
    sha256,
    tails,
    wait_until,
)

pytestmark = pytest.mark.system

MIB = 1 << 20


def publish(curator: CuratorNode, size: int, name: str = "film.mkv") -> tuple[str, str]:
    """Drop a random file into the share, start the curator; (item path, SHA-256)."""
    digest = sha256(random_file(curator.share / name, size, seed=size))
    curator.start()
    curator.wait_items(1)
    # 64 MiB and more: listed first without its SHA-256, which a later version adds
    wait_until(
        lambda: curator.manifest()["items"][0].get("sha256"), 120, "the item's SHA-256", [curator]
    )
    item = curator.manifest()["items"][0]
    assert item["sha256"] == digest
    return item["path"], digest


def piece_length(curator: CuratorNode) -> int:
    """The piece size of the curator's (only) item."""
    item = curator.manifest()["items"][0]
    info_hash = re.search(r"btih:([0-9a-fA-F]{40})", item["torrent"])
    assert info_hash, item
    data = curator.get_bytes(f"/torrents/{info_hash[1].lower()}.torrent")
    assert data, curator.tail()
    return int(lt.torrent_info(lt.bdecode(data)).piece_length())


def clients_of(
    network: Network, tmp_path: Path, curator: CuratorNode, *extra: str
) -> list[ClientNode]:
    """A client (not started) in each of h1..h4, with its own folders."""
    return [
        ClientNode(host, tmp_path / f"client{host.index}", curator.manifest_url, *extra)
        for host in network.hosts[1:]
    ]


def wait_placed(
    clients: list[ClientNode], path: str, timeout: float, others: list[CuratorNode]
) -> float:
    """Wait until every client has placed `path`; returns the seconds it took."""
    start = time.monotonic()
    wait_until(
        lambda: all(client.placed(path) for client in clients),
        timeout,
        f"{path} placed on {[c.host.name for c in clients]}",
        [*others, *clients],
    )
    return time.monotonic() - start


def test_100_mb_reaches_four_clients_who_serve_each_other(network: Network, tmp_path: Path) -> None:
    size = 100 * MIB
    curator = CuratorNode(network.hosts[0], tmp_path / "curator", "--upload-limit", "10M", *QUIET)
    path, digest = publish(curator, size)

    solo = ClientNode(network.hosts[1], tmp_path / "solo", curator.manifest_url, *QUIET)
    solo.start()
    alone = wait_placed([solo], path, 180, [curator])
    assert_identical([solo], path, digest)
    solo.stop()

    before = curator.uploaded()
    clients = clients_of(network, tmp_path, curator, *QUIET)
    for client in clients:
        client.start()
    together = wait_placed(clients, path, 300, [curator])
    assert_identical(clients, path, digest)
    from_curator = curator.uploaded() - before
    counters = [client.counters() for client in clients]
    from_clients = sum(up for _down, up in counters)
    print(
        f"\n100 MiB, curator upload 10 MiB/s: one client alone {alone:.1f} s, four clients "
        f"{together:.1f} s, ratio {together / alone:.2f}; curator sent {from_curator / size:.2f} "
        f"copies, the clients {from_clients / size:.2f} (down/up MiB per client: "
        f"{[(d // MIB, u // MIB) for d, u in counters]})"
    )
    # Four copies arrived; a capped curator unchokes two clients at a time and never
    # sends to a choked one (engine/choking.py), so its uplink carries each piece
    # about once and the clients serve each other the rest (1.64 copies before).
    # 1.09-1.13 on a quiet machine and 1.24 once in a full CI run with whole_pieces_threshold
    # 20 s; with 0 (issue 19, engine.md "Copies across homes") 1.03-1.05 at load 7.5
    # (2026-12-02, 3 runs beside two mutation runs). Issue 15 asks at most 1.2.
    assert from_curator <= 1.2 * size, tails([curator, *clients])
    assert from_clients >= 2 * size, tails([curator, *clients])
    assert all(up > 0 for _down, up in counters), counters


def test_clients_complete_after_the_curator_is_killed(network: Network, tmp_path: Path) -> None:
    size = 16 * MIB
    curator = CuratorNode(network.hosts[0], tmp_path / "curator", "--upload-limit", "2M", *QUIET)
    path, digest = publish(curator, size)
    source, length = curator.share / path, piece_length(curator)
    pieces = -(-size // length)
    # Clients upload at a quarter of the curator's rate, so every piece exists among
    # them while each still has only about half.
    clients = clients_of(network, tmp_path, curator, "--upload-limit", "512K", *QUIET)
    for client in clients:
        client.start()

    def every_piece_among_clients() -> bool:
        have = [client.pieces_written(source, path, length) for client in clients]
        return len(set().union(*have)) == pieces

    wait_until(every_piece_among_clients, 120, "every piece among the clients", [curator, *clients])
    curator.stop(signal.SIGKILL)
    progress = [client.progress() for client in clients]
    print(f"\ncurator killed with the clients at {[f'{p:.0%}' for p in progress]}")
    wait_placed(clients, path, 180, [curator])
    assert_identical(clients, path, digest)


def test_all_complete_over_50_ms_and_1_percent_loss(network: Network, tmp_path: Path) -> None:
    network.impair(delay_ms=50, loss=0.01, seed=7)
    curator = CuratorNode(network.hosts[0], tmp_path / "curator", *QUIET)
    path, digest = publish(curator, 8 * MIB)
    clients = clients_of(network, tmp_path, curator, *QUIET)
    for client in clients:
        client.start()
    took = wait_placed(clients, path, 240, [curator])
    print(f"\n8 MiB to four clients over 50 ms / 1 % loss links: {took:.1f} s")
    assert_identical(clients, path, digest)


def test_a_client_cut_off_for_20_s_completes(network: Network, tmp_path: Path) -> None:
    curator = CuratorNode(network.hosts[0], tmp_path / "curator", "--upload-limit", "2M", *QUIET)
    path, digest = publish(curator, 16 * MIB)
    clients = clients_of(network, tmp_path, curator, *QUIET)
    victim = clients[-1]
    for client in clients:
        client.start()
    wait_until(lambda: victim.progress() >= 0.1, 120, "10 % on the victim", [curator, *clients])
    network.link_down(victim.host)
    cut_at = victim.progress()
    assert cut_at < 1.0, "the download ended before the cut"
    time.sleep(20)  # the outage itself, not a synchronisation: nothing can arrive meanwhile
    assert not victim.placed(path), "placed while cut off?"
    network.link_up(victim.host)
    took = wait_placed([victim], path, 180, [curator, *clients])
    print(f"\ncut off at {cut_at:.0%} for 20 s; complete {took:.1f} s after the link came back")
    wait_placed(clients, path, 60, [curator])
    assert_identical(clients, path, digest)


def _manifest_gets(curator: CuratorNode, address: str, after: int) -> int:
    """How many manifest GETs from `address` the curator's log holds past offset `after`."""
    text = curator.log.read_text(errors="replace")[after:]
    return len(re.findall(rf'{re.escape(address)} "GET /manifest/default\.json', text))


def _settled_downloads(clients: list[ClientNode], nodes: list[CuratorNode]) -> list[int]:
    """Each client's downloaded bytes once two reads 1.5 s apart agree.

    Placed is not settled: an end-game block still in flight lands after the piece
    passed, and /status lags libtorrent by its 0.5 s update interval (CI saw +16 KiB)."""
    seen: list[list[int]] = []

    def settled() -> list[int] | None:
        seen.append([client.counters()[0] for client in clients])
        return seen[-1] if len(seen) > 1 and seen[-1] == seen[-2] else None

    return wait_until(settled, 60, "download counters that stop moving", [*nodes, *clients], 1.5)


def test_curator_restart_changes_nothing(network: Network, tmp_path: Path) -> None:
    curator = CuratorNode(network.hosts[0], tmp_path / "curator", "--log-level", "DEBUG", *QUIET)
    path, digest = publish(curator, 8 * MIB)
    clients = clients_of(network, tmp_path, curator, *QUIET)
    for client in clients:
        client.start()
    wait_placed(clients, path, 120, [curator])
    manifest = curator.manifest()
    downloaded = _settled_downloads(clients, [curator])
    client_logs = [len(client.log.read_text()) for client in clients]

    assert curator.stop() == 0, curator.tail()
    offset = len(curator.log.read_text(errors="replace"))
    curator.start()
    # Each client has asked twice since the restart: any change would have been planned.
    wait_until(
        lambda: all(_manifest_gets(curator, c.host.address, offset) >= 2 for c in clients),
        60,
        "two manifest requests from every client after the restart",
        [curator, *clients],
    )
    assert curator.manifest() == manifest
    assert [client.counters()[0] for client in clients] == downloaded
    assert curator.uploaded() == 0, curator.get("/status")
    for client, start in zip(clients, client_logs, strict=True):
        assert client.placed(path), client.tail()
        later = client.log.read_text()[start:]
        assert "downloading" not in later, client.tail()
        assert "adopting" not in later, client.tail()
    assert_identical(clients, path, digest)


def test_peers_found_by_the_dht_with_the_curator_as_bootstrap_node(
    network: Network, tmp_path: Path
) -> None:
    discovery = ("--dht", "--no-lsd", "--no-upnp", "--no-natpmp")
    curator = CuratorNode(
        network.hosts[0], tmp_path / "curator", "--advertise-host", "none", *discovery
    )
    path, digest = publish(curator, 8 * MIB)
    magnet = curator.manifest()["items"][0]["torrent"]
    assert "x.pe" not in magnet, magnet
    bootstrap = f"{curator.host.address}:{PEER_PORT}"
    clients = clients_of(network, tmp_path, curator, "--dht-bootstrap", bootstrap, *discovery)
    for client in clients:
        client.start()
    took = wait_placed(clients, path, 120, [curator])
    print(f"\n8 MiB to four clients found by the DHT alone: {took:.1f} s")
    assert_identical(clients, path, digest)
