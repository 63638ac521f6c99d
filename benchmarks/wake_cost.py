"""What one wake of the client's main loop costs with 10 and with 5,000 placed items.

A wake is `step()` then `wait(0)`, as the daemon's loop runs them (on every engine
event, and every 20 ms while a finished download waits to be placed). The client
holds three downloads that wait for peers (magnets nobody seeds) besides the placed
items (tests/client/test_wake_cost.py counts the same). Printed, the best of
`--rounds` (the two sizes alternate): microseconds per wake, SQL statements and
SQLite VM instructions per wake, and the ratio 5,000 / 10.

    python benchmarks/wake_cost.py [--wakes 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshmedia.client import SyncClient
from meshmedia.engine import Engine
from meshmedia.store import Store
from tests.client.test_wake_cost import URL, filled
from tests.helpers import make_config


def measure(placed: int, wakes: int) -> tuple[float, float, float]:
    """(microseconds, SQL statements, VM instructions) per wake."""
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), "client", manifest_urls=(URL,))
        with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
            filled(store, engine, placed, config.download_dir)
            client = SyncClient(config, store, engine)
            for _ in range(20):  # the first looks: space, files in place, peers
                client.step()
            statements: list[str] = []
            steps = [0]

            def count() -> int:
                steps[0] += 1
                return 0

            store._db.set_trace_callback(statements.append)
            store._db.set_progress_handler(count, 100)
            started = time.perf_counter()
            for _ in range(wakes):
                client.step()
                client.wait(0)
            elapsed = time.perf_counter() - started
            store._db.set_trace_callback(None)
            store._db.set_progress_handler(None, 100)
    return elapsed / wakes * 1e6, len(statements) / wakes, steps[0] * 100 / wakes


def main() -> None:
    """Print the figures for 10 and 5,000 placed items."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wakes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; best of {args.rounds} x {args.wakes} wakes")
    rounds = [[measure(placed, args.wakes) for placed in (10, 5000)] for _ in range(args.rounds)]
    results = {placed: min(r[column] for r in rounds) for column, placed in enumerate((10, 5000))}
    for placed, (micro, sql, vm) in results.items():
        print(f"{placed:>5} placed: {micro:8.1f} us/wake  {sql:6.2f} SQL/wake  {vm:9.0f} VM/wake")
    (small, _, _), (large, _, _) = results[10], results[5000]
    print(f"ratio 5000/10: {large / small:.2f}x time per wake")


if __name__ == "__main__":
    main()
