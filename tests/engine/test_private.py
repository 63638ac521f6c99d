"""Private groups' SSL torrents in the engine (native_notes/privacy.md 3.2), with real
libtorrent sessions on 127.0.0.1: a member gets the file, a stranger who has the info
hash and every address gets no metadata and no byte, a restart serves members again
without hashing, and a torrent without the group's CA is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from benchmarks.privacy_lab import Peer, issue, make_ca
from meshmedia.engine import Engine, TorrentState
from meshmedia.engine.building import SourceFile, build_torrent
from meshmedia.errors import EngineError
from meshmedia.groups import GroupAuthority, make_csr, new_member_key
from meshmedia.hashing import hash_file
from meshmedia.store import Store
from tests.helpers import make_config, random_file, wait_for

MIB = 1 << 20
NAME = "Grandma 80th birthday.mkv"
HOME = "127.0.0.1"


@contextmanager
def engine(tmp_path: Path, name: str, **overrides: Any) -> Iterator[Engine]:
    """An Engine with its own state dir, always closed."""
    config = make_config(tmp_path, name, **overrides)
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as eng:
        yield eng


def ssl_torrent(path: Path, ca: bytes | None) -> bytes:
    """The torrent the curator builds of `path` (its own piece hashes), SSL with `ca`."""
    return build_torrent([SourceFile(path.name, path, hash_file(path))], ca).data


def member(ca: GroupAuthority, member_id: str) -> tuple[bytes, bytes]:
    """A member certificate and key, made as a joining client does (key, CSR, signed)."""
    key = new_member_key()
    return ca.sign_csr(make_csr(key), member_id), key


@pytest.fixture
def group(tmp_path: Path) -> GroupAuthority:
    """A private group's CA in the curator's state dir."""
    return GroupAuthority.open(tmp_path / "curator-state", "family")


def shared_file(tmp_path: Path) -> Path:
    return random_file(tmp_path / "share" / NAME, 3 * MIB + 4321)


def refused_by(peer: Peer) -> set[int]:
    """The ports whose connections with the stranger's session ended (refused or closed)."""
    peer.pump()
    ended = (ln for ln in peer.log if ln.startswith(("peer_disconnected", "peer_error")))
    return {int(m[1]) for ln in ended if (m := re.search(r"peer 127\.0\.0\.1:(\d+) ", ln))}


def test_a_member_syncs_and_a_stranger_with_every_address_gets_nothing(
    tmp_path: Path, group: GroupAuthority
) -> None:
    src = shared_file(tmp_path)
    torrent = ssl_torrent(src, group.ca_pem)
    with engine(tmp_path, "curator") as curator, engine(tmp_path, "client") as client:
        curator.set_group_certificate(group.ca_pem, *group.issue_self("c0ffee00c0ffee00"))
        ih = curator.add_seed(torrent, src.parent, verified=True, private_ca=group.ca_pem)
        client.set_group_certificate(group.ca_pem, *member(group, "5f0c1a2b3c4d5e6f"))
        got = client.add_download(
            torrent,
            tmp_path / "dl",
            peers=[(HOME, curator.ssl_listen_port)],
            private_ca=group.ca_pem,
        )
        assert got == ih
        client.wait_until(ih, TorrentState.SEEDING, timeout=60)
        assert (tmp_path / "dl" / NAME).read_bytes() == src.read_bytes()
        uploaded = curator.status(ih)
        assert uploaded is not None

        addresses = [
            curator.listen_port,
            curator.ssl_listen_port,
            client.listen_port,
            client.ssl_listen_port,
        ]
        assert 0 not in addresses
        stranger = Peer("stranger", cert=issue(make_ca(), "s"))
        try:
            plain = stranger.add(None, tmp_path / "stranger", magnet_ih=ih)
            for port in addresses:
                stranger.connect(plain, port)
            # every address refuses the stranger (each connection ended), within 20 s
            wait_for(lambda: refused_by(stranger) >= set(addresses), timeout=20)
            status = stranger.status(plain)
            assert not status.has_metadata  # no file name
            assert status.total_payload_download == 0
            assert status.num_pieces == 0
        finally:
            stranger.close()


def test_a_stranger_that_dials_tls_with_its_own_ca_gets_nothing(
    tmp_path: Path, group: GroupAuthority
) -> None:
    src = shared_file(tmp_path)
    with engine(tmp_path, "curator") as curator:
        curator.set_group_certificate(group.ca_pem, *group.issue_self("c0ffee00c0ffee00"))
        ih = curator.add_seed(ssl_torrent(src, group.ca_pem), src.parent, private_ca=group.ca_pem)
        foreign = make_ca()
        stranger = Peer("stranger", cert=issue(foreign, "s"))
        try:
            # a magnet with its own CA: libtorrent dials TLS with SNI = the info hash
            tls = stranger.add(
                None, tmp_path / "stranger", magnet_ih=ih, root_certificate=foreign.cert_pem
            )
            wait_for(lambda: (stranger.pump(), stranger.need_cert > 0)[1], timeout=20)
            stranger.connect(tls, curator.ssl_listen_port)
            wait_for(lambda: curator.ssl_listen_port in refused_by(stranger), timeout=20)
            status = stranger.status(tls)
            assert not status.has_metadata
            assert status.total_payload_download == 0
        finally:
            stranger.close()


