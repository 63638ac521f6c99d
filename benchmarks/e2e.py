"""End-to-end latency of meshmedia: a drop on the curator until the file is in a client's library.

A real `meshmedia serve` and a real `meshmedia sync` (the long-running daemon,
which long-polls the manifest) run as child processes on 127.0.0.1 with DHT,
LSD, UPnP and NAT-PMP off. Each run writes a new random file in a staging folder
on the same file system, renames it into the share (the drop), and measures the
time until the file exists, complete, at its final path in the client's
download dir (1 ms stat loop; the client renames it there only once verified).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Processes, drop, free_port, random_file, wait_path, wait_until

NETWORK = ("--listen-host", "127.0.0.1", "--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp")


def answers(url: str) -> object:
    """The JSON at `url`, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())
    except OSError:
        return None


def timeout_for(size: int) -> float:
    """A generous per-run limit: 60 s plus 10 MB/s."""
    return 60 + size / 10e6


class DropSystem:
    """One system under test: start() once, then deliver() a staged file per run."""

    name = ""

    def start(self, base: Path) -> None:
        """Start the processes, with their folders under `base`."""
        raise NotImplementedError

    def deliver(self, staged: Path, size: int) -> float:
        """Drop `staged` and return the seconds until it is complete on the other side."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop every process."""
        raise NotImplementedError


class Meshmedia(DropSystem):
    """`meshmedia serve` + `meshmedia sync` on loopback."""

    name = "meshmedia"

    def __init__(self, log_level: str = "WARNING", command: list[str] | None = None) -> None:
        self.procs = Processes()
        self.log_level = log_level  # INFO: serve.log and sync.log show where the time goes
        self.command = command or [sys.executable, "-m", "meshmedia"]  # e2e_breakdown's patches
        self.http = 0

    def start(self, base: Path) -> None:
        """Start the curator, wait for its health answer, then start the client."""
        self.share, self.media = base / "share", base / "media"
        self.share.mkdir(parents=True)
        http = self.http = self.http or free_port()
        mm = self.command
        self.procs.start(
            [*mm, "serve", "--share", f"default={self.share}", "--state-dir", str(base / "cs"),
             "--host", "127.0.0.1", "--port", str(http), "--listen-port", str(free_port()),
             "--public", "default", "--log-level", self.log_level, *NETWORK],
            log=base / "serve.log",
        )  # fmt: skip
        wait_until(lambda: answers(f"http://127.0.0.1:{http}/"), 60, "meshmedia serve")
        self.procs.start(
            [*mm, "sync", "--manifest-url", f"http://127.0.0.1:{http}/manifest/default.json",
             "--download-dir", str(self.media), "--state-dir", str(base / "ss"),
             "--listen-port", str(free_port()), "--status-port", str(free_port()),
             "--min-free", "0", "--log-level", self.log_level, *NETWORK],
            log=base / "sync.log",
        )  # fmt: skip

    def deliver(self, staged: Path, size: int) -> float:
        """Rename into the share; wait for `<download-dir>/<name>`."""
        started = drop(staged, self.share / staged.name)
        done = wait_path(self.media / staged.name, size, timeout_for(size), self.procs.alive)
        return done - started

    def close(self) -> None:
        """SIGTERM the client, then the curator."""
        self.procs.close()


def measure(
    system: DropSystem,
    base: Path,
    sizes: list[int],
    runs: int,
    log: Callable[[str], None],
    *,
    sync: bool = False,
) -> dict[int, list[float]]:
    """Start `system`, deliver one warm-up file, then `runs` fresh files of each size.

    Returns the seconds of each run by size. The warm-up (64 KiB) proves the two
    sides are connected and is not counted. `sync`: flush the disk before each new
    file is written (each 1 GiB run leaves 2 GiB to write back, which slowed the runs
    after it by 1-3 s on this VM). Always stops the system.
    """
    staging = base / "staging"
    results: dict[int, list[float]] = {size: [] for size in sizes}
    try:
        system.start(base / "sys")
        warm = random_file(staging / "warmup.bin", 64 << 10)
        log(f"{system.name}: warm-up {system.deliver(warm, 64 << 10):.2f} s")
        for size in sizes:
            for run in range(runs):
                if sync:
                    os.sync()
                staged = random_file(staging / f"drop-{size}-{run}.bin", size)
                time.sleep(0.5)  # let the writeback of the new file start before timing
                seconds = system.deliver(staged, size)
                results[size].append(seconds)
                log(f"{system.name}: {size:,} bytes, run {run + 1}: {seconds:.3f} s")
    finally:
        system.close()
    return results
