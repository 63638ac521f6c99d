"""Where an idle daemon's memory is: a curator and a client with N items, per component.

For each count, a real `meshmedia serve` and `meshmedia sync` (as in benchmarks/scale.py)
publish and place N files of 100 KB; once both are quiet and `--idle` seconds have
passed, each daemon's /proc/<pid>/smaps is summed by kind (the brk heap, anonymous
maps: glibc's per-thread arenas, thread stacks, libtorrent's and Python's code and
other files) with its thread count and RSS. With `--trace`, the daemons run under
tracemalloc (benchmarks/memtrace.py) and the Python side's biggest allocation sites
are printed too (tracemalloc's own overhead then inflates RSS: compare RSS without it).

    python benchmarks/memory.py --counts 1000,5000 --idle 10
    python benchmarks/memory.py --counts 5000 --trace
    python benchmarks/memory.py --counts 5000 --env MALLOC_ARENA_MAX=2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import wait_until
from benchmarks.e2e import answers
from benchmarks.scale import Pair, make_files, metrics, quiet, rss_mib, series, status_answers

KEEP: list[str] = []  # --keep: the folder the snapshots are copied to


def kind(name: str) -> str:
    """The component a mapping's name belongs to."""
    if name == "[heap]":
        return "brk heap (main arena)"
    if name.startswith("[stack"):
        return "main stack"
    if not name:
        return "anonymous (arenas, stacks, mmap)"
    if "libtorrent" in name:
        return "libtorrent .so"
    if "python" in name or name.endswith((".pyc", ".py")):
        return "python binary/.so"
    if name.startswith("/"):
        return "other files (.so, sqlite)"
    return name


def smaps(pid: int) -> dict[str, dict[str, int]]:
    """{kind: {"Rss", "Private_Dirty", "count"} in KiB} over /proc/<pid>/smaps."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            current = kind(head[5] if len(head) > 5 else "")
            out[current]["count"] += 1
        elif head and head[0] in ("Rss:", "Private_Dirty:"):
            out[current][head[0][:-1]] += int(head[1])
    return out


def anon_sizes(pid: int) -> list[tuple[int, int]]:
    """(size KiB, Rss KiB) of each anonymous mapping, biggest Rss first."""
    rows, size = [], 0
    anon = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            anon = len(head) <= 5
        elif anon and head[0] == "Size:":
            size = int(head[1])
        elif anon and head[0] == "Rss:":
            rows.append((size, int(head[1])))
    return sorted(rows, key=lambda r: -r[1])


def threads(pid: int) -> int:
    """The number of threads of a process."""
    return len(os.listdir(f"/proc/{pid}/task"))


def describe(name: str, pid: int, snapshot: Path | None, log: Callable[[str], None]) -> list[str]:
    """Lines describing one daemon's memory."""
    lines = [f"### {name}: RSS {rss_mib(pid):.1f} MiB, {threads(pid)} threads", ""]
    lines += ["| kind | maps | RSS MiB | private dirty MiB |", "|---|---|---|---|"]
    for k, v in sorted(smaps(pid).items(), key=lambda kv: -kv[1]["Rss"]):
        lines.append(f"| {k} | {v['count']} | {v['Rss'] / 1024:.1f} | "
                     f"{v['Private_Dirty'] / 1024:.1f} |")  # fmt: skip
    big = anon_sizes(pid)[:8]
    lines += ["", "biggest anonymous maps (size/RSS MiB): "
              + ", ".join(f"{s / 1024:.0f}/{r / 1024:.1f}" for s, r in big), ""]  # fmt: skip
    if snapshot is not None:
        lines += python_side(pid, snapshot, log)
    return lines


def python_side(pid: int, path: Path, log: Callable[[str], None]) -> list[str]:
    """Ask the traced daemon for a snapshot; its biggest allocation sites."""
    path.unlink(missing_ok=True)
    os.kill(pid, 10)  # SIGUSR1
    wait_until(lambda: path.with_suffix(".txt").exists(), 120, f"snapshot {path}")
    time.sleep(1.0)
    current = path.with_suffix(".txt").read_text().split()[1]
    snap = tracemalloc.Snapshot.load(str(path))
    if KEEP:
        shutil.copy(path, Path(KEEP[0]) / path.name)
    lines = [f"Python traced: {int(current) / 2**20:.1f} MiB", "", "by file:", ""]
    for stat in snap.statistics("filename")[:12]:
        frame = stat.traceback[0]
        lines.append(f"- {stat.size / 2**20:.2f} MiB, {stat.count} blocks: {frame.filename}")
    lines += ["", "by line (biggest 20):", ""]
    for stat in snap.statistics("lineno")[:20]:
        frame = stat.traceback[0]
        lines.append(
            f"- {stat.size / 2**20:.2f} MiB, {stat.count} blocks: {frame.filename}:{frame.lineno}"
        )
    lines += ["", "by caller in meshmedia (biggest 20):", ""]
    lines += meshmedia_callers(snap)
    log(f"{path.name}: traced {int(current) / 2**20:.1f} MiB")
    return [*lines, ""]