def test_a_restarted_engine_serves_members_again_without_hashing(
    tmp_path: Path, group: GroupAuthority
) -> None:
    src = shared_file(tmp_path)
    torrent = ssl_torrent(src, group.ca_pem)
    cert = member(group, "5f0c1a2b3c4d5e6f")
    with engine(tmp_path, "client") as first:
        ih = first.add_seed(torrent, src.parent, verified=True, private_ca=group.ca_pem)
        first.set_group_certificate(group.ca_pem, *cert)
        first.wait_until(ih, TorrentState.SEEDING, timeout=30)
    with engine(tmp_path, "client") as again, engine(tmp_path, "newcomer") as newcomer:
        restored = again.status(ih)
        assert restored is not None  # back from the resume data
        assert restored.state == TorrentState.SEEDING
        # the certificate comes after the restore, as a daemon sets it at start
        again.set_group_certificate(group.ca_pem, *cert)
        newcomer.set_group_certificate(group.ca_pem, *member(group, "0123456789abcdef"))
        newcomer.add_download(
            torrent,
            tmp_path / "new",
            peers=[(HOME, again.ssl_listen_port)],
            private_ca=group.ca_pem,
        )
        newcomer.wait_until(ih, TorrentState.SEEDING, timeout=60)
        assert (tmp_path / "new" / NAME).read_bytes() == src.read_bytes()
        assert again.stats()["disk.num_blocks_hashed"] == 0  # verified at add, never again
        handle_flags = again_flags(again, ih)
        assert handle_flags & lt.torrent_flags.disable_dht
        assert handle_flags & lt.torrent_flags.disable_lsd
        assert not handle_flags & lt.torrent_flags.disable_pex


def again_flags(eng: Engine, ih: str) -> int:
    """The torrent's libtorrent flags (a look inside the engine, for this test only)."""
    return int(eng._table.handle(ih).flags())


def test_a_torrent_without_the_groups_ca_is_refused(tmp_path: Path, group: GroupAuthority) -> None:
    src = shared_file(tmp_path)
    other = GroupAuthority.open(tmp_path / "curator-state", "other")
    with engine(tmp_path, "client") as client:
        for torrent, why in (
            (ssl_torrent(src, None), "no CA"),
            (ssl_torrent(src, other.ca_pem), "another group's CA"),
        ):
            with pytest.raises(EngineError, match=why):
                client.add_download(torrent, tmp_path / "dl", private_ca=group.ca_pem)
            with pytest.raises(EngineError, match=why):
                client.add_seed(torrent, src.parent, private_ca=group.ca_pem)
        assert client.snapshot().torrents == ()


def test_a_private_magnet_gets_the_metadata_from_a_member(
    tmp_path: Path, group: GroupAuthority
) -> None:
    src = shared_file(tmp_path)
    torrent = ssl_torrent(src, group.ca_pem)
    with engine(tmp_path, "curator") as curator, engine(tmp_path, "client") as client:
        curator.set_group_certificate(group.ca_pem, *group.issue_self("c0ffee00c0ffee00"))
        ih = curator.add_seed(torrent, src.parent, private_ca=group.ca_pem)
        client.set_group_certificate(group.ca_pem, *member(group, "5f0c1a2b3c4d5e6f"))
        client.add_download(
            f"magnet:?xt=urn:btih:{ih}",
            tmp_path / "dl",
            peers=[(HOME, curator.ssl_listen_port)],
            private_ca=group.ca_pem,
        )
        client.wait_until(ih, TorrentState.SEEDING, timeout=60)
        assert (tmp_path / "dl" / NAME).read_bytes() == src.read_bytes()
        data = client.torrent_bytes(ih)
        assert data is not None
        assert lt.torrent_info(data).ssl_cert().encode() == group.ca_pem


def test_control_the_same_stranger_gets_a_public_torrents_name(tmp_path: Path) -> None:
    """The stranger above is able: from a plain torrent it gets the metadata at once."""
    src = shared_file(tmp_path)
    with engine(tmp_path, "curator") as curator:
        ih = curator.add_seed(ssl_torrent(src, None), src.parent)
        stranger = Peer("stranger")
        try:
            plain = stranger.add(None, tmp_path / "stranger", magnet_ih=ih)
            stranger.connect(plain, curator.listen_port)
            wait_for(lambda: (stranger.pump(), stranger.status(plain).has_metadata)[1], 20)
            assert stranger.status(plain).name == NAME
        finally:
            stranger.close()
