"""What the private-groups design relies on in libtorrent itself (native_notes/privacy.md).

Real sessions on 127.0.0.1 (benchmarks/privacy_lab.py). Each negative check waits
for the member to refuse the stranger's connection (an alert), then looks at what
the stranger got: no wall-clock bound decides the outcome.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import libtorrent as lt
import pytest

from benchmarks.common import random_file
from benchmarks.privacy_dht import DHT_ALERTS, DHT_SETTINGS, Seen, collect, form_dht
from benchmarks.privacy_lab import (
    MiB,
    Peer,
    Pki,
    Torrent,
    build,
    issue,
    make_ca,
    raw_probe,
    seeding,
    wait,
)

NAME = "Grandma 80th birthday.mkv"


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Sessions made by a test; all closed after it."""
    made: list[Peer] = []
    yield made
    for peer in made:
        if peer.session is not None:
            peer.close()


def _peer(peers: list[Peer], name: str, cert: Pki | None = None, **kw: object) -> Peer:
    peer = Peer(name, cert=cert, **kw)  # type: ignore[arg-type]
    peers.append(peer)
    return peer


def _seeded(
    peers: list[Peer], tmp_path: Path, ca: Pki, ssl: bool = True
) -> tuple[Peer, Torrent, str]:
    data = random_file(tmp_path / "seed" / NAME, 2 * MiB)
    torrent = build(data, ca.cert_pem if ssl else None)
    member = _peer(peers, "member", issue(ca, "m1"))
    ih = member.add(torrent, data.parent, seed=True)
    ready = lambda: (member.need_cert > 0 or not ssl) and seeding(member, ih)()  # noqa: E731
    wait(ready, [member], 20, "member ready")
    return member, torrent, ih


def _refused(member: Peer, since: int) -> bool:
    """The member has refused a connection since log line `since`."""
    return any(
        ("peer_error_alert" in line or "peer_disconnected_alert" in line)
        for line in member.log[since:]
    )


def test_an_ssl_torrent_built_from_our_piece_hashes_reaches_a_member(
    tmp_path: Path, peers: list[Peer]
) -> None:
    ca = make_ca()
    member, torrent, ih = _seeded(peers, tmp_path, ca)
    assert lt.torrent_info(torrent.data).ssl_cert().encode() == ca.cert_pem
    other = _peer(peers, "other", issue(ca, "m2"))
    other.add(torrent, tmp_path / "other")
    wait(lambda: other.need_cert > 0, [other], 20, "certificate asked for")
    other.connect(ih, member.ssl_port)
    wait(seeding(other, ih), [member, other], 30, "member download")
    # "seeding" comes once every piece passed its hash check in memory; with the pread
    # backend the last blocks may still be on their way to the file (a full parallel run
    # read the file short, and pytest's diff of two 2 MiB byte strings hit the 300 s
    # timeout). The bytes on disk must come to be the seed's.
    want = hashlib.sha256((tmp_path / "seed" / NAME).read_bytes()).hexdigest()
    got = lambda: hashlib.sha256((tmp_path / "other" / NAME).read_bytes()).hexdigest()  # noqa: E731
    wait(lambda: got() == want, [member, other], 30, "the downloaded bytes on disk")


@pytest.mark.parametrize("how", ["magnet to the plain port", "foreign cert to the SSL port"])
def test_a_stranger_gets_no_metadata_and_no_byte_of_an_ssl_torrent(
    tmp_path: Path, peers: list[Peer], how: str
) -> None:
    ca = make_ca()
    member, torrent, ih = _seeded(peers, tmp_path, ca)
    foreign = make_ca()
    stranger = _peer(peers, "stranger", issue(foreign, "s"))
    mark = len(member.log)
    if how.startswith("magnet"):
        stranger.add(None, tmp_path / "stranger", magnet_ih=ih)
        stranger.connect(ih, member.port)
    else:
        stranger.add(torrent, tmp_path / "stranger")  # it even has the .torrent
        wait(lambda: stranger.need_cert > 0, [stranger], 20, "stranger cert")
        stranger.connect(ih, member.ssl_port)
    wait(lambda: _refused(member, mark), [member, stranger], 30, "the member refusing")
    status = stranger.status(ih)
    if how.startswith("magnet"):
        assert not status.has_metadata  # no file name
    assert status.total_payload_download == 0
    assert status.num_pieces == 0


