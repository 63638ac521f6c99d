"""A private group through the DHT alone (privacy.md 3.7), real sessions on 127.0.0.1:
the curator puts the group's pointer sealed, under the group's own key and a salt that
does not name it; a member opens it with the group secret, checks the curator's
signature and syncs the item over SSL torrents; what anyone else finds under the
group's name, or with the item's key, names no file and no group."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshmedia.client.follow import Following, followers
from meshmedia.config import Share
from meshmedia.curator import Curator
from meshmedia.groups import GroupAuthority, Membership, make_csr, save_membership
from meshmedia.groups.membership import member_key
from meshmedia.groups.sealing import dht_salt
from meshmedia.manifest import generate_key, save_key
from tests.engine.test_dht import Swarm
from tests.helpers import random_file, wait_for

NAME = "Grandma 80th birthday.mkv"


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    s = Swarm(tmp_path)
    with s.stack:
        yield s


def test_a_member_follows_a_sealed_pointer_and_a_stranger_reads_nothing(
    swarm: Swarm, tmp_path: Path
) -> None:
    signer = generate_key()
    share = tmp_path / "curator" / "family"
    base = swarm.config("curator")
    config = base.with_changes(shares=(Share("family", share),), public=())
    save_key(config.state_dir, signer)
    source = random_file(share / NAME, 300_000, seed=3)
    member_config, member_engine = swarm.joined("member")
    _, stranger = swarm.joined("stranger")
    with Curator(config, force_polling=True) as curator:
        assert curator.engine is not None
        assert curator.publisher is not None
        assert curator.swarms is not None
        swarm.introduce(curator.engine)
        try:
            item = curator.publisher.publish(source)
            authority = GroupAuthority.open(config.state_dir, "family")
            key = member_key(member_config.state_dir)
            save_membership(
                member_config.state_dir,
                Membership(
                    group="family",
                    member_id="5f0c1a2b3c4d5e6f",
                    certificate=authority.sign_csr(make_csr(key), "5f0c1a2b3c4d5e6f"),
                    ca=authority.ca_pem,
                    key=key,
                    curator_addresses=[],
                    signing_key=signer.public_hex,
                    credential=None,
                    manifest_url="http://127.0.0.1:9/manifest/family.json",  # unreachable
                    peers=curator.swarms.peers("127.0.0.1"),
                    dht_public_key=authority.dht_public.hex(),
                    dht_secret=authority.secret.hex(),
                ),
            )
            client = swarm.client(member_config, member_engine)
            parts = Following(member_engine, swarm.stores[member_engine], client.apply)
            (follower,) = followers(member_config, parts, threading.Event())
            assert wait_for(follower.check, timeout=60, interval=0.5)
            wait_for(lambda: client.step() or client.settled(), timeout=60, interval=0.2)
            placed = member_config.download_dir / item.path
            assert placed.read_bytes() == source.read_bytes()

            # what a stranger finds: nothing under the group's name (with either key)...
            for public in (signer.public, authority.dht_public):
                assert stranger.dht.get(public, b"family", timeout=10) is None
            # ...and, even with the item's key and salt, a value that names nothing
            found = stranger.dht.get(authority.dht_public, dht_salt(authority.secret))
            assert found is not None
            for word in (b"family", b"Grandma", b"birthday", (item.info_hash or "").encode()):
                assert word not in found.value
            assert b"family" not in dht_salt(authority.secret)
        finally:
            swarm.members.remove(curator.engine)
