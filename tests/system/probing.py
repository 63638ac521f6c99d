"""Run probe.py's servers and clients inside lab machines (for tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.system.netlab import Machine

PROBE = str(Path(__file__).with_name("probe.py"))


@contextmanager
def server(host: Machine, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run a probe server in `host` until the block ends; waits for its "ready"."""
    proc = host.popen(
        [sys.executable, PROBE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        yield proc
    finally:
        proc.kill()
        proc.communicate()


def probe(host: Machine, *args: str, timeout: float = 60.0) -> str:
    """Run a probe client in `host` and return its output (it must succeed)."""
    done = host.run([sys.executable, PROBE, *args], timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def try_probe(host: Machine, *args: str, timeout: float = 60.0) -> str | None:
    """Run a probe client in `host`; its output, or None when it failed."""
    done = host.run([sys.executable, PROBE, *args], timeout=timeout)
    return done.stdout.strip() if done.returncode == 0 else None
