"""Do clients still swarm? One seed and three downloaders, SSL or private-flag torrents.

    .venv/bin/python -m benchmarks.privacy_swarm [--size-mib 32] [--seed-kib-s 4096]

The seed's upload is capped per torrent (so the downloaders must trade pieces to
finish early); DHT and LSD are off as for a private group. Each downloader is told
either only the seed's address (peers among downloaders must come from PEX) or every
member's address (a curator-handed peer list). Prints, per mode: seconds until all
three finish, each downloader's payload upload (swarming shows as upload > 0), and
how many downloader-to-downloader connections came from PEX.
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
    build,
    issue,
    load_average,
    make_ca,
    print_rows,
    seeding,
    wait,
)

PEX_SOURCE = 4  # peer_info.source bit for peers learnt by ut_pex


def one_mode(data: Path, tmp: Path, kind: str, everyone: bool, cap: int, utp: bool) -> list[object]:
    """Run one swarm; the table row."""
    ca = make_ca()
    ssl = kind == "ssl"
    torrent = build(data, ca.cert_pem if ssl else None, private=kind == "private")
    seed = Peer("seed", cert=issue(ca, "s"), utp=utp)
    peers = [Peer(f"c{i}", cert=issue(ca, f"c{i}"), utp=utp) for i in range(3)]
    everybody = [seed, *peers]
    try:
        ih = seed.add(torrent, data.parent, seed=True)
        seed.handles[ih].set_upload_limit(cap)
        for i, peer in enumerate(peers):
            peer.add(torrent, tmp / f"c{i}")
        if ssl:
            wait(lambda: all(p.need_cert for p in everybody), everybody, 10, "certs")

        def port(p: Peer) -> int:
            return p.ssl_port if ssl else p.port

        t0 = time.monotonic()
        for peer in peers:
            peer.connect(ih, port(seed))
            if everyone:
                for other in peers:
                    if other is not peer:
                        peer.connect(ih, port(other))
        links: dict[tuple[str, int, int], int] = {}  # (peer, remote port) -> sources seen

        def finished() -> bool:
            for p in peers:  # connections end when both sides are seeds: sample while running
                for info in p.handles[ih].get_peer_info():
                    key = (p.name, int(info.ip[1]), int(info.local_endpoint()[1]))
                    links[key] = links.get(key, 0) | int(info.source)
            return all(seeding(p, ih)() for p in peers)

        done = wait(finished, everybody, 180, raise_on_timeout=False)
        elapsed = time.monotonic() - t0
        uploads = [p.status(ih).total_payload_upload // MiB for p in peers]
        from_pex = sum(1 for source in links.values() if source & PEX_SOURCE)
        return [
            f"{kind}, told {'everyone' if everyone else 'the seed only'}",
            f"{elapsed:.1f}" if done else f"not done in {elapsed:.0f}",
            " / ".join(str(u) for u in uploads),
            from_pex,
        ]
    finally:
        for peer in everybody:
            peer.close()
        for i in range(3):
            shutil.rmtree(tmp / f"c{i}", ignore_errors=True)


def main() -> None:
    """Run the four modes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--seed-kib-s", type=int, default=4096)
    parser.add_argument("--utp", action="store_true", help="uTP only instead of TCP only")
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="privacy-swarm-", dir=args.dir))
    data = random_file(tmp / "seed" / "film.mkv", args.size_mib * MiB)
    cap = args.seed_kib_s * 1024
    print(f"{args.size_mib} MiB, seed capped at {args.seed_kib_s} KiB/s, load {load_average()}")
    alone = 3 * args.size_mib * MiB / cap
    rows: list[list[object]] = [
        [
            "mode",
            "s until all 3 done",
            "MiB uploaded by c0 / c1 / c2",
            "connections to peers learnt by PEX",
        ]
    ]
    try:
        for kind in ("ssl", "private"):
            for everyone in (False, True):
                rows.append(one_mode(data, tmp, kind, everyone, cap, args.utp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_rows(rows)
    print(f"(the seed alone would need {alone:.0f} s; load {load_average()}; lt {lt.__version__})")


if __name__ == "__main__":
    main()
