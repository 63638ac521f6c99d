"""Hostile connections against the curator while a real client asks for its manifest.

2,000 attackers (a quarter each) try to hold connections: a slowloris header
line every 5 s, idle keep-alive after one answer, long-polls (`?wait=60`) whose
clients vanish after about a second (half with FIN, half with RST), and
connections opened that never send. Each attacker reconnects 0.5-1.5 s after
the server closes it. Meanwhile a real client opens a new connection every
0.1 s and GETs the manifest. The server runs in its own process with a soft
RLIMIT_NOFILE of 1024 (a login shell's default; the daemon raises it itself),
the attackers in another.

    python benchmarks/connections.py                       # 2,000 attackers for 40 s
    python benchmarks/connections.py --quick               # 2,000 attackers for 15 s
    python benchmarks/connections.py --server waitress --python /path/to/venv/bin/python

`--server` runs the same route on waitress, cheroot, uvicorn or hypercorn
(benchmarks/http_anchors.py) with the Python given. Prints the real client's
latency, the server's CPU (% of one core), RSS and threads, and the
connections the server held over time (kernel view: ESTABLISHED and
CLOSE_WAIT sockets on its port; CLOSE_WAIT = the client left, the server has
not noticed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("slowloris", "idle keep-alive", "vanishing long-poll", "silent")
TICK = os.sysconf("SC_CLK_TCK")

SERVER = r"""
import dataclasses, json, logging, sys
from pathlib import Path
from meshmedia.config import Config
from meshmedia.http import ManifestServer
from meshmedia.manifest import ManifestStore, validate_item
try:
    from meshmedia.process import raise_open_files_limit
except ImportError:  # the code before the hardening
    raise_open_files_limit = lambda: None

logging.basicConfig(level=logging.WARNING)
raise_open_files_limit()  # as `meshmedia serve` does at start-up
folder, count = Path(sys.argv[1]), int(sys.argv[2])
store = ManifestStore(folder / "manifests")
items = [
    validate_item({
        "title": f"Film {n}", "path": f"Films/Film {n} (2001)/Film {n}.mkv",
        "torrent": f"magnet:?xt=urn:btih:{n:040x}&dn=Film%20{n}",
        "sha256": f"{n:064x}", "size": 1_000_000_000 + n,
    })
    for n in range(count)
]
store.replace("bench", items)
config = Config(state_dir=folder / "state", port=int(sys.argv[3]), shares=())
try:
    from meshmedia.http import Limits
    limits = {"limits": Limits(max_connections=int(sys.argv[4]))} if sys.argv[4] != "0" else {}
except ImportError:
    limits = {}
server = ManifestServer(config, store, None, None, token="bench", **limits).start()
print(server.port, flush=True)
sys.stdin.read()
stats = getattr(server, "stats", None)  # the server's own counters, when it has them
print(json.dumps(dataclasses.asdict(stats()) if stats else {}), flush=True)
server.close()
"""


def raise_nofile() -> None:
    """This process's soft RLIMIT_NOFILE up to its hard limit (2,000 sockets need it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the attackers (a child process) -------------------------------------------------


class Tally:
    """What one kind of attacker saw."""

    def __init__(self) -> None:
        self.opened = self.refused = 0
        self.held: list[float] = []


