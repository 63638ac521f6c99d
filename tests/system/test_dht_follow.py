"""Issue 8: clients that follow the curator's public key sync through the DHT alone.

The curator's HTTP module binds 127.0.0.1 inside its own namespace, so no other
host can reach it at all; the clients have no manifest URL, only `--follow KEY`
and the curator as DHT bootstrap node.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from meshmedia.manifest import generate_key, save_key
from tests.helpers import random_file
from tests.system.netlab import Host, Network
from tests.system.nodes import (
    HTTP_PORT,
    PEER_PORT,
    ClientNode,
    CuratorNode,
    assert_identical,
    get_bytes,
    get_json,
    sha256,
    wait_until,
)

pytestmark = pytest.mark.system

DISCOVERY = ("--dht", "--no-lsd", "--no-upnp", "--no-natpmp")


class ClosedCurator(CuratorNode):
    """A curator whose HTTP module binds 127.0.0.1 in its namespace: no other host reaches it."""

    def args(self) -> list[str]:
        """serve, with --host 127.0.0.1 (the last --host wins)."""
        return [*super().args(), "--host", "127.0.0.1"]

    def get(self, path: str) -> Any:
        """GET over its own loopback."""
        return get_json(self.host, "127.0.0.1", HTTP_PORT, path)


class Follower(ClientNode):
    """A client with no manifest URL that follows a public key through the DHT."""

    def __init__(self, host: Host, base: Path, key: str, bootstrap: str) -> None:
        super().__init__(host, base, "", "--follow", key, "--dht-bootstrap", bootstrap, *DISCOVERY)

    def args(self) -> list[str]:
        """sync without --manifest-url."""
        full = super().args()
        at = full.index("--manifest-url")
        return full[:at] + full[at + 2 :]


def test_followers_sync_a_new_item_while_the_curators_http_is_closed(
    network: Network, tmp_path: Path
) -> None:
    key = generate_key()
    curator = ClosedCurator(network.hosts[0], tmp_path / "curator", *DISCOVERY)
    save_key(curator.state_dir, key)
    curator.start()  # waits until GET / answers on its own loopback
    bootstrap = f"{curator.host.address}:{PEER_PORT}"
    clients = [
        Follower(host, tmp_path / f"client{host.index}", key.public_hex, bootstrap)
        for host in network.hosts[1:4]
    ]
    for client in clients:
        client.start()
    assert get_bytes(clients[0].host, curator.host.address, HTTP_PORT, "/") is None
    nodes = [curator, *clients]
    for count, name in enumerate(("new film.mkv", "Later Film (2002)/later film.mkv"), 1):
        started = time.monotonic()
        digest = sha256(random_file(curator.share / name, 3 << 20, seed=count))
        path = next(i["path"] for i in curator.wait_items(count) if i["sha256"] == digest)
        wait_until(lambda p=path: all(c.placed(p) for c in clients), 90, f"{path} placed", nodes)
        took = time.monotonic() - started
        print(f"\nitem {count} on three followers through the DHT alone: {took:.1f} s")
        assert_identical(clients, path, digest)
    # one item fits in the DHT value itself; two make the manifest a torrent
    announced = curator.log.read_text()
    assert "default v1 (inline)" in announced, curator.tail()
    assert "default v2 (torrent" in announced, curator.tail()
    for client in clients:
        assert f"dht:{key.public_hex}/default" in client.log.read_text(), client.tail()
