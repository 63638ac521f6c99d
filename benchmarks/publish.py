"""Publish speed: cold publish against the anchors, and publish latency after a copy ends.

    .venv/bin/python benchmarks/publish.py              # 1 GiB
    .venv/bin/python benchmarks/publish.py --size 256M  # a quick run

Every run reads the file from the page cache (it is written, then read once,
before timing; 2 cores). Prints seconds and ratios; the targets are in
native_notes/hashing.md. Anchors that are not installed are skipped with a note
(apt-get install mktorrent transmission-cli; pip install torf).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshmedia import hashing
from meshmedia.config import Config, Share, parse_size
from meshmedia.curator import Publisher
from meshmedia.engine import Engine
from meshmedia.manifest import ManifestStore
from meshmedia.process import tune_malloc
from meshmedia.store import Store

MiB = 1 << 20


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def make_source(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            block = min(left, 16 * MiB)
            out.write(os.urandom(block))
            left -= block


def warm(path: Path) -> None:
    with path.open("rb", buffering=0) as handle:
        while handle.read(16 * MiB):
            pass


def serial_pass(path: Path, piece: int) -> None:
    """The reference: one thread, one read pass, SHA-1 per piece and SHA-256 together."""
    whole = hashlib.sha256()
    buf = bytearray(piece)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(buf):
            hashlib.sha1(view[:count]).digest()
            whole.update(view[:count])


def anchors(path: Path, piece: int, work: Path) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    log2 = piece.bit_length() - 1
    commands = {
        "mktorrent -t 2": ["mktorrent", "-t", "2", "-l", str(log2), "-o", str(work / "m.torrent")],
        "transmission-create": [
            "transmission-create", "-s", str(piece // 1024), "-o", str(work / "t.torrent"),
        ],
    }  # fmt: skip
    for name, argv in commands.items():
        if shutil.which(argv[0]) is None:
            out[name] = f"skipped: {argv[0]} not installed"
            continue
        for old in work.glob("*.torrent"):
            old.unlink()
        out[name] = timed(
            lambda argv=argv: subprocess.run(
                [*argv, str(path)], check=True, capture_output=True, timeout=600
            )
        )
    try:
        import torf  # noqa: PLC0415

        torrent = torf.Torrent(path=str(path), piece_size=piece)
        out["torf (threads=2)"] = timed(lambda: torrent.generate(threads=2))
    except ImportError:
        out["torf (threads=2)"] = "skipped: pip install torf"
    import libtorrent as lt  # noqa: PLC0415

    def set_piece_hashes() -> None:
        storage = lt.file_storage()
        lt.add_files(storage, str(path))
        ct = lt.create_torrent(storage, piece, lt.create_torrent.v1_only)
        lt.set_piece_hashes(ct, str(path.parent))

    out["libtorrent set_piece_hashes"] = timed(set_piece_hashes)
    return out


class Curator:
    """Store + Engine + ManifestStore + Publisher on loopback, in `base`."""

    def __init__(self, base: Path, share: Path) -> None:
        config = Config(
            shares=(Share("default", share),),
            state_dir=base / "state",
            download_dir=base / "media",
            listen_host="127.0.0.1",
            listen_port=0,
            dht=False,
            lsd=False,
            upnp=False,
            natpmp=False,
        )
        tune_malloc()  # as `meshmedia serve` does at start-up
        self.store = Store.in_state_dir(config.state_dir)
        self.engine = Engine(config, self.store)
        self.manifests = ManifestStore(config.state_dir / "manifests")
        self.manifests.preload(["default"])
        self.publisher = Publisher(config, self.store, self.engine, self.manifests)

    def close(self) -> None:
        self.publisher.close()
        self.manifests.close()
        self.engine.close()
        self.store.close()


FSYNC = [0.0]


def _timed_fsync(fd: int, _fsync: Callable[[int], None] = os.fsync) -> None:
    """os.fsync, timed when it runs on the publishing (main) thread."""
    start = time.perf_counter()
    _fsync(fd)
    if threading.current_thread() is threading.main_thread():
        FSYNC[0] += time.perf_counter() - start


def copy_following(
    src: Path, dst: Path, publisher: Publisher, chunk: int, rate: float | None
) -> tuple[float, int, float]:
    """Copy in `chunk`s at `rate` bytes/s (None: as fast as possible), calling follow()
    after each write as the watcher does; then publish. Returns (latency after the
    copy ended, bytes the follower had not hashed yet when it ended, seconds spent
    finishing the hashes inside publish)."""
    start = time.perf_counter()
    done = 0
    with src.open("rb", buffering=0) as reader, dst.open("wb", buffering=0) as writer:
        while data := reader.read(chunk):
            writer.write(data)
            done += len(data)
            publisher.follow(dst)
            if rate:
                ahead = start + done / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
    ended = time.perf_counter()
    hashed = sum(int(s.get("hashed", 0)) for s in publisher.seeds() if s["state"] == "hashing")
    FSYNC[0] = 0.0
    finishing = [0.0]
    finish = hashing.IncrementalHasher.finish

    def timed_finish(self: hashing.IncrementalHasher) -> hashing.FileHashes:
        begun = time.perf_counter()
        try:
            return finish(self)
        finally:
            finishing[0] += time.perf_counter() - begun

    os.fsync = _timed_fsync  # any fsync on the publish path waits for the copy's writeback
    hashing.IncrementalHasher.finish = timed_finish  # type: ignore[method-assign]
    try:
        publisher.publish(dst)
    finally:
        os.fsync = _timed_fsync.__defaults__[0]
        hashing.IncrementalHasher.finish = finish  # type: ignore[method-assign]
    return time.perf_counter() - ended, done - hashed, finishing[0]


def cold_runs(src: Path, piece: int, base: Path, share: Path) -> float:
    """Print the cold publish beside the reference pass and the anchors; return hash_file time."""
    serial = timed(lambda: serial_pass(src, piece))
    ours = timed(lambda: hashing.hash_file(src))
    curator = Curator(base / "cold", share)
    try:
        cold = timed(lambda: curator.publisher.publish(src))
    finally:
        curator.close()
    print(f"serial SHA-1 pieces + SHA-256 pass   {serial:7.3f} s  (reference)")
    print(f"hash_file (one pass, 2 threads)      {ours:7.3f} s  {ours / serial:5.2f}x ref")
    print(f"cold publish (hash+torrent+seed+item){cold:7.3f} s  {cold / serial:5.2f}x ref"
          "  target <= 1.20x")  # fmt: skip
    for name, value in anchors(src, piece, base).items():
        if isinstance(value, str):
            print(f"{name:37s}{value}")
        else:
            print(f"{name:37s}{value:7.3f} s  anchor / cold publish = {value / cold:5.2f}")
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="file size (default 1G)")
    parser.add_argument("--rate", default="400M", help="throttled copy rate in bytes/s")
    parser.add_argument("--chunk", default="64M", help="copy chunk size")
    parser.add_argument("--lookahead", type=float, default=hashing.LOOKAHEAD)
    parser.add_argument("--follow-only", action="store_true", help="skip the cold runs")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default /tmp)")
    args = parser.parse_args()
    size, rate, chunk = parse_size(args.size), parse_size(args.rate), parse_size(args.chunk)
    hashing.LOOKAHEAD = args.lookahead
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mm-bench-") as tmp:
        base = Path(tmp)
        share = base / "share"
        share.mkdir()
        src = share / "source.bin"
        make_source(src, size)
        warm(src)
        piece = hashing.piece_size_for(size)
        print(f"file {size / MiB:.0f} MiB, piece {piece // 1024} KiB, cores {os.cpu_count()},"
              f" load {os.getloadavg()[0]:.2f}, page cache warm")  # fmt: skip
        ours = cold_runs(src, piece, base, share) if not args.follow_only else 0.0
        curator = Curator(base / "follow", share)
        try:
            latency, _, tail = copy_following(
                src, share / "copy1.bin", curator.publisher, chunk, rate
            )
            print(f"publish after a {rate / 1e6:.0f} MB/s copy ({chunk // MiB} MiB chunks)"
                  f" {latency:7.3f} s  target < 0.3 s  (finishing the hashes {tail:.3f} s,"
                  f" fsync on the publish path {FSYNC[0]:.3f} s)")  # fmt: skip
            latency, left, tail = copy_following(
                src, share / "copy2.bin", curator.publisher, chunk, None
            )
            work = left / (size / (ours or timed(lambda: hashing.hash_file(src))))
            print(f"publish after an unthrottled copy    {latency:7.3f} s  hashing left at the end:"
                  f" {left / MiB:.0f} MiB = {work:.3f} s of one-pass work; finishing the hashes"
                  f" took {tail:.3f} s, all else {latency - tail:.3f} s"
                  f" (fsync on the publish path {FSYNC[0]:.3f} s)")  # fmt: skip
        finally:
            curator.close()


if __name__ == "__main__":
    main()