def test_the_private_flag_does_not_authenticate_a_stranger(
    tmp_path: Path, peers: list[Peer]
) -> None:
    data = random_file(tmp_path / "seed" / NAME, 3 * MiB + 12345)
    torrent = build(data, private=True)
    member = _peer(peers, "member")
    ih = member.add(torrent, data.parent, seed=True)
    wait(seeding(member, ih), [member], 20, "seeding")
    probe = raw_probe(member.port, ih, blocks=4, timeout=30)
    assert probe.size == data.stat().st_size  # learnt from reject_request answers alone
    assert probe.block_bytes == 4 * 16384  # and the bytes


def test_an_ssl_torrent_restarts_from_resume_data_without_hashing(
    tmp_path: Path, peers: list[Peer]
) -> None:
    ca = make_ca()
    member, torrent, ih = _seeded(peers, tmp_path, ca)
    other = _peer(peers, "other", issue(ca, "m2"))
    other.add(torrent, tmp_path / "other")
    wait(lambda: other.need_cert > 0, [other], 20, "certificate asked for")
    other.connect(ih, member.ssl_port)
    wait(seeding(other, ih), [member, other], 30, "download")
    resume = other.save_resume(ih)
    other.close()
    member.close()

    again = _peer(peers, "again", issue(ca, "m2"))
    hashed = again.counters()["disk.num_blocks_hashed"]
    again.add(None, tmp_path / "other", resume=resume)
    wait(lambda: again.need_cert > 0 and seeding(again, ih)(), [again], 20, "restored")
    newcomer = _peer(peers, "newcomer", issue(ca, "m3"))
    newcomer.add(torrent, tmp_path / "newcomer")
    wait(lambda: newcomer.need_cert > 0, [newcomer], 20, "newcomer cert")
    newcomer.connect(ih, again.ssl_port)
    wait(seeding(newcomer, ih), [again, newcomer], 30, "served after the restart")
    assert again.counters()["disk.num_blocks_hashed"] == hashed


def test_a_disable_dht_ssl_torrent_never_reaches_the_dht(tmp_path: Path, peers: list[Peer]) -> None:
    ca = make_ca()
    nodes = [_peer(peers, f"n{i}", issue(ca, f"n{i}"), dht=True, extra=dict(DHT_SETTINGS))
             for i in range(3)]  # fmt: skip
    stranger = _peer(peers, "stranger", dht=True, extra=dict(DHT_SETTINGS))
    stranger.session.apply_settings({"alert_mask": DHT_ALERTS})
    form_dht([*nodes, stranger])
    hidden = build(random_file(tmp_path / "a" / NAME, 256 * 1024), ca.cert_pem)
    control = build(random_file(tmp_path / "b" / NAME, 256 * 1024), ca.cert_pem)
    no_dht = int(lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd)
    for node in nodes:
        node.add(hidden, tmp_path / "a", seed=True, flags=no_dht)
        node.add(control, tmp_path / "b", seed=True)
        for handle in node.handles.values():
            handle.force_dht_announce()
    seen = Seen()

    def control_announced() -> bool:
        collect(stranger, seen)
        return control.info_hash in seen.announces_in

    wait(control_announced, nodes, 60, "the control torrent's announce")
    for node in nodes:
        stranger.session.dht_sample_infohashes(
            ("127.0.0.1", node.port), lt.sha1_hash(os.urandom(20))
        )
    wait(lambda: (collect(stranger, seen), len(seen.sample_replies) == 3)[1], nodes, 30, "samples")
    assert hidden.info_hash not in seen.get_peers_in
    assert hidden.info_hash not in seen.announces_in
    assert hidden.info_hash not in seen.samples
