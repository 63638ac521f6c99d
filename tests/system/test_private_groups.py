"""Issue 14: a private group in the namespace lab, DHT on, with a stranger on it.

The curator's HTTP module binds its own loopback (no other host reaches it); three
members joined (their group file and certificate written as `join` leaves them)
follow the group's sealed BEP 46 pointer through the DHT, take the items as SSL
torrents from the curator's SSL port and trade with each other (PEX among members).
A fifth host is a stranger on the same DHT: it collects every info hash the DHT
shows it (incoming get_peers and announces, `sample_infohashes` of every node, its
own lookups), every value put on it and the BEP 46 items under the curator's key,
then tries each hash on every host's plain and SSL ports.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshmedia.groups import GroupAuthority, Membership, make_csr, save_membership
from meshmedia.groups.membership import member_key
from meshmedia.manifest import generate_key, save_key
from tests.helpers import random_file
from tests.system.netlab import Host, Network
from tests.system.nodes import (
    HTTP_PORT,
    PEER_PORT,
    ClientNode,
    CuratorNode,
    assert_identical,
    get_json,
    sha256,
    tails,
    wait_until,
)

pytestmark = pytest.mark.system

MIB = 1 << 20
NAME = "Grandma 80th birthday.mkv"
DISCOVERY = ("--dht", "--no-lsd", "--no-upnp", "--no-natpmp")
ROOT = Path(__file__).resolve().parents[2]


class PrivateCurator(CuratorNode):
    """A curator with no public group, its HTTP module on its own loopback only."""

    def args(self) -> list[str]:
        full = super().args()
        at = full.index("--public")
        return [*full[:at], *full[at + 2 :], "--host", "127.0.0.1"]

    def get(self, path: str) -> Any:
        return get_json(self.host, "127.0.0.1", HTTP_PORT, path)


def join(curator: PrivateCurator, member: ClientNode, signer: str) -> None:
    """What `meshmedia join` leaves in the member's state dir."""
    authority = GroupAuthority.open(curator.state_dir, "default")
    key = member_key(member.state_dir)
    member_id = secrets.token_hex(8)
    save_membership(
        member.state_dir,
        Membership(
            group="default",
            member_id=member_id,
            certificate=authority.sign_csr(make_csr(key), member_id),
            ca=authority.ca_pem,
            key=key,
            curator_addresses=[f"{curator.host.address}:{HTTP_PORT}"],
            signing_key=signer,
            credential=None,
            manifest_url=curator.manifest_url,  # closed: the DHT and the magnet + CA it is
            peers=[f"{curator.host.address}:{PEER_PORT + 1}"],
            dht_public_key=authority.dht_public.hex(),
            dht_secret=authority.secret.hex(),
        ),
    )


def stranger(host: Host, bootstrap: str, key: str, addresses: list[str]) -> subprocess.Popen[str]:
    """The stranger, collecting on the DHT until told to stop (a line on its stdin)."""
    return host.popen(
        [sys.executable, "-m", "tests.system.dht_stranger", host.address, "300", bootstrap, key,
         *addresses],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def learnt(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop the stranger's collecting; what it learnt (after it tried every hash)."""
    out, err = proc.communicate("stop\n", timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_members_swarm_and_a_stranger_on_the_dht_learns_nothing(
    network: Network, tmp_path: Path
) -> None:
    size = 32 * MIB
    signer = generate_key()
    curator = PrivateCurator(
        network.hosts[0], tmp_path / "curator", "--upload-limit", "4M", *DISCOVERY
    )
    save_key(curator.state_dir, signer)
    bootstrap = f"{curator.host.address}:{PEER_PORT}"
    members = [
        ClientNode(  # its manifest URL is closed: the group's DHT item is the way in
            h,
            tmp_path / f"member{h.index}",
            curator.manifest_url,
            "--dht-bootstrap",
            bootstrap,
            *DISCOVERY,
        )
        for h in network.hosts[1:4]
    ]
    for member in members:
        join(curator, member, signer.public_hex)
    digest = sha256(random_file(curator.share / NAME, size, seed=14))
    curator.start()
    (item,) = curator.wait_items(1)
    assert item["torrent"] == f"magnet:?xt=urn:btih:{item['torrent'][20:60]}"  # bare
    ih = item["torrent"][20:60]
    addresses = [h.address for h in network.hosts[:4]]
    watching = stranger(network.hosts[4], bootstrap, signer.public_hex, addresses)
    for member in members:
        member.start()
    wait_until(lambda: all(m.placed(NAME) for m in members), 240, "placed", [curator, *members])
    assert_identical(members, NAME, digest)
    counters = [member.counters() for member in members]
    from_members = sum(up for _down, up in counters)
    print(
        f"\n{size // MIB} MiB to 3 members, curator capped at 4 MiB/s: the members sent "
        f"{from_members / size:.2f} copies (down/up MiB: "
        f"{[(d // MIB, u // MIB) for d, u in counters]})"
    )
    assert sum(up > 0 for _down, up in counters) >= 2, tails([curator, *members])

    seen = learnt(watching)
    print(
        f"stranger: {len(seen['hashes'])} hashes seen, {len(seen['put_values'])} puts stored, "
        f"{len(seen['items'])} items found, tried {len(seen['tried'])}"
    )
    assert ih not in seen["hashes"]
    assert seen["items"] == {}  # nothing under the curator's key with any guessed salt
    assert all(t == {"metadata": None, "bytes": 0} for t in seen["tried"].values()), seen
    assert seen["put_values"], "the sealed pointer never reached the stranger's node"
    for value in seen["put_values"]:
        raw = bytes.fromhex(value)
        for word in (b"Grandma", b"default", ih.encode(), str(size).encode()):
            assert word not in raw
