"""A private group's swarm end to end on loopback (native_notes/privacy.md 3.2): a real
curator publishes into a private group, a member syncs the file over SSL torrents;
a stranger's libtorrent session with the info hash and every BitTorrent address of
both (plain and SSL ports) gets no metadata and no byte; a member restarted from its
resume data serves a newcomer without the curator and without hashing again."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt
import pytest
import requests

from benchmarks.privacy_lab import Peer
from meshmedia.client import SyncClient
from meshmedia.client.fetcher import ManifestFetcher
from meshmedia.client.private import CREDENTIAL_HEADER
from meshmedia.config import Config, Share
from meshmedia.curator import Curator
from meshmedia.engine import Engine
from meshmedia.groups import GroupAuthority, Membership, make_csr, save_membership
from meshmedia.groups.membership import member_key
from meshmedia.http import routes
from meshmedia.store import Store
from tests.helpers import make_config, random_file, wait_for

NAME = "Grandma 80th birthday.mkv"
SIZE = 3 * (1 << 20) + 777


@dataclass
class Member:
    """A joined client: its config, store, engine and sync client (in this process)."""

    config: Config
    store: Store
    engine: Engine
    client: SyncClient

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def joined(curator: Curator, config: Config, group: str, peers: list[str]) -> Membership:
    """What `join` leaves in a client's state dir: key, certificate, group file."""
    ca = GroupAuthority.open(curator.config.state_dir, group)
    key = member_key(config.state_dir)
    member_id = re.sub("[^0-9a-f]", "", config.state_dir.parent.name.encode().hex())[:16]
    assert curator.server is not None
    m = Membership(
        group=group,
        member_id=member_id,
        certificate=ca.sign_csr(make_csr(key), member_id),
        ca=ca.ca_pem,
        key=key,
        curator_addresses=[f"127.0.0.1:{curator.server.port}"],
        signing_key="00" * 32,
        credential=None,
        manifest_url=curator.server.url.rstrip("/") + f"/manifest/{group}.json",
        peers=peers,
    )
    save_membership(config.state_dir, m)
    return m


def start_member(config: Config) -> Member:
    store = Store.in_state_dir(config.state_dir)
    engine = Engine(config, store)
    client = SyncClient(config, store, engine, retry_base=3600)
    client.retries = False
    return Member(config, store, engine, client)


def sync(member: Member, url: str) -> None:
    body = ManifestFetcher(url).fetch().body
    assert body is not None
    assert member.client.apply(url, body)
    wait_for(lambda: member.client.step() or member.client.settled(), timeout=60, interval=0.2)


@pytest.fixture
def curator(tmp_path: Path) -> Iterator[Curator]:
    """A curator whose group `family` is private (no group is public)."""
    share = tmp_path / "curator" / "family"
    config = make_config(tmp_path, "curator", shares=(Share("family", share),), public=())
    random_file(share / NAME, SIZE, seed=80)
    with Curator(config, force_polling=True) as running:
        assert running.publisher is not None
        running.publisher.publish(share / NAME)
        yield running


def refused_by(peer: Peer) -> set[int]:
    """The ports whose connections with the stranger's session ended (refused or closed)."""
    peer.pump()
    ended = (ln for ln in peer.log if ln.startswith(("peer_disconnected", "peer_error")))
    return {int(m[1]) for ln in ended if (m := re.search(r"peer 127\.0\.0\.1:(\d+) ", ln))}


def test_the_clients_credential_header_is_the_curators() -> None:
    assert CREDENTIAL_HEADER == routes.CREDENTIAL_HEADER


def test_a_member_syncs_and_a_stranger_with_every_address_gets_nothing(
    tmp_path: Path, curator: Curator
) -> None:
    assert curator.manifests is not None
    assert curator.engine is not None
    assert curator.swarms is not None
    (item,) = curator.manifests.get("family").items
    ih = item.info_hash
    assert ih is not None
    assert item.torrent == f"magnet:?xt=urn:btih:{ih}"  # no name, no peer
    group_ca = GroupAuthority.open(curator.config.state_dir, "family").ca_pem
    data = curator.engine.torrent_bytes(ih)
    assert data is not None
    assert lt.torrent_info(data).ssl_cert().encode() == group_ca

    config = make_config(tmp_path, "home1")
    m = joined(curator, config, "family", curator.swarms.peers("127.0.0.1"))
    member = start_member(config)
    try:
        sync(member, m.manifest_url)
        placed = config.download_dir / NAME
        assert placed.read_bytes() == (curator.config.shares[0].path / NAME).read_bytes()
        assert [ci.state for ci in member.client.items()] == ["placed"]

        ports = [
            curator.engine.listen_port,
            curator.engine.ssl_listen_port,
            member.engine.listen_port,
            member.engine.ssl_listen_port,
        ]
        assert 0 not in ports
        stranger = Peer("stranger")
        try:
            handle = stranger.add(None, tmp_path / "stranger", magnet_ih=ih)
            for port in ports:
                stranger.connect(handle, port)
            # every address refuses the stranger (each connection ended), within 20 s
            wait_for(lambda: refused_by(stranger) >= set(ports), timeout=20)
            status = stranger.status(handle)
            assert not status.has_metadata  # no file name, no size
            assert status.total_payload_download == 0
            assert status.num_pieces == 0
        finally:
            stranger.close()
    finally:
        member.close()


