"""SSL torrents against plain ones on loopback: time and CPU for one file, TCP and uTP.

    .venv/bin/python -m benchmarks.privacy_transfer [--size-mib 256] [--utp-mib 64] [--runs 3]

Two sessions in this process with meshmedia's settings (engine_settings.build_settings,
transport "tcp" or "utp"); the seed adds the torrent in seed_mode, the downloader
is told the seed's plain or SSL port. Prints the median seconds, MB/s and the
process CPU seconds (both sessions together) per run. Note the load average:
other work on the machine moves these numbers; compare ratios of one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

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


def one_run(data: Path, tmp: Path, ssl: bool, utp: bool, kind: str) -> tuple[float, float]:
    """(seconds, CPU seconds) for one download of `data`."""
    ca = make_ca(kind=kind)
    torrent = build(data, ca.cert_pem if ssl else None)
    seed = Peer("seed", cert=issue(ca, "a", kind), utp=utp)
    dl = Peer("dl", cert=issue(ca, "b", kind), utp=utp)
    target = tmp / "dl"
    try:
        ih = seed.add(torrent, data.parent, seed=True)
        dl.add(torrent, target)
        if ssl:
            wait(lambda: seed.need_cert > 0 and dl.need_cert > 0, [seed, dl], 10, "certs")
        cpu0, t0 = time.process_time(), time.monotonic()
        dl.connect(ih, seed.ssl_port if ssl else seed.port)
        wait(seeding(dl, ih), [seed, dl], 600, "download")
        return time.monotonic() - t0, time.process_time() - cpu0
    finally:
        seed.close()
        dl.close()
        shutil.rmtree(target, ignore_errors=True)


def main() -> None:
    """Run every mode `--runs` times and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--utp-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--key", choices=("ed25519", "p256"), default="ed25519")
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="privacy-transfer-", dir=args.dir))
    files = {
        "tcp": random_file(tmp / "seed" / "tcp.bin", args.size_mib * MiB),
        "utp": random_file(tmp / "seed" / "utp.bin", args.utp_mib * MiB),
    }
    print(f"load before: {load_average()}")
    rows: list[list[object]] = [["mode", "MiB", "median s", "MB/s", "CPU s (median)", "runs (s)"]]
    try:
        for transport in ("tcp", "utp"):
            for ssl in (False, True):
                times, cpus = [], []
                for _ in range(args.runs):
                    seconds, cpu = one_run(files[transport], tmp, ssl, transport == "utp", args.key)
                    times.append(seconds)
                    cpus.append(cpu)
                size = files[transport].stat().st_size
                med = statistics.median(times)
                rows.append([
                    f"{'SSL' if ssl else 'plain'} {transport.upper()}",
                    size // MiB,
                    f"{med:.2f}",
                    f"{size / med / 1e6:.0f}",
                    f"{statistics.median(cpus):.2f}",
                    " ".join(f"{t:.2f}" for t in times),
                ])  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_rows(rows)
    print(f"load after: {load_average()}; key type {args.key}")


if __name__ == "__main__":
    main()
