"""Run `meshmedia` with hooks for benchmarks/memory.py: tracemalloc snapshots, malloc_trim.

    python -m benchmarks.memtrace SNAPSHOT_PATH serve ...

SIGUSR1 writes tracemalloc's snapshot (12 frames) to SNAPSHOT_PATH and a line
`python_traced <current> <peak>` to SNAPSHOT_PATH.txt (tracemalloc runs only when
MM_TRACEMALLOC=1). SIGUSR2 calls glibc's malloc_trim(0) and writes
`trim <rss before KiB> <rss after KiB> <seconds>` to SNAPSHOT_PATH.trim.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType


def rss_kib() -> int:
    """This process's RSS in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    """Install the hooks, run the meshmedia command line."""
    target = Path(sys.argv[1])
    if os.environ.get("MM_TRACEMALLOC") == "1":
        tracemalloc.start(12)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        current, peak = tracemalloc.get_traced_memory()
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(target))
        target.with_suffix(".txt").write_text(f"python_traced {current} {peak}\n")

    def trim(_signum: int, _frame: FrameType | None) -> None:
        before, started = rss_kib(), time.perf_counter()
        ctypes.CDLL(None).malloc_trim(0)
        took = time.perf_counter() - started
        target.with_suffix(".trim").write_text(f"trim {before} {rss_kib()} {took:.4f}\n")

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, trim)
    sys.argv = ["meshmedia", *sys.argv[2:]]
    from meshmedia.cli import main as cli_main  # noqa: PLC0415 (after tracemalloc starts)

    cli_main()


if __name__ == "__main__":
    main()
