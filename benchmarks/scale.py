"""A family's library at scale: 100, 1,000 and 5,000 items through a real curator and client.

For each count, a real `meshmedia serve` (empty share) and a real `meshmedia sync`
following it run as child processes on 127.0.0.1 (DHT, LSD, UPnP, NAT-PMP off).
Printed per count:
- publish: the files (100 KB of random bytes each) are renamed into the share one
  after another; seconds from the first rename until the manifest lists all of them,
  beside hashing the same files alone (`hashing.hash_file`, what the publisher runs,
  one after another in this process, page cache warm), and the CPU seconds each
  daemon used meanwhile (utime + stime from /proc);
- publish, curator alone: the same with another set of files into a curator of its
  own with no client yet (a real client is another machine in another home; here it
  takes the same cores while it syncs every version the curator lists);
- synced: until the client has placed every item;
- idle: % of one core (utime + stime from /proc) over `--idle` seconds (30) and RSS,
  of the curator and of the client, once both /status show no transfer after everything
  is placed (every rate 0, no peer; at most `--settle` seconds, 120, "no transfer after");
- restart (SIGTERM, start again): seconds to the first answer (the curator's
  manifest, the client's /status) and until every torrent seeds again (/metrics),
  and the bytes hashed again by meshmedia and by libtorrent (/metrics, want 0);
- manifest answers per second (4 keep-alive connections for 3 s): 304 to
  If-None-Match and full 200s;
then the growth from 1,000 to 5,000 of every figure as a ratio (5.0 = linear).

    python -m benchmarks --only scale                # 100, 1,000, 5,000; idle 30 s
    python benchmarks/scale.py --counts 100,1000 --idle 10
    MESHMEDIA_BENCH_LOG_LEVEL=DEBUG python benchmarks/scale.py --counts 1000  # daemons' logs
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Processes, free_port, stop, wait_until
from benchmarks.e2e import NETWORK, answers
from meshmedia.hashing import hash_file

SIZE = 100_000
LEVEL = os.environ.get("MESHMEDIA_BENCH_LOG_LEVEL", "WARNING")
GROUP = "default"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics(port: int) -> dict[str, float]:
    """The /metrics series of a daemon, `name{labels}` -> value; {} while it does not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def series(values: dict[str, float], name: str, label: str = "") -> float:
    """The sum of `name` series whose labels contain `label`."""
    pattern = re.compile(re.escape(name) + r"(\{|$)")
    return sum(v for k, v in values.items() if pattern.match(k) and label in k)


def quiet(port: int) -> bool:
    """True when a daemon's GET /status shows no transfer: every torrent at 0 B/s with
    no peer connected (the curator's snapshot, or the client's `engine` part)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/status")
        doc = json.loads(conn.getresponse().read())
        conn.close()
    except (OSError, ValueError):
        return False
    torrents = (doc.get("engine") or doc).get("torrents", [])
    return all(not (t["upload_rate"] or t["download_rate"] or t["num_peers"]) for t in torrents)


def status_answers(port: int, path: str) -> bool:
    """True once GET `path` answers 200."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def rate(port: int, path: str, etag: str | None, seconds: float = 3.0) -> float:
    """Answers per second from 4 keep-alive connections asking `path` (with If-None-Match)."""
    counts = [0] * 4
    deadline = time.monotonic() + seconds
    headers = {"If-None-Match": etag} if etag else {}
    want = 304 if etag else 200

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status == want:
                counts[k] += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


