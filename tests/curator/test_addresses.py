"""What the curator advertises: LAN + the router's mapped port, --advertise-host winning,
and the manifests' `peers` kept equal to it."""

from __future__ import annotations

from pathlib import Path

from meshmedia.curator.addresses import (
    PeerAdvertiser,
    _advertised,
    advertised_addresses,
    magnet_for,
)
from meshmedia.engine import Engine
from meshmedia.engine.peers import magnet_peers
from meshmedia.engine.portmap import PortMapView
from meshmedia.manifest import Item, ManifestStore
from meshmedia.manifest.signing import generate_key
from meshmedia.store import Store
from tests.helpers import make_config

IH = "ab" * 20
MAPPED = PortMapView(external_address="203.0.113.7", peer_port=16881, udp_port=16881)


def test_lan_then_the_mapped_external_address(tmp_path: Path) -> None:
    config = make_config(tmp_path, listen_host="0.0.0.0", advertise_host=None)
    lan = _advertised(config, 6881, PortMapView())
    assert len(lan) == 1
    assert lan[0].endswith(":6881")
    assert _advertised(config, 6881, MAPPED) == [*lan, "203.0.113.7:16881"]
    # an external address without a mapping (a strict home, told by a peer): not advertised
    told = PortMapView(external_address="203.0.113.7")
    assert _advertised(config, 6881, told) == lan


def test_advertise_host_wins(tmp_path: Path) -> None:
    config = make_config(tmp_path, advertise_host="198.51.100.1")
    assert _advertised(config, 6881, MAPPED) == ["198.51.100.1:6881"]
    assert _advertised(make_config(tmp_path, advertise_host="none"), 6881, MAPPED) == []
    v6 = make_config(tmp_path, advertise_host="2001:db8::2")
    assert _advertised(v6, 6881, MAPPED) == ["[2001:db8::2]:6881"]


def test_a_magnet_carries_every_address() -> None:
    magnet = magnet_for(IH, "a b.mkv", ["192.168.1.10:6881", "203.0.113.7:16881"])
    assert magnet.startswith(f"magnet:?xt=urn:btih:{IH}&dn=a%20b.mkv&x.pe=")
    assert magnet_peers(magnet) == ([("192.168.1.10", 6881), ("203.0.113.7", 16881)], [])
    assert "x.pe" not in magnet_for(IH, "x", [])


def test_a_real_engine_advertises_its_listen_port(tmp_path: Path) -> None:
    config = make_config(tmp_path, advertise_host="127.0.0.1")
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        assert advertised_addresses(config, engine) == [f"127.0.0.1:{engine.listen_port}"]


def test_set_peers_is_a_new_signed_version_only_when_it_changes(tmp_path: Path) -> None:
    key = generate_key()
    store = ManifestStore(tmp_path / "manifests", signer=key)
    item = Item(title="t", torrent=f"magnet:?xt=urn:btih:{IH}", path="t.mkv")
    first = store.upsert("family", [item])
    second = store.set_peers("family", ["192.168.1.10:6881"])
    assert second.version == first.version + 1
    assert second.extra["peers"] == ["192.168.1.10:6881"]
    assert second.extra["signature"] != first.extra["signature"]
    assert store.set_peers("family", ["192.168.1.10:6881"]) is second  # unchanged
    third = store.upsert("family", [Item(title="u", torrent=f"magnet:?xt=urn:btih:{'cd' * 20}",
                                          path="u.mkv")])  # fmt: skip
    assert third.extra["peers"] == ["192.168.1.10:6881"]  # kept by later versions
    store.close()
    reopened = ManifestStore(tmp_path / "manifests", signer=key)
    assert reopened.get("family").extra["peers"] == ["192.168.1.10:6881"]
    reopened.close()


class _TurningPortMap:
    """A port map whose router answers between two reads: unmapped on the first view(),
    mapped on every later one. A real router's answer cannot be timed to land between
    two statements, so this stand-in replaces only the engine's port map."""

    enabled = True

    def __init__(self) -> None:
        self.reads = 0

    def view(self) -> PortMapView:
        self.reads += 1
        return PortMapView() if self.reads == 1 else MAPPED

    def subscribe(self, listener: object) -> None:
        """No changes are pushed: the test calls update() itself."""


class _EngineStub:
    listen_port = 6881

    def __init__(self) -> None:
        self.portmap = _TurningPortMap()


def test_a_mapping_answered_during_an_update_makes_no_lan_only_version(tmp_path: Path) -> None:
    """After a restart the manifest still lists LAN + external; the router's answer landing
    while update() runs must not publish the LAN address alone (the lab went 1 -> 3)."""
    config = make_config(tmp_path, listen_host="0.0.0.0", advertise_host=None)
    lan = _advertised(config, 6881, PortMapView())
    store = ManifestStore(tmp_path / "manifests")
    store.upsert("default", [Item(title="t", torrent=f"magnet:?xt=urn:btih:{IH}", path="t.mkv")])
    before = store.set_peers("default", [*lan, "203.0.113.7:16881"])
    advertiser = PeerAdvertiser(config, _EngineStub(), store)  # type: ignore[arg-type]
    advertiser.update()  # not settled yet: the listed external address is kept
    advertiser.update()  # mapped: the same addresses
    assert store.get("default").version == before.version
    assert store.get("default").extra["peers"] == [*lan, "203.0.113.7:16881"]
    store.close()
