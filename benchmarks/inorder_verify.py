"""Can the client's whole-file SHA-256 ride along with the download? (issue 15)

A seeder process and a downloader (this process), raw libtorrent 2.1 sessions
configured as meshmedia's engine (session_params, peer class filter, malloc
pad), on 127.0.0.1, one file (default 1 GiB) with meshmedia's piece size. The
torrent is given (no metadata exchange). Per mode, the seconds from
add_torrent until the download is finished and flushed (as the engine reports
it) and until the whole-file digest is known:

  after        rarest-first (libtorrent's default picker), SHA-256 read pass after the flush
               (what the client does today)
  after_xxh3   rarest-first, an XXH3-128 pass after the flush instead
  seq_after    sequential_download, SHA-256 pass after the flush
  seq_pieces   sequential_download; each finished piece is read back with read_piece()
               (libtorrent's own view, write buffer included) and fed to SHA-256 in order
  seq_pread    sequential_download; a thread hashes the file's completed prefix with
               os.pread while the download goes on; the tail after the flush. Checked
               against the real digest: a piece read before its write landed shows up
               as a mismatch (then counted, and the file re-hashed)

    .venv/bin/python benchmarks/inorder_verify.py --runs 3
    .venv/bin/python benchmarks/inorder_verify.py --size 256M --modes after,seq_pieces
Results: native_notes/benchmarks.md, "Where a 1 GiB drop's time goes".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt
import xxhash

from meshmedia.config import Config, parse_size
from meshmedia.engine.settings import peer_class_filter, session_params
from meshmedia.hashing import piece_size_for
from meshmedia.process import tune_malloc

MODES = ("after", "after_xxh3", "seq_after", "seq_pieces", "seq_pread")
MASK = (
    lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification
    | lt.alert.category_t.storage_notification
    | lt.alert.category_t.piece_progress_notification
)


def new_session() -> Any:
    """A session on 127.0.0.1 as meshmedia's engine makes it, plus piece alerts."""
    tune_malloc()
    config = Config(listen_host="127.0.0.1", listen_port=0, dht=False, lsd=False, upnp=False,
                    natpmp=False)  # fmt: skip
    ses = lt.session(session_params(config, {"alert_mask": MASK}))
    ses.set_peer_class_filter(peer_class_filter())
    return ses


def make_item(folder: Path, size: int) -> tuple[Path, Path, str]:
    """A random file, its .torrent and its SHA-256."""
    data = folder / "item.bin"
    digest = hashlib.sha256()
    with data.open("wb") as out:
        for start in range(0, size, 16 << 20):
            block = os.urandom(min(16 << 20, size - start))
            digest.update(block)
            out.write(block)
    ct = lt.create_torrent([lt.create_file_entry(data.name, size)], piece_size_for(size),
                           lt.create_torrent.v1_only)  # fmt: skip
    lt.set_piece_hashes(ct, str(folder))
    torrent = folder / "item.torrent"
    torrent.write_bytes(lt.bencode(ct.generate()))
    return data, torrent, digest.hexdigest()


def seeder(torrent: Path, folder: Path) -> None:
    """Seed until stdin closes; print the port."""
    ses = new_session()
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(folder)
    atp.have_pieces = [True] * atp.ti.num_pieces()
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    ses.add_torrent(atp)
    print(ses.listen_port(), flush=True)
    sys.stdin.read()


class InOrder:
    """SHA-256 of pieces fed in index order from any arrival order, on its own thread."""

    def __init__(self, num_pieces: int) -> None:
        self.sha = hashlib.sha256()
        self.num_pieces = num_pieces
        self.next = 0
        self.waiting: dict[int, bytes] = {}
        self.received = 0
        self.cond = threading.Condition()
        self.done_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, index: int, data: bytes) -> None:
        with self.cond:
            self.received += 1
            self.waiting[index] = data
            self.cond.notify()

    def _run(self) -> None:
        while self.next < self.num_pieces:
            with self.cond:
                while self.next not in self.waiting:
                    self.cond.wait()
                data = self.waiting.pop(self.next)
            self.sha.update(data)
            self.next += 1
        self.done_at = time.monotonic()


