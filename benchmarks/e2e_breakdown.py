"""Where a drop's time goes: the e2e benchmark's daemons at DEBUG, their log lines as a timeline.

Runs the same `meshmedia serve` + `meshmedia sync` pair as benchmarks/e2e.py (a
rename into the share, the clock stops when the file is complete at its final
path), with `--log-level DEBUG`, then reads both logs and prints, per run, the
seconds from the drop to each step and between steps, and the medians:

    .venv/bin/python benchmarks/e2e_breakdown.py --size 1G --runs 3
    .venv/bin/python benchmarks/e2e_breakdown.py --size 10M --runs 5 --keep /tmp/logs

Steps (the log line that marks each one's end):
  settle      watcher: publish <path>         (watcher settle time after the rename)
  hash        added seed <ih>                  (one read: SHA-1 pieces, SHA-256, XXH3; .torrent)
  list        manifest <group>: version N     (manifest version written)
  answer      "GET /manifest/..." 200          (the long-poll answered, logged when sent)
  plan        downloading <path>               (client parsed the manifest, added the magnet)
  metadata    event ... kind='metadata'        (connected to the curator, info dict fetched)
  download    download <ih> finished           (every piece, cache flush)
  verify+move relocated <ih>                   (loop wake, SHA-256 pass, rename_file + move_storage)
  place       placed <path>                    (resume data request, log)
  seen        the file at its final path       (the benchmark's stat loop)
Results: native_notes/benchmarks.md, "Where a 1 GiB drop's time goes".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import free_port, random_file, wait_path
from benchmarks.e2e import Meshmedia, timeout_for
from benchmarks.e2e_patches import BOOT
from meshmedia.config import parse_size

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")
STEPS = ("settle", "hash", "list", "answer", "plan", "metadata", "download", "verify+move",
         "place", "seen")  # fmt: skip


def read_log(path: Path) -> list[tuple[float, str]]:
    """(epoch seconds, message) of every line of a daemon's log."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, match.group(4)))
    return out


def first_after(lines: list[tuple[float, str]], since: float, pattern: str) -> float | None:
    """The time of the first line at or after `since` (ms resolution) matching `pattern`."""
    regex = re.compile(pattern)
    for stamp, message in lines:
        if stamp >= since - 0.001 and regex.search(message):
            return stamp
    return None


def timeline(
    serve: list[tuple[float, str]],
    sync: list[tuple[float, str]],
    name: str,
    dropped: float,
    seen: float,
) -> dict[str, float | None]:
    """Seconds from the drop to the end of each step of one run."""
    at: dict[str, float | None] = {}
    at["settle"] = first_after(serve, dropped, rf"watcher: publish .*{re.escape(name)} -> ")
    published = first_after(serve, dropped, rf"published .*{re.escape(name)} as .*\((\w+)\)")
    ih = ""
    for stamp, message in serve:
        if stamp == published and (m := re.search(r"\((\w{40})\)$", message)):
            ih = m.group(1)
    start = at["settle"] or dropped
    at["hash"] = first_after(serve, start, rf"added seed {ih}") if ih else None
    at["list"] = first_after(serve, at["hash"] or start, r"manifest \S+: version \d+")
    at["answer"] = first_after(serve, at["list"] or start, r'"GET /manifest/[^"]*" 200')
    at["plan"] = first_after(sync, dropped, rf"downloading {re.escape(name)} ")
    metadata = rf"event EngineEvent\(kind='metadata', info_hash='{ih}'"
    at["metadata"] = first_after(sync, dropped, metadata) if ih else None
    at["download"] = first_after(sync, dropped, rf"download {ih} finished") if ih else None
    at["verify+move"] = first_after(sync, dropped, rf"relocated {ih} ") if ih else None
    at["place"] = first_after(sync, dropped, rf"placed .*{re.escape(name)} ")
    at["seen"] = seen
    return {step: (None if t is None else t - dropped) for step, t in at.items()}


def main() -> int:
    """Drop `--runs` fresh files of `--size`, then print the timeline of each and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (temp dir)")
    parser.add_argument("--keep", type=Path, help="copy serve.log and sync.log here")
    parser.add_argument("--patch", default="", help="e2e_patches.py changes, comma-separated")
    parser.add_argument("--settle-time", help="the curator's settle time (default: its own)")
    parser.add_argument("--sync", action="store_true",
                        help="sync() before writing each drop, so that earlier runs' writeback "
                        "does not overlap later runs")  # fmt: skip
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mm-e2e-breakdown-", dir=args.dir))
    system = Meshmedia("DEBUG", [sys.executable, "-c", BOOT])
    system.http = free_port()
    os.environ.update(
        MM_REPO=str(Path(__file__).resolve().parent.parent),
        MM_PATCHES=args.patch,
        MM_TORRENT_BASE=f"http://127.0.0.1:{system.http}",
    )
    if args.settle_time is not None:
        os.environ["MESHMEDIA_SETTLE_TIME"] = args.settle_time
    drops: list[tuple[str, float, float]] = []
    load = os.getloadavg()[0]
    try:
        system.start(base / "sys")
        warm = random_file(base / "staging" / "warmup.bin", 64 << 10)
        system.deliver(warm, 64 << 10)
        for run in range(args.runs):
            if args.sync:
                os.sync()  # every run starts with the disk caught up
            staged = random_file(base / "staging" / f"drop-{run}.bin", args.size)
            time.sleep(0.5)
            target = system.share / staged.name
            os.rename(staged, target)
            dropped = time.time()
            final = system.media / staged.name
            wait_path(final, args.size, timeout_for(args.size), system.procs.alive)
            drops.append((staged.name, dropped, time.time()))
            started = time.monotonic()
            digest = hashlib.sha256()
            with final.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
            print(f"run {run + 1}: SHA-256 of the placed file here (page cache) "
                  f"{time.monotonic() - started:.3f} s", flush=True)  # fmt: skip
    finally:
        system.close()
    serve, sync = read_log(base / "sys" / "serve.log"), read_log(base / "sys" / "sync.log")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for name in ("serve.log", "sync.log"):
            shutil.copy(base / "sys" / name, args.keep / name)
    shutil.rmtree(base, ignore_errors=True)
    report([timeline(serve, sync, *drop) for drop in drops], args.size, load)
    return 0


def report(runs: list[dict[str, float | None]], size: int, load: float) -> None:
    """Per run and median: seconds from the drop to each step, and each step's own length."""
    patches = os.environ.get("MM_PATCHES") or "none"
    settle = os.environ.get("MESHMEDIA_SETTLE_TIME", "default")
    print(f"{size:,} bytes, {len(runs)} runs, patches {patches}, settle {settle}, "
          f"load average before {load:.2f}, after {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'step':12} " + " ".join(f"{'run ' + str(i + 1):>15}" for i in range(len(runs)))
          + f" {'median':>15}")  # fmt: skip
    previous: list[float] = [0.0] * len(runs)
    for step in STEPS:
        cells, lengths = [], []
        for index, run in enumerate(runs):
            at = run[step]
            if at is None:
                cells.append(f"{'-':>15}")
                continue
            length = at - previous[index]
            previous[index] = at
            lengths.append(length)
            cells.append(f"{at:7.3f} ({length:5.3f})")
        median = f"{statistics.median(lengths):15.3f}" if lengths else f"{'-':>15}"
        print(f"{step:12} " + " ".join(cells) + f" {median}")
    print("cells: seconds from the drop (this step's own seconds); median of the step's seconds")


if __name__ == "__main__":
    sys.exit(main())