def trimmed(name: str, pid: int, snap: Path) -> list[str]:
    """Ask a daemon to malloc_trim(0) (benchmarks/memtrace.py): RSS before and after."""
    done = snap.with_suffix(".trim")
    done.unlink(missing_ok=True)
    os.kill(pid, 12)  # SIGUSR2
    wait_until(done.exists, 60, f"{name} trimmed")
    time.sleep(0.2)
    _, before, after, took = done.read_text().split()
    lines = [f"{name} malloc_trim(0): RSS {int(before) / 1024:.1f} -> {int(after) / 1024:.1f}"
             f" MiB in {float(took) * 1000:.1f} ms; anonymous maps after:"]  # fmt: skip
    lines += [", ".join(f"{s / 1024:.0f}/{r / 1024:.1f}" for s, r in anon_sizes(pid)[:8]), ""]
    return lines


def meshmedia_callers(snap: tracemalloc.Snapshot) -> list[str]:
    """Sizes summed by the innermost meshmedia frame of each allocation's traceback."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stat in snap.statistics("traceback"):
        where = "(no meshmedia frame)"
        for frame in reversed(stat.traceback):  # oldest frame first: start at the newest
            if "/meshmedia/" in frame.filename:
                where = f"{frame.filename.split('/meshmedia/', 1)[1]}:{frame.lineno}"
                break
        sizes[where][0] += stat.size
        sizes[where][1] += stat.count
    top = sorted(sizes.items(), key=lambda kv: -kv[1][0])[:20]
    return [f"- {s / 2**20:.2f} MiB, {c} blocks: {w}" for w, (s, c) in top]


def measure(
    count: int, args: argparse.Namespace, env: dict[str, str], log: Callable[[str], None]
) -> list[str]:
    """Publish and place `count` items; describe both daemons once idle."""
    with tempfile.TemporaryDirectory(prefix="mm-memory-") as tmp:
        base = Path(tmp)
        staged = make_files(base / "staging", count)
        snaps = (base / "curator.snap", base / "client.snap")
        command = None
        if args.trace or args.trim:
            command = tuple([sys.executable, "-m", "benchmarks.memtrace", str(s)] for s in snaps)
        pair = Pair(base, log, command, env)  # type: ignore[arg-type]
        timeout = 120 + count * 0.2
        try:
            pair.start_curator()
            wait_until(lambda: answers(f"http://127.0.0.1:{pair.http}/"), 300, "meshmedia serve")
            pair.start_client()
            wait_until(lambda: status_answers(pair.status, "/status"), 300, "meshmedia sync")
            started = time.monotonic()
            for path in staged:
                target = pair.share / path.relative_to(base / "staging")
                target.parent.mkdir(exist_ok=True)
                path.rename(target)
            wait_until(
                lambda: series(metrics(pair.status), "meshmedia_items", 'state="placed"') >= count,
                timeout * 3,
                f"{count} items placed",
            )
            log(f"memory {count}: placed in {time.monotonic() - started:.1f} s")
            settle = time.monotonic()
            while time.monotonic() - settle < 120:
                if quiet(pair.http) and quiet(pair.status):
                    break
                time.sleep(2.0)
            time.sleep(args.idle)
            assert pair.curator is not None
            assert pair.client is not None
            lines = [f"## {count:,} items (load {os.getloadavg()[0]:.2f})", ""]
            for name, proc, snap in (
                ("curator", pair.curator, snaps[0]),
                ("client", pair.client, snaps[1]),
            ):
                lines += describe(name, proc.pid, snap if args.trace else None, log)
                if args.trim:
                    lines += trimmed(name, proc.pid, snap)
            return lines
        finally:
            pair.close()


def main() -> int:
    """Command line: `--counts`, `--idle`, `--trace`, `--env K=V`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="1000,5000")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before (10)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc the daemons")
    parser.add_argument("--trim", action="store_true", help="then malloc_trim(0) each")
    parser.add_argument("--env", action="append", default=[], help="K=V for both daemons")
    parser.add_argument("--keep", help="copy the tracemalloc snapshots to this folder")
    args = parser.parse_args()
    if args.keep:
        KEEP.append(args.keep)
    env = dict(os.environ)
    env.update(dict(item.split("=", 1) for item in args.env))
    if args.trace:
        env["MM_TRACEMALLOC"] = "1"
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    out = [f"env: {' '.join(args.env) or '-'}", ""]
    for count in (int(c) for c in args.counts.split(",")):
        out += measure(count, args, env, log)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