async def _until_closed(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Read and drop whatever comes for up to `seconds`; True when the server closed."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False


async def attacker(kind: str, port: int, etag: str, stop_at: float, tally: Tally) -> None:
    """Hold one connection of `kind` at a time until `stop_at`, reconnecting when closed."""
    get = f"GET /manifest/bench.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally.refused += 1
            await asyncio.sleep(1.0)
            continue
        tally.opened += 1
        opened = time.monotonic()
        try:
            if kind == "slowloris":
                writer.write(get.encode())
                line = 0
                while time.monotonic() < stop_at and not await _until_closed(reader, 5.0):
                    line += 1
                    writer.write(f"X-Trickle-{line}: {line}\r\n".encode())
            elif kind == "idle keep-alive":
                writer.write(f"{get}\r\n".encode())
                await _until_closed(reader, stop_at - time.monotonic())
            elif kind == "vanishing long-poll":
                writer.write(f"{get}If-None-Match: {etag}\r\n\r\n".replace(
                    "bench.json", "bench.json?wait=60", 1).encode())  # fmt: skip
                await _until_closed(reader, random.uniform(0.5, 1.5))
                if random.random() < 0.5:  # RST instead of FIN
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            else:
                await _until_closed(reader, stop_at - time.monotonic())
        except OSError:
            pass
        tally.held.append(time.monotonic() - opened)
        writer.close()
        await asyncio.sleep(random.uniform(0.5, 1.5))


async def attack(port: int, etag: str, count: int, seconds: float) -> dict[str, Tally]:
    """Run `count` attackers (a quarter of each kind), ramped up over 2 s."""
    stop_at = time.monotonic() + seconds
    tallies = {kind: Tally() for kind in KINDS}
    tasks = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        tasks.append(asyncio.create_task(attacker(kind, port, etag, stop_at, tallies[kind])))
        if n % 100 == 99:
            await asyncio.sleep(0.1)
    await asyncio.gather(*tasks)
    return tallies


def run_attack(port: int, etag: str, count: int, seconds: float) -> None:
    """The attack process: run, then print each kind's tally as JSON."""
    raise_nofile()
    tallies = asyncio.run(attack(port, etag, count, seconds))
    out = {}
    for kind, tally in tallies.items():
        held = tally.held or [0.0]
        out[kind] = {
            "opened": tally.opened,
            "refused": tally.refused,
            "held_median": statistics.median(held),
            "held_max": max(held),
        }
    print(json.dumps(out), flush=True)


# -- the real client and the sampler (this process) ----------------------------------


def fetch(port: int) -> tuple[int, float]:
    """One GET of the manifest on a new connection: status and seconds to the last byte."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        request = f"GET /manifest/bench.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        sock.sendall(f"{request}Connection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed before the answer's head")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (int(v) for k, _, v in (x.partition(":") for x in lines)
             if k.lower() == "content-length"), None,
        )  # fmt: skip
        while (length is None or len(body) < length) and (chunk := sock.recv(65536)):
            body += chunk
    return int(lines[0].split()[1]), time.perf_counter() - started


def real_client(port: int, stop: threading.Event, latencies: list[float], errors: list[str]):
    """A request every 0.1 s until `stop`."""
    while not stop.is_set():
        try:
            status, seconds = fetch(port)
            if status == 200:
                latencies.append(seconds)
            else:
                errors.append(f"HTTP {status}")
        except OSError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        stop.wait(0.1)


def process_sample(pid: int) -> dict[str, float]:
    """CPU seconds so far, VmRSS/VmHWM (KiB) and threads of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    values: dict[str, float] = {"cpu": (int(fields[11]) + int(fields[12])) / TICK}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def sockets_on(port: int) -> tuple[int, int]:
    """Server-side sockets on `port`: (ESTABLISHED, CLOSE_WAIT), from /proc/net/tcp."""
    established = close_wait = 0
    suffix = f":{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split(None, 4)
        if parts[1].endswith(suffix):
            if parts[3] == "01":
                established += 1
            elif parts[3] == "08":
                close_wait += 1
    return established, close_wait


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_server(args: argparse.Namespace, folder: Path, port: int) -> subprocess.Popen[str]:
    """The server process, soft RLIMIT_NOFILE set to `--server-nofile`."""

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.server_nofile, hard), hard))

    if args.server == "meshmedia":
        argv = [sys.executable, "-c", SERVER, str(folder), str(args.items), str(port),
                str(args.max_connections)]  # fmt: skip
    else:
        body, etag = manifest_body(folder, args.items)
        (folder / "body.json").write_bytes(body)
        argv = [args.python, "-m", "benchmarks.http_anchors", args.server, str(port),
                str(folder / "body.json"), etag]  # fmt: skip
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        preexec_fn=limit,  # noqa: PLW1509 - before any thread of ours exists
    )  # fmt: skip


def manifest_body(folder: Path, items: int) -> tuple[bytes, str]:
    """The bytes and ETag meshmedia would serve for the benchmark's manifest."""
    from meshmedia.manifest import ManifestStore, validate_item  # noqa: PLC0415

    store = ManifestStore(folder / "anchor-manifests")
    made = [
        validate_item({
            "title": f"Film {n}", "path": f"Films/Film {n} (2001)/Film {n}.mkv",
            "torrent": f"magnet:?xt=urn:btih:{n:040x}&dn=Film%20{n}",
            "sha256": f"{n:064x}", "size": 1_000_000_000 + n,
        })
        for n in range(items)
    ]  # fmt: skip
    manifest = store.replace("bench", made)
    store.close()
    return manifest.dumps(), manifest.etag


