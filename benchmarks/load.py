"""Load on the manifest server: many clients polling a big manifest with If-None-Match.

The server runs in its own process (so that its RSS can be read from /proc);
the clients are asyncio tasks in this process, each on one keep-alive HTTP/1.1
connection over raw sockets, sending `GET /manifest/bench.json` with the
current ETag as fast as answers come back (every answer should be a 304).

    python benchmarks/load.py                       # 200 clients, 20 s, 10,000 items
    python benchmarks/load.py --size quick          # 20 clients, 3 s, 1,000 items
    python benchmarks/load.py --clients 50 --seconds 5 --items 2000

Prints requests/s, latency percentiles, errors and the server's RSS. Both sides
share the machine's cores: the numbers are a lower bound of what a curator
serves to clients on other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

SIZES = {"quick": (20, 3.0, 1000), "full": (200, 20.0, 10_000)}

SERVER = r"""
import logging, sys
from pathlib import Path
from meshmedia.config import Config
from meshmedia.http import ManifestServer
from meshmedia.manifest import ManifestStore, validate_item

logging.basicConfig(level=logging.WARNING)
folder, count = Path(sys.argv[1]), int(sys.argv[2])
store = ManifestStore(folder / "manifests")
items = [
    validate_item({
        "title": f"Film {n}", "path": f"Films/Film {n} (2001)/Film {n}.mkv",
        "torrent": f"magnet:?xt=urn:btih:{n:040x}&dn=Film%20{n}",
        "sha256": f"{n:064x}", "size": 1_000_000_000 + n, "xxh3": f"{n:032x}",
    })
    for n in range(count)
]
store.replace("bench", items)
config = Config(state_dir=folder / "state", port=0, shares=())
server = ManifestServer(config, store, None, None, token="bench").start()
print(server.port, flush=True)
sys.stdin.read()
server.close()
"""


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak) in KiB and the thread count of a process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


async def client(
    port: int, etag: str, stop_at: float, latencies: list[float], errors: list[str]
) -> None:
    """One keep-alive connection polling until `stop_at`.

    The first request's latency goes in as a negative number: it includes the
    wait until the server accepts the connection, and is reported apart.
    """
    request = (
        f"GET /manifest/bench.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"If-None-Match: {etag}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sign = -1.0
    try:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = next(
                (
                    int(v)
                    for k, _, v in (x.partition(": ") for x in lines)
                    if k.lower() == "content-length"
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            latencies.append(sign * (time.perf_counter() - started))
            sign = 1.0
            if status != 304:
                errors.append(f"status {status}")
                return
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def sample(pid: int, stop_at: float, peak: dict[str, int]) -> None:
    """Keep the largest RSS and thread count of the server seen while the clients run."""
    while time.monotonic() < stop_at - 0.5:
        await asyncio.sleep(0.5)
        for key, value in rss_kib(pid).items():
            peak[key] = max(peak.get(key, 0), value)


async def run_clients(
    port: int, etag: str, clients: int, seconds: float, pid: int
) -> tuple[list[float], list[str], float, dict[str, int]]:
    """Run every client for `seconds`; return latencies, errors, elapsed time, server peaks."""
    latencies: list[float] = []
    errors: list[str] = []
    peak = rss_kib(pid)
    started = time.monotonic()
    stop_at = started + seconds
    tasks = [client(port, etag, stop_at, latencies, errors) for _ in range(clients)]
    await asyncio.gather(sample(pid, stop_at, peak), *tasks)
    return latencies, errors, time.monotonic() - started, peak


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    """Start the server process, load it, print the numbers; 1 when any request failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--items", type=int)
    args = parser.parse_args()
    clients, seconds, items = SIZES[args.size]
    clients, seconds, items = args.clients or clients, args.seconds or seconds, args.items or items
    root = Path(__file__).resolve().parent.parent
    with TemporaryDirectory() as folder:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, folder, str(items)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        try:
            port = int(proc.stdout.readline())
            url = f"http://127.0.0.1:{port}/manifest/bench.json"
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as answer:
                body, etag = answer.read(), answer.headers["ETag"]
            full_ms = (time.perf_counter() - t0) * 1000
            assert len(json.loads(body)["items"]) == items
            idle = rss_kib(proc.pid)
            run = run_clients(port, etag, clients, seconds, proc.pid)
            latencies, errors, elapsed, loaded = asyncio.run(run)
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    print(f"manifest: {items} items, {len(body)} bytes, full GET {full_ms:.1f} ms")
    print(f"clients: {clients} asyncio keep-alive connections for {elapsed:.1f} s")
    print(f"requests: {len(latencies)} ({len(latencies) / elapsed:.0f}/s), errors: {len(errors)}")
    first = [-x for x in latencies if x < 0]
    steady = [x for x in latencies if x >= 0]
    if steady:
        p50, p99 = percentile(steady, 0.5), percentile(steady, 0.99)
        top = max(steady)
        print(f"latency: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {top * 1e3:.1f} ms")
    if first:
        slow = max(first)
        print(
            f"first answer on a new connection: p50 {percentile(first, 0.5) * 1e3:.1f} ms, "
            f"max {slow * 1e3:.1f} ms"
        )
    print(
        f"server RSS: idle {idle['VmRSS'] / 1024:.1f} MiB, "
        f"under load {loaded['VmRSS'] / 1024:.1f} MiB, peak {loaded['VmHWM'] / 1024:.1f} MiB, "
        f"threads under load {loaded['Threads']}"
    )
    for error in sorted(set(errors))[:10]:
        print(f"error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
