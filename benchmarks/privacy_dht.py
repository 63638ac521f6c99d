"""What a stranger on the DHT collects from a private group, and what it would from a public one.

    .venv/bin/python -m benchmarks.privacy_dht [--nodes 6] [--hardened]

A small DHT on 127.0.0.1 (every session told of the others, no bootstrap node, so
nothing leaves loopback): a curator, two clients, a few plain DHT nodes and a
stranger. Curator and clients hold four torrents of the same kind of file:

- public: plain torrent, DHT on (today's behaviour);
- ssl+dht: SSL torrent (group CA in the info dict), DHT left on;
- ssl, disable_dht: SSL torrent with torrent_flags.disable_dht | disable_lsd;
- private: BEP 27 private flag (libtorrent never announces it).

Every torrent gets force_dht_announce() once the DHT has formed. The curator also
puts the group's BEP 46 pointer, encrypted (ChaCha20-Poly1305, key and salt from
HKDF of the group key; seal() below), under a per-group DHT key.

The stranger's own node records every get_peers and announce_peer it receives
(a 6-node DHT makes every node one of the 8 closest to any target, so this is the
worst case), and every put's key, salt and value (dht_pkt_alert). It then sends
sample_infohashes (BEP 51) to every node, get_peers for every hash it saw, tries
to fetch the metadata of each hash from the peers it got, and gets the BEP 46
item with the DHT key under guessed salts. `--hardened` sets
dht_max_infohashes_sample_count = 0 on the group's sessions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from benchmarks.common import random_file
from benchmarks.privacy_lab import (
    Peer,
    build,
    issue,
    load_average,
    make_ca,
    wait,
)
from meshmedia.manifest.signing import generate_key

DHT_SETTINGS = {
    "dht_bootstrap_nodes": "",  # never the public bootstrap node: loopback only
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_ignore_dark_internet": False,
    "dht_prefer_verified_node_ids": False,
    # every session here is 127.0.0.1: the default (5 packets/s per IP, then blocked for
    # dht_block_timeout = 300 s) silenced the curator's put (0 nodes) in the first runs
    "dht_block_ratelimit": 10000,
    "dht_upload_rate_limit": 1 << 20,
}
DHT_ALERTS = int(
    lt.alert.category_t.dht_notification
    | lt.alert.category_t.dht_log_notification
    | lt.alert.category_t.dht_operation_notification
)
SEAL_VERSION = b"\x01"
MAX_VALUE = 995  # meshmedia.engine_dht.MAX_VALUE: 1000 bytes bencoded


# -- BEP 46 values a stranger cannot read ---------------------------------------------


def derive(group_key: bytes, purpose: str, length: int = 32) -> bytes:
    """A sub-key of the group key for one purpose (HKDF-SHA256, no salt, info = purpose)."""
    info = f"meshmedia {purpose} v1".encode()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(group_key)


def dht_salt(group_key: bytes) -> bytes:
    """The BEP 46 salt: 16 bytes from the group key; says nothing about the group's name."""
    return derive(group_key, "dht salt", 16)


def seal(group_key: bytes, public: bytes, salt: bytes, plaintext: bytes) -> bytes:
    """version(1) || nonce(12) || ChaCha20-Poly1305(plaintext), bound to key and salt."""
    nonce = os.urandom(12)
    aad = b"meshmedia-dht" + SEAL_VERSION + public + salt
    sealed = ChaCha20Poly1305(derive(group_key, "dht value")).encrypt(nonce, plaintext, aad)
    return SEAL_VERSION + nonce + sealed


def unseal(group_key: bytes, public: bytes, salt: bytes, value: bytes) -> bytes:
    """The plaintext of seal(); cryptography's InvalidTag when it is not ours or altered."""
    if value[:1] != SEAL_VERSION:
        raise ValueError("unknown sealed-value version")
    aad = b"meshmedia-dht" + SEAL_VERSION + public + salt
    return ChaCha20Poly1305(derive(group_key, "dht value")).decrypt(value[1:13], value[13:], aad)


# -- the lab ----------------------------------------------------------------------------


@dataclass
class Seen:
    """What the stranger's node and lookups collected."""

    get_peers_in: dict[str, int] = field(default_factory=dict)
    announces_in: dict[str, set[str]] = field(default_factory=dict)
    puts: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)
    sample_replies: dict[int, tuple[int, int]] = field(default_factory=dict)  # port: (num, sent)
    peers: dict[str, set[str]] = field(default_factory=dict)
    items: dict[bytes, bytes] = field(default_factory=dict)


