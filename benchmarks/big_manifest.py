"""How the client copes with a large manifest: time to apply, one main-loop step, status, RSS.

    .venv/bin/python -m benchmarks.big_manifest [--items 100000]

Builds a manifest of N magnet items (no reachable peers), applies it to a
SyncClient with a real Engine in a temporary folder, and prints the figures with
the load average (the machine is shared). Not asserted anywhere: issue 12's
bound is 100,000 items; see native_notes/client.md for the figures before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshmedia.client import SyncClient
from meshmedia.engine import Engine
from meshmedia.process import tune_malloc
from meshmedia.store import Store
from tests.helpers import make_config

URL = "http://127.0.0.1:9/manifest/default.json"


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    """Print apply, step and status times and the RSS for one manifest size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    count = parser.parse_args().items
    body = json.dumps(
        {
            "group": "default",
            "version": 1,
            "items": [
                {
                    "path": f"d{n % 100}/f{n}.mkv",
                    "size": 1000,
                    "torrent": f"magnet:?xt=urn:btih:{n + 1:040x}&dn=f{n}&x.pe=127.0.0.1:9",
                }
                for n in range(count)
            ],
        }
    ).encode()
    tune_malloc()  # as `meshmedia sync` does at start-up
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), "client", manifest_urls=(URL,))
        with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
            client = SyncClient(config, store, engine)
            before = _vm("VmRSS")
            start = time.monotonic()
            assert client.apply(URL, body)
            applied = time.monotonic() - start
            start = time.monotonic()
            client.step()
            stepped = time.monotonic() - start
            start = time.monotonic()
            client.status_json()
            status = time.monotonic() - start
            torrents = len(engine.snapshot().torrents)
            print(f"items {count}, manifest {len(body) / 1e6:.1f} MB")
            print(f"apply {applied:.2f} s, step {stepped:.3f} s, status {status:.2f} s")
            print(f"torrents in the engine {torrents}")
            print(f"RSS {before} -> {_vm('VmRSS')} MiB, peak {_vm('VmHWM')} MiB")
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
