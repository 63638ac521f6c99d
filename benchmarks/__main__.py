"""`python -m benchmarks`: publish, transfer, end-to-end latency, load and hostile connections.

    .venv/bin/python -m benchmarks                      # full: 1 GiB, 3 runs (~6-7 min)
    .venv/bin/python -m benchmarks --quick              # 100 MB, ~2 min
    .venv/bin/python -m benchmarks --only e2e --runs 5 --markdown /tmp/table.md

publish.py, transfer.py, load.py and connections.py run as child processes and their output is
parsed; the end-to-end latency is measured here (e2e.py, anchors.py). Prints one
table; ratio = anchor / meshmedia for times (> 1: meshmedia is faster) and
meshmedia / anchor for rates.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import anchors, scale
from benchmarks.common import LoopbackNetns, Row, machine, median, table, versions
from benchmarks.e2e import DropSystem, Meshmedia, measure

HERE = Path(__file__).resolve().parent
MB, GiB = 10**6, 1 << 30
SUITES = ("publish", "transfer", "e2e", "load", "connections", "scale")
ANCHORS = (
    ("aria2c + opentracker", anchors.Aria2),
    ("webtorrent-cli", anchors.WebTorrent),
    ("syncthing", anchors.Syncthing),
)


def script(name: str, *args: str, timeout: float) -> str:
    """Run benchmarks/<name>.py with this Python; its stdout (RuntimeError on failure).

    It runs in its own process group, killed whole when it outlives `timeout`, so
    no seeder or tracker it started is left behind.
    """
    argv = [sys.executable, str(HERE / f"{name}.py"), *args]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{name}.py killed after {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{name}.py exited {proc.returncode}: {tail[0]}")
    return out


def seconds_after(text: str, label: str) -> float | str | None:
    """The seconds on the line starting with `label`, its 'skipped: ...' note, or None."""
    for line in text.splitlines():
        if line.startswith(label):
            rest = line[len(label) :]
            found = re.match(r"\s*(\d+\.\d+) s", rest)
            return float(found.group(1)) if found else rest.strip()
    return None


def publish_rows(size: str) -> list[Row]:
    """Cold publish of one file against the torrent creators; publish latency after a copy."""
    out = script("publish", "--size", size, timeout=300)
    ours = seconds_after(out, "cold publish (hash+torrent+seed+item)")
    bench = f"publish {size} (hash+torrent+seed)"
    rows = []
    for anchor in ("mktorrent -t 2", "transmission-create", "torf (threads=2)",
                   "libtorrent set_piece_hashes"):  # fmt: skip
        value = seconds_after(out, anchor)
        if isinstance(value, float):
            rows.append(Row(bench, ours, anchor=anchor, anchor_value=value))  # type: ignore[arg-type]
        else:
            rows.append(Row(bench, ours, anchor=anchor, note=str(value or "no result")))  # type: ignore[arg-type]
    after = re.search(r"publish after a (.+?) copy.*?(\d+\.\d+) s", out)
    if after:
        rows.append(Row(f"publish after a {after.group(1)} copy ends", float(after.group(2)),
                        note="watcher follows the copy; no anchor does"))  # fmt: skip
    return rows


def transfer_rows(size: str) -> list[Row]:
    """1 GiB Engine -> Engine in two processes against two aria2c through opentracker."""
    out = script("transfer", "--size", size, "--runs", "1", "--timeout", "240", timeout=400)

    def run_seconds(name: str) -> float | None:
        found = re.findall(rf"^{name} run \d+\s+(\d+\.\d+) s\s+(\d+\.\d+) MB/s.*ok=True", out, re.M)
        return median([float(s) for s, _ in found])

    ours, theirs = run_seconds("meshmedia"), run_seconds("aria2c")
    bench = f"transfer {size} over loopback"
    if theirs is None:
        note = "aria2c run failed or not installed (apt-get install aria2 opentracker)"
        return [Row(bench, ours, anchor="aria2c + opentracker", note=note)]
    return [Row(bench, ours, anchor="aria2c + opentracker", anchor_value=theirs)]


def load_rows(size: str) -> list[Row]:
    """Manifest polls answered per second (If-None-Match, keep-alive); no anchor."""
    out = script("load", "--size", size, timeout=180)
    rate = re.search(r"requests: (\d+) \((\d+)/s\), errors: (\d+)", out)
    lat = re.search(r"latency: p50 ([\d.]+) ms, p99 ([\d.]+) ms", out)
    who = re.search(r"clients: (\d+)", out)
    items = re.search(r"manifest: (\d+) items", out)
    if not (rate and lat and who and items):
        raise RuntimeError(f"load.py output not understood: {out[-200:]!r}")
    note = f"p50 {lat.group(1)} ms, p99 {lat.group(2)} ms, {rate.group(3)} errors"
    bench = f"manifest polls, {who.group(1)} clients, {items.group(1)} items"
    return [Row(bench, float(rate.group(2)), unit="req/s", note=note, lower_is_better=False)]


def connections_rows(quick: bool) -> list[Row]:
    """A real client's manifest GET while 2,000 slow or idle connections attack; no anchor."""
    out = script("connections", *(["--quick"] if quick else []), timeout=240)
    lat = re.search(
        r"real client: (\d+) answers, median ([\d.]+) ms, p99 ([\d.]+) ms.*errors (\d+)", out
    )
    cpu = re.search(r"server CPU: (\d+)% of a core;.*peak ([\d.]+) MiB", out)
    if not (lat and cpu):
        raise RuntimeError(f"connections.py output not understood: {out[-200:]!r}")
    note = (
        f"p99 {lat.group(3)} ms, {lat.group(4)} errors; server {cpu.group(1)}% of a core, "
        f"peak RSS {cpu.group(2)} MiB"
    )
    bench = "manifest GET (new connection) under 2,000 hostile connections, median"
    return [Row(bench, float(lat.group(2)), unit="ms", note=note)]