def wait_ready(port: int, proc: subprocess.Popen[str]) -> str:
    """Wait until the server answers; its manifest's ETag."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /manifest/bench.json HTTP/1.1\r\nHost: x\r\n\r\n")
                head = sock.recv(65536).decode("latin-1")
            return next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n") if line.lower().startswith("etag:")
            )  # fmt: skip
        except (OSError, StopIteration):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.2)


def measure(args: argparse.Namespace, port: int, pid: int, etag: str) -> dict:
    """Attack for `args.seconds` while the real client runs; the figures."""
    attack_proc = subprocess.Popen(
        [sys.executable, __file__, "--attack", str(port), "--etag", etag,
         "--attackers", str(args.attackers), "--seconds", str(args.seconds)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    time.sleep(3.0)  # the ramp-up (2 s) before the real client starts measuring
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[str] = []
    client = threading.Thread(target=real_client, args=(port, stop, latencies, errors))
    before, started = process_sample(pid), time.monotonic()
    client.start()
    series, peak = [], dict(before)
    while time.monotonic() < started + args.seconds - 3.5:
        time.sleep(1.0)
        sample = process_sample(pid)
        peak = {k: max(v, peak.get(k, 0)) for k, v in sample.items()}
        series.append((time.monotonic() - started + 3.0, *sockets_on(port)))
    after, elapsed = process_sample(pid), time.monotonic() - started
    stop.set()
    client.join()
    tallies = json.loads(attack_proc.communicate(timeout=120)[0])
    return {
        "latencies": latencies, "errors": errors, "series": series, "tallies": tallies,
        "cpu": (after["cpu"] - before["cpu"]) / elapsed, "peak": peak, "after": after,
    }  # fmt: skip


def report(args: argparse.Namespace, figures: dict, idle_rss: float) -> None:
    """Print the figures."""
    lat, errors = figures["latencies"], figures["errors"]
    print(f"server: {args.server}, soft RLIMIT_NOFILE at start {args.server_nofile}")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    kinds = ", ".join(f"{args.attackers // len(KINDS)} {kind}" for kind in KINDS)
    print(f"attackers: {args.attackers} ({kinds}) for {args.seconds:.0f} s")
    if lat:
        print(
            f"real client: {len(lat)} answers, median {statistics.median(lat) * 1e3:.1f} ms, "
            f"p99 {percentile(lat, 0.99) * 1e3:.1f} ms, max {max(lat) * 1e3:.1f} ms, "
            f"errors {len(errors)}"
        )
    else:
        print(f"real client: no answer, errors {len(errors)}")
    for error in sorted(set(errors))[:5]:
        print(f"  error: {error}")
    peak, after = figures["peak"], figures["after"]
    if "VmRSS" not in after:
        print("server: died during the attack")
        after = {**after, "VmRSS": 0}
    print(
        f"server CPU: {figures['cpu'] * 100:.0f}% of a core; RSS idle {idle_rss / 1024:.1f} MiB, "
        f"under attack {after['VmRSS'] / 1024:.1f} MiB, peak {peak['VmHWM'] / 1024:.1f} MiB; "
        f"threads up to {peak['Threads']:.0f}"
    )
    if figures.get("stats"):
        stats = figures["stats"]
        print("server counters: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    steps = " ".join(f"{t:.0f}s:{e}/{w}" for t, e, w in figures["series"][::5])
    print(f"connections held (established/close-wait): {steps}")
    for kind, tally in figures["tallies"].items():
        print(
            f"  {kind}: {tally['opened']} opened, {tally['refused']} refused at connect, "
            f"held median {tally['held_median']:.1f} s, max {tally['held_max']:.1f} s"
        )


def main() -> int:
    """Start the server, attack it, print the figures; 1 when the real client got no answer."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s instead of 40 s")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--attackers", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500, help="manifest items (500)")
    servers = ["meshmedia", "waitress", "cheroot", "uvicorn", "hypercorn"]
    parser.add_argument("--server", default="meshmedia", choices=servers)
    parser.add_argument("--python", default=sys.executable, help="Python for --server anchors")
    parser.add_argument("--server-nofile", type=int, default=1024)
    parser.add_argument("--max-connections", type=int, default=0,
                        help="meshmedia's connection cap (default: its own default)")  # fmt: skip
    parser.add_argument("--attack", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--etag", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seconds = args.seconds or (15.0 if args.quick else 40.0)
    if args.attack:
        run_attack(args.attack, args.etag, args.attackers, args.seconds)
        return 0
    from benchmarks.common import free_port  # noqa: PLC0415

    with TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(args, Path(tmp), port)
        try:
            if args.server == "meshmedia":
                port = int(proc.stdout.readline())
            etag = wait_ready(port, proc)
            idle_rss = process_sample(proc.pid)["VmRSS"]
            figures = measure(args, port, proc.pid, etag)
            proc.stdin.close()
            if args.server == "meshmedia":
                figures["stats"] = json.loads(proc.stdout.readline() or "{}")
        finally:
            proc.stdin.close()
            proc.terminate()
            proc.wait(timeout=30)
    report(args, figures, idle_rss)
    return 0 if figures["latencies"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