class PrefixReader:
    """Hashes the file's completed prefix with os.pread while the download runs."""

    def __init__(self, path: Path, piece: int, size: int) -> None:
        self.path, self.piece, self.size = path, piece, size
        self.sha = hashlib.sha256()
        self.have: set[int] = set()
        self.flushed = False
        self.next = 0
        self.cond = threading.Condition()
        self.done_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def finished_piece(self, index: int) -> None:
        with self.cond:
            self.have.add(index)
            self.cond.notify()

    def all_flushed(self) -> None:
        with self.cond:
            self.flushed = True
            self.cond.notify()

    def _run(self) -> None:
        pieces = -(-self.size // self.piece)
        fd = -1
        while self.next < pieces:
            with self.cond:
                while self.next not in self.have and not self.flushed:
                    self.cond.wait()
            if fd < 0:
                fd = os.open(self.path, os.O_RDONLY)
            self.sha.update(os.pread(fd, self.piece, self.next * self.piece))
            self.next += 1
        os.close(fd)
        self.done_at = time.monotonic()


def download(mode: str, torrent: Path, folder: Path, port: int) -> dict[str, Any]:
    """One download in `mode`; seconds to finished+flushed and to the digest."""
    ses = new_session()
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(folder)
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if mode.startswith("seq"):
        atp.flags |= lt.torrent_flags.sequential_download
    ti = atp.ti
    path = folder / ti.files().file_path(0)  # one file
    inorder = InOrder(ti.num_pieces()) if mode == "seq_pieces" else None
    prefix = PrefixReader(path, ti.piece_length(), ti.total_size()) if mode == "seq_pread" else None
    started = time.monotonic()
    handle = ses.add_torrent(atp)
    handle.connect_peer(("127.0.0.1", port))
    flushed = 0.0
    # read_piece answers may still arrive after the flush: keep popping until all did
    while not flushed or (inorder is not None and inorder.received < ti.num_pieces()):
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.piece_finished_alert):
                if inorder is not None:
                    handle.read_piece(alert.piece_index)
                if prefix is not None:
                    prefix.finished_piece(int(alert.piece_index))
            elif isinstance(alert, lt.read_piece_alert) and inorder is not None:
                inorder.add(int(alert.piece), bytes(alert.buffer))
            elif isinstance(alert, lt.torrent_finished_alert):
                handle.flush_cache()
            elif isinstance(alert, lt.cache_flushed_alert):
                flushed = time.monotonic()
    if prefix is not None:
        prefix.all_flushed()
    digest = _digest(mode, path, inorder, prefix)
    done = time.monotonic()
    del ses
    return {"mode": mode, "finished_s": flushed - started, "digest_s": done - started, **digest}


def _digest(mode: str, path: Path, inorder: InOrder | None, prefix: PrefixReader | None) -> dict:
    if inorder is not None:
        inorder.thread.join()
        return {"sha256": inorder.sha.hexdigest()}
    if prefix is not None:
        prefix.thread.join()
        return {"sha256": prefix.sha.hexdigest()}
    hasher: Any = xxhash.xxh3_128() if mode == "after_xxh3" else hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(8 << 20):
            hasher.update(block)
    return {"sha256" if mode != "after_xxh3" else "xxh3": hasher.hexdigest()}


def main() -> int:
    """Run each mode `--runs` times, interleaved; print every run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    if args.seed:
        seeder(Path(args.seed[0]), Path(args.seed[1]))
        return 0
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="mm-inorder-", dir=args.dir))
    try:
        source = work / "src"
        source.mkdir()
        _data, torrent, expected = make_item(source, args.size)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--seed", str(torrent), str(source)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        port = int(proc.stdout.readline())
        results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        try:
            for run in range(args.runs):
                for mode in modes:
                    folder = work / "dst"
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir()
                    load = os.getloadavg()[0]
                    result = download(mode, torrent, folder, port)
                    ok = result.get("sha256", expected) == expected
                    result.update(run=run + 1, load=round(load, 2), digest_ok=ok)
                    results[mode].append(result)
                    print(json.dumps(result), flush=True)
        finally:
            proc.stdin.close()
            proc.wait(30)
        for mode, rows in results.items():
            fin = statistics.median(r["finished_s"] for r in rows)
            dig = statistics.median(r["digest_s"] for r in rows)
            bad = sum(1 for r in rows if not r["digest_ok"])
            print(f"{mode:11} finished {fin:.3f} s, digest known {dig:.3f} s (median of "
                  f"{len(rows)}; digest wrong in {bad})")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