def scale_rows(quick: bool, idle: float | None) -> list[Row]:
    """The library-at-scale figures (benchmarks/scale.py); its full table goes to stderr."""
    counts = [100, 1000] if quick else [100, 1000, 5000]
    window = idle if idle is not None else (10.0 if quick else 30.0)
    results = {count: scale.measure(count, window, log) for count in counts}
    log("\n" + scale.report(results))
    rows = []
    for count, r in results.items():
        note = (
            f"hashing alone {r['hash_s']:.2f} s; idle curator {r['curator_cpu']:.2f}% "
            f"{r['curator_rss']:.0f} MiB, client {r['client_cpu']:.2f}% {r['client_rss']:.0f} MiB; "
            f"restart curator {r['curator_restart_answer']:.2f} s / all seeding "
            f"{r['curator_restart_seeding']:.2f} s, rehashed {r['curator_restart_rehashed']:.0f} B"
        )
        rows.append(Row(f"publish {count:,} items of 100 KB", r["publish_s"], note=note))
        alone = (
            f"no client yet; curator CPU {r['alone_cpu']:.2f} s (with the client syncing: "
            f"{r['publish_cpu_curator']:.2f} s)"
        )
        rows.append(
            Row(f"publish {count:,} items of 100 KB, curator alone", r["alone_s"], note=alone)
        )
    return rows


def e2e_rows(sizes: list[int], runs: int, work: Path, sync: bool = False) -> list[Row]:
    """Drop -> in the other side's folder, meshmedia against each anchor, median of `runs`;
    `sync`: flush the disk before each drop is written (e2e.measure)."""
    results: dict[str, dict[int, list[float]] | str] = {}
    with LoopbackNetns() as netns:
        systems: list[tuple[str, DropSystem | None, str]] = [("meshmedia", Meshmedia(), "")]
        for name, cls in ANCHORS:
            absent = anchors.missing(name) or (netns.error and f"skipped: {netns.error}")
            systems.append((name, None if absent else cls(netns), absent))
        for name, system, absent in systems:
            if system is None:
                results[name] = absent
                continue
            with tempfile.TemporaryDirectory(dir=work, prefix=f"e2e-{name[:6]}-") as tmp:
                try:
                    results[name] = measure(system, Path(tmp), sizes, runs, log, sync=sync)
                except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
                    log(f"{name}: failed: {exc}")
                    results[name] = f"failed: {exc}"
    return e2e_table(results, sizes, runs)


def e2e_table(results: dict, sizes: list[int], runs: int) -> list[Row]:
    """One row per size and anchor with the medians."""
    rows = []
    ours = results.pop("meshmedia")
    for size in sizes:
        label = f"{size / GiB:.0f} GiB" if size >= GiB else f"{size / MB:.0f} MB"
        bench = f"drop -> library, {label} (median of {runs})"
        mine = median(ours[size]) if isinstance(ours, dict) else None
        for name, result in results.items():
            if isinstance(result, str):
                rows.append(Row(bench, mine, anchor=name, note=result))
            else:
                rows.append(Row(bench, mine, anchor=name, anchor_value=median(result[size])))
        if not results or isinstance(ours, str):
            rows.append(Row(bench, mine, note=ours if isinstance(ours, str) else ""))
    return rows


def log(line: str) -> None:
    """Progress on stderr, so stdout stays the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def main() -> int:
    """Run the chosen suites, print the table, write it as Markdown when asked."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="100 MB instead of 1 GiB (~2 min)")
    parser.add_argument("--runs", type=int, default=3, help="end-to-end runs per size (3)")
    parser.add_argument("--only", action="append", choices=SUITES, help="run only these")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table here")
    parser.add_argument("--dir", type=Path, help="work folder (default: the temp dir)")
    parser.add_argument("--sync", action="store_true",
                        help="e2e: sync() before each drop is written, so no run waits for "
                        "the writeback of the runs before it")  # fmt: skip
    parser.add_argument("--idle", type=float, help="scale: idle window in seconds (30; --quick 10)")
    args = parser.parse_args()
    big = "100M" if args.quick else "1G"
    chosen = args.only or [s for s in SUITES if s != "scale"]  # scale: ~15 min, asked for
    started, load_before = datetime.now(timezone.utc), os.getloadavg()
    rows: list[Row] = []
    steps = {
        "publish": lambda: publish_rows(big),
        "transfer": lambda: transfer_rows(big),
        "e2e": lambda: e2e_rows(
            [10 * MB, 100 * MB if args.quick else GiB], args.runs, work, args.sync
        ),
        "load": lambda: load_rows("quick" if args.quick else "full"),
        "connections": lambda: connections_rows(args.quick),
        "scale": lambda: scale_rows(args.quick, args.idle),
    }
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mm-benchmarks-") as tmp:
        work = Path(tmp)
        for suite in SUITES:
            if suite not in chosen:
                continue
            log(f"{suite} ...")
            try:
                rows += steps[suite]()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                log(f"{suite} failed: {exc}")
                rows.append(Row(suite, note=f"failed: {exc}"))
    elapsed = (datetime.now(timezone.utc) - started).total_seconds()
    header = [
        f"date: {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s, command: "
        f"python -m benchmarks {' '.join(sys.argv[1:])}".rstrip(),
        f"machine: {machine()}",
        f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "ratio: anchor / meshmedia for times, meshmedia / anchor for rates: > 1 = meshmedia wins",
    ]
    print(table(rows, header, markdown=False))
    if args.markdown:
        args.markdown.write_text(table(rows, header, markdown=True))
    return 0 if all(not r.note.startswith("failed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
