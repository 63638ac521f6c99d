"""How fast can the curator hash a file that arrived complete (a rename into the share)?

One file (default 1 GiB, random, in the page cache: it was just written), hashed
by each contender, interleaved, `--runs` times; prints seconds and GB/s:

  meshmedia      meshmedia.hashing.hash_file: one read pass feeding SHA-1 pieces on one
                 thread and SHA-256 + XXH3-128 on another (what publish does today)
  first_pass     meshmedia.hashing.FirstPass: SHA-1 pieces on two threads, XXH3-128 on the
                 reading one, no SHA-256 (what publish does for a file of 64 MiB or more)
  sha1_1         SHA-1 pieces only, one thread (what a torrent needs)
  sha1_2         SHA-1 pieces only, two threads, each hashing every other chunk of
                 whole pieces (pieces are independent)
  sha256         SHA-256 alone, one thread (the client's verify pass costs the same)
  xxh3           XXH3-128 alone, one thread
  lt             libtorrent's set_piece_hashes (SHA-1 pieces; holds the GIL)
  lt_threads2    set_piece_hashes with hashing_threads 2, when the binding takes settings

    .venv/bin/python benchmarks/curator_hash.py --size 1G --runs 5
Results: native_notes/benchmarks.md, "Where a 1 GiB drop's time goes".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt
import xxhash

from meshmedia.config import parse_size
from meshmedia.hashing import FirstPass, hash_file, piece_size_for

CHUNK = 8 << 20


def _pieces(fd: int, start: int, end: int, piece: int) -> list[bytes]:
    """SHA-1 of the pieces in [start, end) (start on a piece boundary)."""
    out, buffer = [], bytearray(piece)
    view = memoryview(buffer)
    for offset in range(start, end, piece):
        got = os.preadv(fd, [view[: min(piece, end - offset)]], offset)
        out.append(hashlib.sha1(view[:got]).digest())
    return out


def sha1_threads(path: Path, threads: int) -> None:
    """SHA-1 pieces over `threads` workers, each taking every other run of whole pieces."""
    size, piece = path.stat().st_size, piece_size_for(path.stat().st_size)
    span = max(piece, CHUNK // piece * piece)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(threads) as pool:
            runs = [(s, min(size, s + span)) for s in range(0, size, span)]
            list(pool.map(lambda r: _pieces(fd, r[0], r[1], piece), runs))
    finally:
        os.close(fd)


def whole(path: Path, make: Callable[[], object]) -> None:
    """One whole-file digest in 8 MiB reads."""
    hasher = make()
    with path.open("rb") as src:
        while block := src.read(CHUNK):
            hasher.update(block)  # type: ignore[attr-defined]


def lt_hashes(path: Path, settings: dict[str, int] | None) -> None:
    """libtorrent's own SHA-1 pieces (create_torrent + set_piece_hashes)."""
    size = path.stat().st_size
    ct = lt.create_torrent([lt.create_file_entry(path.name, size)], piece_size_for(size),
                           lt.create_torrent.v1_only)  # fmt: skip
    if settings is None:
        lt.set_piece_hashes(ct, str(path.parent))
    else:
        lt.set_piece_hashes(ct, str(path.parent), settings)


CONTENDERS: dict[str, Callable[[Path], None]] = {
    "meshmedia": lambda p: hash_file(p) and None,
    "first_pass": lambda p: FirstPass(p).finish() and None,
    "sha1_1": lambda p: sha1_threads(p, 1),
    "sha1_2": lambda p: sha1_threads(p, 2),
    "sha256": lambda p: whole(p, hashlib.sha256),
    "xxh3": lambda p: whole(p, xxhash.xxh3_128),
    "lt": lambda p: lt_hashes(p, None),
    "lt_threads2": lambda p: lt_hashes(p, {"hashing_threads": 2, "aio_threads": 2}),
}


def main() -> int:
    """Time every contender `--runs` times on one file; print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    names = args.only.split(",")
    times: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="mm-hash-", dir=args.dir) as tmp:
        path = Path(tmp) / "item.bin"
        with path.open("wb") as out:
            for start in range(0, args.size, 16 << 20):
                out.write(os.urandom(min(16 << 20, args.size - start)))
        print(f"{args.size:,} bytes, load average {os.getloadavg()[0]:.2f}", flush=True)
        for _ in range(args.runs):
            for name in list(names):
                started = time.perf_counter()
                try:
                    CONTENDERS[name](path)
                except (TypeError, RuntimeError) as exc:
                    print(f"{name}: not available here ({exc})")
                    names.remove(name)
                    continue
                times[name].append(time.perf_counter() - started)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    for name in names:
        median = statistics.median(times[name])
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"{name:12} {median:.3f} s ({args.size / median / 1e9:.2f} GB/s; runs {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