def collect(stranger: Peer, seen: Seen) -> None:
    """Pop the stranger's alerts into `seen` (copying out of each alert at once)."""
    for alert in stranger.session.pop_alerts():
        if isinstance(alert, lt.dht_get_peers_alert):
            ih = str(alert.info_hash)
            seen.get_peers_in[ih] = seen.get_peers_in.get(ih, 0) + 1
        elif isinstance(alert, lt.dht_announce_alert):
            seen.announces_in.setdefault(str(alert.info_hash), set()).add(
                f"{alert.ip}:{alert.port}"
            )
        elif isinstance(alert, lt.dht_pkt_alert):
            _on_packet(bytes(alert.pkt_buf), seen)
        elif isinstance(alert, lt.dht_sample_infohashes_alert):
            seen.sample_replies[int(alert.endpoint[1])] = (
                int(alert.num_infohashes),
                int(alert.num_samples),
            )
            for sample in alert.samples:
                seen.samples[str(sample)] = seen.samples.get(str(sample), 0) + 1
        elif isinstance(alert, lt.dht_get_peers_reply_alert):
            seen.peers.setdefault(str(alert.info_hash), set()).update(
                f"{ip}:{port}" for ip, port in alert.peers()
            )
        elif isinstance(alert, lt.dht_mutable_item_alert) and alert.item:
            item = alert.item
            seen.items[bytes(alert.salt)] = bytes(item) if isinstance(item, bytes) else b""


def _on_packet(buf: bytes, seen: Seen) -> None:
    try:
        msg = lt.bdecode(buf)
    except RuntimeError:
        return
    if not isinstance(msg, dict) or msg.get(b"q") != b"put":
        return
    args = msg.get(b"a", {})
    seen.puts.append(
        {
            "k": bytes(args.get(b"k", b"")).hex(),
            "salt": bytes(args.get(b"salt", b"")),
            "v": args.get(b"v"),
        }
    )


def dht_peer(name: str, hardened: bool) -> Peer:
    """A session with its DHT on, loopback only."""
    extra: dict[str, Any] = dict(DHT_SETTINGS)
    if hardened:
        extra["dht_max_infohashes_sample_count"] = 0
    return Peer(name, dht=True, extra=extra)


def form_dht(peers: list[Peer]) -> None:
    """Tell every session of every other one; wait until each has a few nodes."""
    for peer in peers:
        for other in peers:
            if other is not peer:
                peer.session.add_dht_node(("127.0.0.1", other.port))

    def nodes(p: Peer) -> int:
        return p.counters().get("dht.dht_nodes", 0)

    wait(lambda: all(nodes(p) >= min(3, len(peers) - 1) for p in peers), peers, 60, "DHT formed")


def run(n_nodes: int, hardened: bool) -> None:
    """Build the lab, let the group announce, let the stranger collect; print what it got."""
    tmp = Path(tempfile.mkdtemp(prefix="privacy-dht-", dir="/var/tmp"))
    ca = make_ca()
    curator = dht_peer("curator", hardened)
    curator.cert = issue(ca, "c")
    clients = [dht_peer(f"client{i}", hardened) for i in range(2)]
    for i, client in enumerate(clients):
        client.cert = issue(ca, f"m{i}")
    others = [dht_peer(f"node{i}", False) for i in range(max(0, n_nodes - 4))]
    stranger = dht_peer("stranger", False)
    group = [curator, *clients]
    everyone = [*group, *others, stranger]
    try:
        _run(tmp, ca, curator, clients, group, everyone, stranger, hardened)
    finally:
        for peer in everyone:
            peer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _torrents(tmp: Path, ca: Any) -> dict[str, tuple[Any, int]]:
    no_dht = int(lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd)
    out = {}
    for label, root, private, flags in (
        ("public", None, False, 0),
        ("ssl+dht", ca.cert_pem, False, 0),
        ("ssl, disable_dht", ca.cert_pem, False, no_dht),
        ("private", None, True, 0),
    ):
        path = random_file(tmp / "share" / f"Grandma 80th birthday ({label}).mkv", 256 * 1024)
        out[label] = (build(path, root, private), flags)
    return out


