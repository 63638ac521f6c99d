"""Shared test helpers: free ports, configs, random files, real meshmedia processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import free_port
from meshmedia.config import Config, Share


def make_config(tmp_path: Path, name: str = "node", **overrides: Any) -> Config:
    """A Config for one test node: own folders, loopback only, no DHT/LSD/UPnP/NAT-PMP."""
    base = tmp_path / name
    values: dict[str, Any] = {
        "state_dir": base / "state",
        "download_dir": base / "media",
        "shares": (Share("default", base / "share"),),
        "host": "127.0.0.1",
        "port": free_port(),
        "listen_host": "127.0.0.1",
        # libtorrent picks the ports (Engine.listen_port says which): a port free_port()
        # saw free can be another process's source port a moment later, and then the
        # seed listens elsewhere than its magnets say (a sync stalled 120 s under xdist).
        "listen_port": 0,
        "ssl_listen_port": 0,
        "status_port": free_port(),
        "dht": False,
        "lsd": False,
        "upnp": False,
        "natpmp": False,
        "min_free": 0,
        # every group public, as before issue 14 (the earlier design's tests); a test of
        # private groups says which groups are public (public=() for none)
        "public": ("*",),
    }
    values.update(overrides)
    for share in values["shares"]:
        share.path.mkdir(parents=True, exist_ok=True)
    return Config(**values)


def random_file(path: Path, size: int, seed: int | None = None) -> Path:
    """Write `size` random bytes to `path` (1 MiB blocks) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = os.urandom if seed is None else __import__("random").Random(seed).randbytes
    with path.open("wb") as out:
        left = size
        while left:
            block = min(left, 1 << 20)
            out.write(rnd(block))
            left -= block
    return path


WAIT_SCALE = float(os.environ.get("MESHMEDIA_TEST_WAIT_SCALE") or 1.0)
"""Scales every bound of `wait_for` (and `bound`); tools/mutation.py lowers it for the
watcher's mutants, where a mutant that breaks publishing made each wait run out its
20-30 s: 38 of 417 mutants in 720 s (native_notes/testing.md)."""


def bound(seconds: float) -> float:
    """`seconds` as a test's bound on a wait for a condition, scaled by WAIT_SCALE."""
    return seconds * WAIT_SCALE


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout`.

    `describe` adds context to the failure (e.g. the daemons' log tails).
    """
    timeout = bound(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}{detail}")
        time.sleep(interval)


def meshmedia_command(*args: str) -> list[str]:
    """The argv that runs the meshmedia CLI of this checkout in a child process."""
    return [sys.executable, "-m", "meshmedia", *args]


def run_meshmedia(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run `meshmedia ARGS` to completion and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        meshmedia_command(*args),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
