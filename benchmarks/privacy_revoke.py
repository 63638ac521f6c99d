"""Revoking a member of an SSL swarm: certificate expiry, renewal in place, CA rotation.

    .venv/bin/python -m benchmarks.privacy_revoke [--size-mib 32]

libtorrent checks a peer's certificate chain against the torrent's CA (OpenSSL's
default verification: signature, validity dates) and its SAN, and offers no CRL
or callback to the application. So a member can be shut out of a swarm only by
(a) letting its certificate expire (short-lived certificates, renewed by members
still in good standing) or (b) a new group CA (new info hashes for every item).
Measured:

1. a member whose certificate expired gets nothing; the same torrent handle given
   a fresh certificate (set_ssl_certificate_buffer again, no restart) completes;
2. rotation: the same file under a new CA is a new torrent; a member that has the
   file adds it with every piece marked present (the `pieces` field is the same,
   so no re-hash: blocks hashed counted) and serves it to a newcomer at once,
   while a member with a certificate of the old CA gets nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import libtorrent as lt

from benchmarks.common import random_file
from benchmarks.privacy_lab import (
    MiB,
    Peer,
    build,
    issue,
    load_average,
    make_ca,
    seeding,
    wait,
)


def renew_in_place(data: Path, tmp: Path, reconnect: int) -> None:
    """An expired certificate, then a fresh one on the running torrent."""
    ca = make_ca()
    torrent = build(data, ca.cert_pem)
    two_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    seed = Peer("seed", cert=issue(ca, "s"))
    member = Peer(
        "member",
        cert=issue(ca, "m", not_before=two_days_ago, days=1),
        extra={"min_reconnect_time": reconnect},
    )
    try:
        ih = seed.add(torrent, data.parent, seed=True)
        member.add(torrent, tmp / "renew")
        wait(lambda: seed.need_cert and member.need_cert, [seed, member], 10, "certs")
        member.connect(ih, seed.ssl_port)
        wait(seeding(member, ih), [seed, member], 8, raise_on_timeout=False)
        expired_got = member.status(ih).total_payload_download
        fresh = issue(ca, "m")
        t0 = time.monotonic()
        member.handles[ih].set_ssl_certificate_buffer(
            fresh.cert_pem.decode(), fresh.key_pem.decode(), member.dh
        )
        member.connect(ih, seed.ssl_port)
        done = wait(seeding(member, ih), [seed, member], 60, raise_on_timeout=False)
        print(
            f"min_reconnect_time {reconnect} s: expired certificate: {expired_got} B in 8 s;"
            " after set_ssl_certificate_buffer"
            f" with a fresh one (same handle, no restart): complete={done} in"
            f" {time.monotonic() - t0:.2f} s"
        )
    finally:
        seed.close()
        member.close()


def rotate(data: Path, tmp: Path) -> None:
    """The same file under a new CA; the member re-adds it without hashing."""
    old_ca, new_ca = make_ca(), make_ca()
    old, new = build(data, old_ca.cert_pem), build(data, new_ca.cert_pem)
    old_info = lt.torrent_info(old.data)
    new_info = lt.torrent_info(new.data)
    same_pieces = all(
        old_info.hash_for_piece(i) == new_info.hash_for_piece(i)
        for i in range(old_info.num_pieces())
    )
    member = Peer("member", cert=issue(new_ca, "m"))
    newcomer = Peer("new", cert=issue(new_ca, "n"))
    revoked = Peer("revoked", cert=issue(old_ca, "r"))
    try:
        hashed0 = member.counters()["disk.num_blocks_hashed"]
        atp = lt.load_torrent_buffer(new.data)
        atp.save_path = str(data.parent)
        atp.have_pieces = [True] * atp.ti.num_pieces()
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        handle = member.session.add_torrent(atp)
        ih = str(handle.info_hashes().v1)
        member.handles[ih] = handle
        wait(seeding(member, ih), [member], 10, "seeding the rotated torrent")
        for peer, save in ((newcomer, "new"), (revoked, "revoked")):
            peer.add(new, tmp / save)
        wait(lambda: member.need_cert and newcomer.need_cert, [member, newcomer], 10, "certs")
        revoked.connect(ih, member.ssl_port)
        t0 = time.monotonic()
        newcomer.connect(ih, member.ssl_port)
        wait(seeding(newcomer, ih), [member, newcomer, revoked], 60, "newcomer download")
        took = time.monotonic() - t0
        wait(lambda: False, [member, revoked], 3, raise_on_timeout=False)
        hashed = member.counters()["disk.num_blocks_hashed"] - hashed0
        print(
            f"rotation: old and new torrent have the same piece hashes: {same_pieces};"
            f" info hash {old.info_hash[:12]}... -> {ih[:12]}...; member re-added with"
            f" have_pieces: {hashed} blocks hashed; newcomer (new CA) got the file in"
            f" {took:.2f} s; member with an old-CA certificate got"
            f" {revoked.status(ih).total_payload_download} B"
        )
    finally:
        for peer in (member, newcomer, revoked):
            peer.close()


def main() -> None:
    """Both measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="privacy-revoke-", dir=args.dir))
    try:
        data = random_file(tmp / "seed" / "film.mkv", args.size_mib * MiB)
        print(f"{args.size_mib} MiB; load {load_average()}")
        for reconnect in (60, 5):  # 60 is libtorrent's default
            renew_in_place(data, tmp, reconnect)
        rotate(data, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