class Pair:
    """A curator and a client on loopback, with their folders under `base`."""

    def __init__(
        self,
        base: Path,
        log: Callable[[str], None],
        command: tuple[list[str], list[str]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.base, self.log = base, log
        # (curator's, client's) argv before "serve"/"sync" (benchmarks/memory.py traces)
        self.command = command or ([sys.executable, "-m", "meshmedia"],) * 2
        self.env = env
        self.share, self.media = base / "share", base / "media"
        self.share.mkdir(parents=True)
        self.http, self.status = free_port(), free_port()
        self.peer_ports = (free_port(), free_port())
        self.procs = Processes()
        self.curator = self.client = None

    @property
    def manifest_path(self) -> str:
        return f"/manifest/{GROUP}.json"

    def start_curator(self) -> float:
        """Start `meshmedia serve`; returns the time it was started."""
        started = time.monotonic()
        self.curator = self.procs.start(
            [*self.command[0], "serve", "--share", f"{GROUP}={self.share}",
             "--state-dir", str(self.base / "cs"), "--host", "127.0.0.1",
             "--port", str(self.http), "--listen-port", str(self.peer_ports[0]),
             "--log-level", LEVEL, "--public", GROUP, *NETWORK],
            log=self.base / "serve.log", env=self.env,
        )  # fmt: skip
        return started

    def start_client(self) -> float:
        """Start `meshmedia sync`; returns the time it was started."""
        started = time.monotonic()
        self.client = self.procs.start(
            [*self.command[1], "sync",
             "--manifest-url", f"http://127.0.0.1:{self.http}{self.manifest_path}",
             "--download-dir", str(self.media), "--state-dir", str(self.base / "ss"),
             "--listen-port", str(self.peer_ports[1]), "--status-port", str(self.status),
             "--min-free", "0", "--log-level", LEVEL, *NETWORK],
            log=self.base / "sync.log", env=self.env,
        )  # fmt: skip
        return started

    def close(self) -> None:
        self.procs.close()


def make_files(folder: Path, count: int) -> list[Path]:
    """`count` files of SIZE random bytes in `folder` (100 per sub-folder)."""
    paths = []
    for k in range(count):
        path = folder / f"d{k // 100:03d}" / f"f{k:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(SIZE))
        paths.append(path)
    return paths


def hashing_alone(paths: list[Path]) -> float:
    """Seconds to hash every file one after another, as the publisher does."""
    for path in paths[:50]:
        hash_file(path)  # warm up the threads' code paths
    started = time.monotonic()
    for path in paths:
        hash_file(path)
    return time.monotonic() - started


def idle(pid: int, seconds: float) -> tuple[float, float]:
    """(% of one core over `seconds`, RSS MiB at the end) of an idle process."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used = cpu_seconds(pid) - before
    return 100 * used / (time.monotonic() - started), rss_mib(pid)


def restart(pair: Pair, which: str, count: int, timeout: float) -> dict[str, float]:
    """SIGTERM one daemon, start it again: seconds to its first answer, to all seeding,
    and the bytes it hashed again."""
    proc = pair.curator if which == "curator" else pair.client
    assert proc is not None
    stop(proc, grace=120)
    pair.procs.procs.remove(proc)
    if which == "curator":
        started, port, path = pair.start_curator(), pair.http, pair.manifest_path
    else:
        started, port, path = pair.start_client(), pair.status, "/status"
    wait_until(lambda: status_answers(port, path), timeout, f"{which} answering")
    answered = time.monotonic() - started
    try:
        wait_until(
            lambda: series(metrics(port), "meshmedia_torrents", 'state="seeding"') >= count,
            timeout,
            f"{which}: {count} seeding",
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; {stuck(pair, which, port)}") from None
    seeding = time.monotonic() - started
    values = metrics(port)
    return {
        "answer": answered,
        "seeding": seeding,
        "rehashed": series(values, "meshmedia_hashed_bytes_total"),
    }


def stuck(pair: Pair, which: str, port: int) -> str:
    """What a daemon that did not bring every torrent back says: its torrents by state
    and the last lines of its log (a client restart hung once in each of two sessions,
    not reproduced in 12 runs since: the next one should say why)."""
    states = {
        k.split('state="', 1)[1].split('"', 1)[0]: v
        for k, v in metrics(port).items()
        if k.startswith("meshmedia_torrents{") and 'state="' in k and v
    }
    logged = pair.base / ("serve.log" if which == "curator" else "sync.log")
    try:
        tail = logged.read_text(errors="replace").splitlines()[-20:]
    except OSError as exc:
        tail = [f"(no log: {exc.strerror})"]
    return f"torrents by state {states}; the last lines of {logged.name}:\n" + "\n".join(tail)


class ListedItems:
    """Items in a manifest, asked as a client asks (If-None-Match: a 304 while unchanged).
    Asking /metrics every 50 ms instead took 7% of the curator's GIL time during a
    5,000-file burst (4 ms a scrape of 5,000 torrents), a load the measure put on it."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.etag: str | None = None
        self.count = 0

    def __call__(self) -> int:
        """The number of items in the manifest now."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", self.path, headers={"If-None-Match": self.etag or ""})
            answer = conn.getresponse()
            body = answer.read()
            if answer.status == 200:
                self.etag = answer.getheader("ETag")
                self.count = len(json.loads(body)["items"])
        except (OSError, ValueError, KeyError):
            pass
        finally:
            conn.close()
        return self.count


def drop_into(pair: Pair, staged: list[Path], staging: Path, count: int, timeout: float) -> float:
    """Rename `staged` into the share one after another; seconds until all are listed."""
    listed = ListedItems(pair.http, pair.manifest_path)
    started = time.monotonic()
    for path in staged:
        target = pair.share / path.relative_to(staging)
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
    wait_until(lambda: listed() >= count, timeout, f"{count} items listed")
    return time.monotonic() - started


def curator_alone(base: Path, count: int, log: Callable[[str], None]) -> tuple[float, float]:
    """(seconds until `count` new files are listed, the curator's CPU seconds meanwhile)
    for a curator of its own with no client."""
    staged = make_files(base / "staging", count)
    pair = Pair(base, log)
    try:
        pair.start_curator()
        wait_until(lambda: answers(f"http://127.0.0.1:{pair.http}/"), 60, "meshmedia serve")
        assert pair.curator is not None
        before = cpu_seconds(pair.curator.pid)
        seconds = drop_into(pair, staged, base / "staging", count, 120 + count * 0.2)
        return seconds, cpu_seconds(pair.curator.pid) - before
    finally:
        pair.close()


def measure(
    count: int, idle_seconds: float, log: Callable[[str], None], settle: float = 120.0
) -> dict[str, float]:
    """Every figure for one library size."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mm-scale-") as tmp:
        base = Path(tmp)
        staged = make_files(base / "staging", count)
        out["hash_s"] = hashing_alone(staged)
        out["alone_s"], out["alone_cpu"] = curator_alone(base / "alone", count, log)
        log(f"scale {count}: publish, curator alone {out['alone_s']:.2f} s")
        pair = Pair(base, log)
        timeout = 120 + count * 0.2
        try:
            pair.start_curator()
            wait_until(lambda: answers(f"http://127.0.0.1:{pair.http}/"), 60, "meshmedia serve")
            pair.start_client()
            wait_until(lambda: status_answers(pair.status, "/status"), 60, "meshmedia sync")
            assert pair.curator is not None
            assert pair.client is not None
            cpu = cpu_seconds(pair.curator.pid), cpu_seconds(pair.client.pid)
            started = time.monotonic()
            out["publish_s"] = drop_into(pair, staged, base / "staging", count, timeout)
            out["publish_cpu_curator"] = cpu_seconds(pair.curator.pid) - cpu[0]
            out["publish_cpu_client"] = cpu_seconds(pair.client.pid) - cpu[1]
            log(f"scale {count}: publish {out['publish_s']:.2f} s, hashing {out['hash_s']:.2f}")
            wait_until(
                lambda: series(metrics(pair.status), "meshmedia_items", 'state="placed"') >= count,
                timeout * 3,
                f"{count} items placed",
            )
            out["sync_s"] = time.monotonic() - started
            log(f"scale {count}: placed in {out['sync_s']:.2f} s")
            # After the last placement both daemons still work for a while (resume saves
            # after the moves, peer connections of finished torrents, rates decaying):
            # measured with 1,000 items, 2.6% of a core in the first 10 s, 0.65% 20-30 s
            # after, 0.1-0.4% from 40 s on. Idle is measured once both /status show no
            # transfer (every rate 0, no peer), at most `settle` seconds after.
            quiet_from = time.monotonic()
            while time.monotonic() - quiet_from < settle:
                if quiet(pair.http) and quiet(pair.status):
                    break
                time.sleep(2.0)  # asking 5,000 statuses every 50 ms would be work itself
            out["quiet_s"] = time.monotonic() - quiet_from
            log(f"scale {count}: no transfer {out['quiet_s']:.1f} s after the last placement")
            assert pair.curator is not None
            assert pair.client is not None
            results: dict[str, tuple[float, float]] = {}
            threads = [
                threading.Thread(
                    target=lambda n=name, p=proc: results.__setitem__(n, idle(p.pid, idle_seconds))
                )
                for name, proc in (("curator", pair.curator), ("client", pair.client))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for name, (cpu, rss) in results.items():
                out[f"{name}_cpu"], out[f"{name}_rss"] = cpu, rss
            manifest = pair.manifest_path
            conn = http.client.HTTPConnection("127.0.0.1", pair.http, timeout=30)
            conn.request("GET", manifest)
            answer = conn.getresponse()
            answer.read()
            etag = answer.getheader("ETag")
            conn.close()
            out["rate_304"] = rate(pair.http, manifest, etag)
            out["rate_200"] = rate(pair.http, manifest, None)
            for name in ("curator", "client"):
                for key, value in restart(pair, name, count, timeout).items():
                    out[f"{name}_restart_{key}"] = value
            log(f"scale {count}: {out}")
        finally:
            pair.close()
    return out


LABELS = [
    ("publish_s", "publish all (s)"),
    ("publish_cpu_curator", "publish all: curator CPU (s)"),
    ("publish_cpu_client", "publish all: client CPU (s)"),
    ("alone_s", "publish, curator alone (s)"),
    ("alone_cpu", "publish, curator alone: curator CPU (s)"),
    ("hash_s", "hashing alone (s)"),
    ("sync_s", "placed on the client (s)"),
    ("quiet_s", "no transfer after the last placement (s)"),
    ("curator_cpu", "curator idle (% core)"),
    ("curator_rss", "curator RSS (MiB)"),
    ("client_cpu", "client idle (% core)"),
    ("client_rss", "client RSS (MiB)"),
    ("curator_restart_answer", "curator restart -> manifest (s)"),
    ("curator_restart_seeding", "curator restart -> all seeding (s)"),
    ("curator_restart_rehashed", "curator bytes hashed again"),
    ("client_restart_answer", "client restart -> /status (s)"),
    ("client_restart_seeding", "client restart -> all seeding (s)"),
    ("client_restart_rehashed", "client bytes hashed again"),
    ("rate_304", "manifest 304/s"),
    ("rate_200", "manifest 200/s"),
]


def report(results: dict[int, dict[str, float]]) -> str:
    """The figures as a Markdown table, one column per count, and the growth 1,000 -> 5,000."""
    counts = sorted(results)
    growth = 1000 in results and 5000 in results
    head = ["figure", *(f"{c:,} items" for c in counts)] + (["5,000 / 1,000"] if growth else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in LABELS:
        cells = [label] + [f"{results[c].get(key, float('nan')):.3g}" for c in counts]
        if growth:
            low, high = results[1000].get(key), results[5000].get(key)
            cells.append(f"{high / low:.2f}" if low and high is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if all("publish_s" in r for r in results.values()):
        lines.append("")
        for c in counts:
            ratio = results[c]["publish_s"] / results[c]["hash_s"]
            alone = results[c].get("alone_s", float("nan")) / results[c]["hash_s"]
            lines.append(
                f"{c:,} items: publish / hashing alone = {ratio:.2f};"
                f" publish, curator alone / hashing alone = {alone:.2f}"
            )
    return "\n".join(lines)


def run(
    counts: list[int], idle_seconds: float, log: Callable[[str], None], settle: float = 120.0
) -> str:
    """Measure every count and return the report."""
    load = os.getloadavg()[0]
    results = {count: measure(count, idle_seconds, log, settle) for count in counts}
    return (
        report(results)
        + f"\n\nload average (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f}"
    )


def main() -> int:
    """Command line: `--counts`, `--idle`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="100,1000,5000", help="library sizes (100,1000,5000)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window in seconds (30)")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="at most this long for no transfer (120 s)"
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    print(
        run(counts, args.idle, lambda line: print(line, file=sys.stderr, flush=True), args.settle)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