def test_a_restarted_member_serves_a_newcomer_without_the_curator_or_hashing(
    tmp_path: Path, curator: Curator
) -> None:
    assert curator.swarms is not None
    assert curator.manifests is not None
    ih = curator.manifests.get("family").items[0].info_hash
    config = make_config(tmp_path, "home1")
    m = joined(curator, config, "family", curator.swarms.peers("127.0.0.1"))
    first = start_member(config)
    try:
        sync(first, m.manifest_url)
    finally:
        first.close()
    again = start_member(config)  # from its resume data; the certificate set again at start
    newcomer_config = make_config(tmp_path, "home2")
    try:
        assert again.engine.status(ih) is not None
        peer = f"127.0.0.1:{again.engine.ssl_listen_port}"
        joined(curator, newcomer_config, "family", [peer])  # only the restarted member
        newcomer = start_member(newcomer_config)
        try:
            torrent = requests.get(
                m.manifest_url.replace("/manifest/family.json", f"/torrents/{ih}.torrent"),
                timeout=10,
            )
            assert torrent.status_code == 200
            body = ManifestFetcher(m.manifest_url).fetch().body
            assert body is not None
            curator.close()  # the newcomer can only get it from the restarted member
            assert newcomer.client.apply(m.manifest_url, body)
            wait_for(
                lambda: newcomer.client.step() or newcomer.client.settled(),
                timeout=60,
                interval=0.2,
            )
            assert [ci.state for ci in newcomer.client.items()] == ["placed"]
            assert (newcomer_config.download_dir / NAME).stat().st_size == SIZE
            assert again.engine.stats()["disk.num_blocks_hashed"] == 0
        finally:
            newcomer.close()
    finally:
        again.close()


def test_a_public_group_made_private_is_rebuilt_as_ssl_torrents_without_hashing(
    tmp_path: Path,
) -> None:
    share = tmp_path / "curator" / "family"
    random_file(share / NAME, SIZE, seed=81)
    config = make_config(tmp_path, "curator", shares=(Share("family", share),))  # public
    with Curator(config, force_polling=True) as public:
        assert public.publisher is not None
        assert public.manifests is not None
        before = public.publisher.publish(share / NAME)
        assert "&dn=" in before.torrent  # today's magnet: name and peer
    with Curator(config.with_changes(public=()), force_polling=True) as private:
        assert private.manifests is not None
        assert private.engine is not None
        assert private.publisher is not None
        (after,) = private.manifests.get("family").items
        assert after.info_hash != before.info_hash
        assert after.torrent == f"magnet:?xt=urn:btih:{after.info_hash}"
        assert (after.path, after.sha256, after.size) == (before.path, before.sha256, SIZE)
        assert [t.info_hash for t in private.engine.snapshot().torrents] == [after.info_hash]
        data = private.engine.torrent_bytes(after.info_hash or "")
        assert data is not None
        ca = GroupAuthority.open(config.state_dir, "family").ca_pem
        assert lt.torrent_info(data).ssl_cert().encode() == ca
        assert private.publisher.bytes_hashed == 0  # from the hash cache


def test_members_get_the_curators_ssl_address_at_home_and_behind_its_router(
    curator: Curator,
) -> None:
    assert curator.swarms is not None
    assert curator.engine is not None
    ssl = curator.engine.ssl_listen_port
    assert curator.swarms.peers("192.168.1.10") == [f"192.168.1.10:{ssl}"]
    state = curator.engine.portmap.state  # what the router's answers leave (portmap.py)
    state.external("203.0.113.7")
    state.mapped("natpmp", "tcp", curator.engine.listen_port, http=False)
    state.mapped("natpmp", "tcp", 16882, http=False, ssl=True)
    assert curator.swarms.peers("192.168.1.10") == [f"192.168.1.10:{ssl}", "203.0.113.7:16882"]
    assert curator.swarms.peers(None) == []
