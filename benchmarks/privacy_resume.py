"""Restarting an SSL torrent from resume data: no re-hash, certificates set again.

    .venv/bin/python -m benchmarks.privacy_resume [--size-mib 64]

A member downloads an SSL torrent from a seed, saves resume data (with the info
dict, as meshmedia's engine does), and its session is dropped. A new session adds
the torrent from the resume data alone. Measured in the new session: whether
torrent_need_cert_alert comes again, the torrent's first state, the 16 KiB blocks
hashed (session counter disk.num_blocks_hashed) until it is seeding and after it
served the whole file to a newcomer that was told only its SSL port, and the
same restart without setting the certificate again (the newcomer gets nothing).

Two ways to make a torrent SSL are compared: the group CA in the info dict
(create_torrent.set_root_cert: the CA is part of the info hash) and a plain
info dict with add_torrent_params.root_certificate (new in 2.1; kept in resume
data by write_resume_data).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import libtorrent as lt

from benchmarks.common import random_file
from benchmarks.privacy_lab import (
    MiB,
    Peer,
    Pki,
    Torrent,
    build,
    issue,
    load_average,
    make_ca,
    print_rows,
    seeding,
    wait,
)


def download_once(torrent: Torrent, data: Path, save: Path, ca: Pki, via_atp: bool) -> bytes:
    """A member downloads from a seed; returns its resume data."""
    root = ca.cert_pem if via_atp else None
    seed = Peer("seed", cert=issue(ca, "s"))
    member = Peer("member", cert=issue(ca, "m"))
    try:
        ih = seed.add(torrent, data.parent, seed=True, root_certificate=root)
        member.add(torrent, save, root_certificate=root)
        wait(lambda: seed.need_cert and member.need_cert, [seed, member], 10, "certs")
        member.connect(ih, seed.ssl_port)
        wait(seeding(member, ih), [seed, member], 300, "first download")
        return member.save_resume(ih)
    finally:
        seed.close()
        member.close()


def restart(resume: bytes, save: Path, ca: Pki, tmp: Path, set_cert: bool) -> list[object]:
    """A new session from resume data; a newcomer downloads from it alone."""
    member = Peer("member", cert=issue(ca, "m") if set_cert else None)
    newcomer = Peer("new", cert=issue(ca, "n"))
    try:
        hashed0 = member.counters()["disk.num_blocks_hashed"]
        t0 = time.monotonic()
        ih = member.add(None, save, resume=resume)
        first_state = str(member.status(ih).state)
        wait(seeding(member, ih), [member], 60, "seeding after restart")
        to_seed = time.monotonic() - t0
        wait(lambda: member.need_cert > 0, [member], 2, raise_on_timeout=False)
        hashed1 = member.counters()["disk.num_blocks_hashed"]
        params = lt.read_resume_data(resume)
        newcomer.add(None, tmp / "new", magnet_ih=ih, root_certificate=ca.cert_pem)
        wait(lambda: newcomer.need_cert > 0, [newcomer], 10, "newcomer cert")
        newcomer.connect(ih, member.ssl_port)
        served = wait(seeding(newcomer, ih), [member, newcomer], 30, raise_on_timeout=False)
        hashed2 = member.counters()["disk.num_blocks_hashed"]
        got = newcomer.status(ih).total_payload_download
        stolen = stranger_bytes(member, ih, tmp)
        return [
            "yes" if set_cert else "no",
            _where_ca(params),
            member.need_cert,
            first_state,
            f"{to_seed:.2f}",
            hashed1 - hashed0,
            f"{'all' if served else 'not all'}: {got // MiB} MiB",
            hashed2 - hashed1,
            f"{stolen // MiB} MiB",
        ]
    finally:
        member.close()
        newcomer.close()
        shutil.rmtree(tmp / "new", ignore_errors=True)


def _where_ca(params: object) -> str:
    """Where the restored torrent's CA is: atp.root_certificate, the info dict, or lost."""
    if getattr(params, "root_certificate", ""):
        return "root_certificate"
    ti = getattr(params, "ti", None)
    return "in the info dict" if ti is not None and ti.ssl_cert() else "LOST (plain torrent)"


def stranger_bytes(member: Peer, ih: str, tmp: Path) -> int:
    """Payload a certificate-less stranger with the info hash gets from the plain port."""
    stranger = Peer("stranger")
    try:
        stranger.add(None, tmp / "stranger", magnet_ih=ih)
        stranger.connect(ih, member.port)
        got = lambda: stranger.status(ih).total_payload_download > 1 * MiB  # noqa: E731
        wait(got, [member, stranger], 8, raise_on_timeout=False)
        return int(stranger.status(ih).total_payload_download)
    finally:
        stranger.close()
        shutil.rmtree(tmp / "stranger", ignore_errors=True)


def main() -> None:
    """Both ways of making an SSL torrent; restart with and without the certificate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="privacy-resume-", dir=args.dir))
    data = random_file(tmp / "seed" / "film.mkv", args.size_mib * MiB)
    header = [
        "how",
        "cert set again",
        "CA after restore",
        "need_cert alerts",
        "first state",
        "s to seeding",
        "blocks hashed at restart",
        "newcomer got",
        "blocks hashed serving",
        "stranger on plain port got",
    ]
    rows: list[list[object]] = [header]
    try:
        for via_atp in (False, True):
            ca = make_ca()
            torrent = build(data, None if via_atp else ca.cert_pem)
            save = tmp / f"member-{via_atp}"
            resume = download_once(torrent, data, save, ca, via_atp)
            how = "atp.root_certificate" if via_atp else "CA in info dict"
            for set_cert in (True, False):
                rows.append([how, *restart(resume, save, ca, tmp, set_cert)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.size_mib} MiB = {args.size_mib * 64} blocks of 16 KiB; load {load_average()}")
    print_rows(rows)


if __name__ == "__main__":
    main()
