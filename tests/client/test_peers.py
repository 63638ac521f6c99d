"""The curator addresses a client dials: a manifest's `peers` is untrusted input."""

from __future__ import annotations

import pytest

from meshmedia.client.peers import MAX_PEERS, CuratorPeers, dial_list, listed_peers

URL = "http://203.0.113.7:5000/manifest/family.json"
MAGNET = "magnet:?xt=urn:btih:" + "ab" * 20 + "&x.pe=192.168.1.10:6881"


@pytest.mark.parametrize(
    "raw",
    [None, "1.2.3.4:5", 7, {"a": 1}, [1, None, ["x"]], ["host:80", "1.2.3.4:0", "1.2.3.4:70000",
     "::1:80", "1.2.3.4", "\ud800:1"]],
)  # fmt: skip
def test_bad_peers_are_dropped(raw: object) -> None:
    assert listed_peers(URL, {"peers": raw}) == []


def test_good_peers_in_order_deduplicated_and_bounded() -> None:
    many = [f"10.0.0.{n}:6881" for n in range(1, 40)]
    listed = listed_peers(URL, {"peers": ["[2001:db8::1]:6881", "bad", *many, many[0]]})
    assert listed[0] == ("2001:db8::1", 6881)
    assert len(listed) == MAX_PEERS - 1  # "bad" took a place of the 16 looked at
    assert len(set(listed)) == len(listed)


def test_the_dial_list_adds_the_manifest_host_with_each_port() -> None:
    listed = [("203.0.113.7", 16881)]
    assert dial_list(URL, listed, MAGNET) == [
        ("192.168.1.10", 6881),
        ("203.0.113.7", 16881),
        ("203.0.113.7", 6881),
    ]
    # a host name in the URL is not dialled (libtorrent takes IP literals only)
    assert dial_list("http://curator.example/m.json", [], MAGNET) == [("192.168.1.10", 6881)]
    assert dial_list("dht:" + "ab" * 32, [], "https://x/t.torrent") == []


def test_curator_peers_say_when_they_change() -> None:
    peers = CuratorPeers()
    assert not peers.update(URL, {})
    assert peers.update(URL, {"peers": ["203.0.113.7:6881"]})
    assert not peers.update(URL, {"peers": ["203.0.113.7:6881"]})
    assert ("203.0.113.7", 6881) in peers.for_item(URL, MAGNET)
    assert peers.update(URL, {"peers": []})