def _run(
    tmp: Path,
    ca: Any,
    curator: Peer,
    clients: list[Peer],
    group: list[Peer],
    everyone: list[Peer],
    stranger: Peer,
    hardened: bool,
) -> None:
    stranger.session.apply_settings({"alert_mask": DHT_ALERTS})
    form_dht(everyone)
    torrents = _torrents(tmp, ca)
    names = {t.info_hash: label for label, (t, _f) in torrents.items()}
    for torrent, flags in torrents.values():
        curator.add(torrent, torrent.path.parent, seed=True, flags=flags)
        for i, client in enumerate(clients):
            client.add(torrent, tmp / f"c{i}", flags=flags)
    wait(lambda: False, group, 2, raise_on_timeout=False)  # torrents started, certs set
    for peer in group:
        for handle in peer.handles.values():
            handle.force_dht_announce()
    seen = Seen()
    # the BEP 46 pointer of the group, sealed
    group_key, dht_key = os.urandom(32), generate_key()
    salt = dht_salt(group_key)
    pointer = {"v": 12, "torrent": next(iter(names)), "peers": ["203.0.113.7:6882"] * 8}
    plain = json.dumps(pointer, separators=(",", ":")).encode()
    value = seal(group_key, dht_key.public, salt, plain)
    mask = int(curator.session.get_settings()["alert_mask"])
    curator.session.apply_settings({"alert_mask": mask | int(lt.alert.category_t.dht_notification)})
    curator.session.dht_put_mutable_item(dht_key.expanded_secret, dht_key.public, value, salt)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for peer in group:
            peer.pump()
        collect(stranger, seen)
        time.sleep(0.05)
    # the stranger's own lookups
    for peer in [p for p in everyone if p is not stranger]:
        stranger.session.dht_sample_infohashes(
            ("127.0.0.1", peer.port), lt.sha1_hash(os.urandom(20))
        )
    _drain(stranger, seen, group, 5)
    hashes_known = set(seen.get_peers_in) | set(seen.announces_in) | set(seen.samples)
    for ih in hashes_known:
        stranger.session.dht_get_peers(lt.sha1_hash(bytes.fromhex(ih)))
    for guess in (
        b"",
        b"default",
        b"family",
        b"Family",
        hashlib.sha1(b"family").digest()[:16],
        salt,
    ):
        stranger.session.dht_get_mutable_item(dht_key.public, guess)
    _drain(stranger, seen, group, 8)
    metadata = _fetch_metadata(stranger, seen, hashes_known, tmp, group)
    puts = [line for line in curator.log if line.startswith("dht_put_alert")]
    print("curator:", puts[-1] if puts else "no dht_put_alert")
    _report(seen, names, metadata, salt, group_key, dht_key.public, value, plain, hardened)
    for label, members in (("group sessions", group), ("other nodes", everyone[len(group) : -1])):
        replies = [seen.sample_replies.get(p.port) for p in members]
        text = ", ".join(f"{r[0]} stored/{r[1]} sampled" if r else "no reply" for r in replies)
        print(f"sample_infohashes answers from {label}: {text}")
    leaked = [ih for ih in names if bytes.fromhex(ih) in value or ih.encode() in value]
    print(f"our info hashes inside the stored value: {len(leaked)}; 'torrent' in it: "
          f"{b'torrent' in value}")  # fmt: skip


def _drain(stranger: Peer, seen: Seen, group: list[Peer], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for peer in group:
            peer.pump()
        collect(stranger, seen)
        time.sleep(0.05)


def _fetch_metadata(
    stranger: Peer, seen: Seen, hashes_known: set[str], tmp: Path, group: list[Peer]
) -> dict[str, str]:
    """Add each hash as a magnet with the peers the DHT gave; the names learnt."""
    for ih in hashes_known:
        stranger.add(None, tmp / "stranger", magnet_ih=ih, flags=int(lt.torrent_flags.disable_dht))
        for endpoint in seen.peers.get(ih, ()):
            host, port = endpoint.rsplit(":", 1)
            stranger.connect(ih, int(port), host)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for peer in group:
            peer.pump()
        collect(stranger, Seen())
        if all(stranger.status(ih).has_metadata for ih in hashes_known):
            break
        time.sleep(0.1)
    return {ih: stranger.status(ih).name for ih in hashes_known if stranger.status(ih).has_metadata}


def _report(
    seen: Seen,
    names: dict[str, str],
    metadata: dict[str, str],
    salt: bytes,
    group_key: bytes,
    public: bytes,
    value: bytes,
    plain: bytes,
    hardened: bool,
) -> None:
    print(f"load {load_average()}; hardened={hardened}")
    print("| torrent | get_peers received | announces received | in samples | "
          "peers from get_peers | metadata fetched |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for ih, label in names.items():
        print(
            f"| {label} | {seen.get_peers_in.get(ih, 0)} | {len(seen.announces_in.get(ih, ()))}"
            f" | {seen.samples.get(ih, 0)} | {len(seen.peers.get(ih, ()))}"
            f" | {metadata.get(ih, '-')!r} |"
        )
    other = set(seen.get_peers_in) | set(seen.announces_in) | set(seen.samples)
    print(f"hashes seen that are none of ours: {len(other - set(names))}")
    ours = [p for p in seen.puts if p["salt"] == salt]
    print(f"puts received: {len(seen.puts)}, ours {len(ours)}; a storing node sees: key "
          f"{public.hex()[:16]}..., salt {salt.hex()} (16 B), "
          f"value {len(value)} B of ciphertext")  # fmt: skip
    print(f"plaintext pointer {len(plain)} B -> sealed {len(value)} B (+{len(value) - len(plain)})"
          f"; room left under {MAX_VALUE} B: {MAX_VALUE - len(value)} B")  # fmt: skip
    for guess, item in seen.items.items():
        try:
            opened = unseal(group_key, public, guess, item) == plain
        except Exception:  # any failure means "not ours"
            opened = False
        print(f"stranger's get with the real salt (which it cannot know): {len(item)} B of"
              f" ciphertext; opens with the group key: {opened}")  # fmt: skip
    print(f"stranger's gets with guessed salts that found an item: "
          f"{sorted(repr(s) for s in seen.items if s != salt) or 'none'}")  # fmt: skip


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=6, help="DHT sessions besides the stranger")
    parser.add_argument("--hardened", action="store_true")
    args = parser.parse_args()
    run(args.nodes, args.hardened)


if __name__ == "__main__":
    main()
