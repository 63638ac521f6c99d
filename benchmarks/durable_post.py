"""What a durable answer costs: POST /manifest latency by manifest size.

A 200 to `POST /manifest/<group>.json` waits until its version is on disk
(temp file, fsync, rename). This posts one new item at a time to a real server
on 127.0.0.1, on one keep-alive connection, against a manifest already holding
N items, and prints the median and the slowest answer.

    python benchmarks/durable_post.py                       # 0 and 40,000 items, 40 posts
    python benchmarks/durable_post.py --items 0 10000 --posts 100 --dir /var/tmp

Run it on the disk the curator's state dir lives on (`--dir`): tmpfs has no fsync cost.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshmedia.http import ManifestServer
from meshmedia.manifest import ManifestStore, validate_item
from tests.helpers import make_config

TOKEN = "bench-token"


def entry(path: str) -> dict[str, Any]:
    """A manifest item with its own info hash."""
    info_hash = hashlib.sha1(path.encode()).hexdigest()
    return {"title": path, "torrent": f"magnet:?xt=urn:btih:{info_hash}", "path": path}


def measure(folder: Path, items: int, posts: int) -> list[float]:
    """Seconds per POST of one new item against a manifest of `items` items."""
    store = ManifestStore(folder / "manifests")
    if items:
        store.upsert("bench", [validate_item(entry(f"Library/{n:06}.mkv")) for n in range(items)])
        store.flush()
    config = make_config(folder, port=0)
    times = []
    with ManifestServer(config, store, None, None, TOKEN) as server, requests.Session() as http:
        for n in range(posts):
            started = time.perf_counter()
            answer = http.post(
                f"{server.url}/manifest/bench.json",
                json={"items": [entry(f"New/{n:05}.mkv")]},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            )
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
    store.close()
    return times


def main() -> None:
    """Print one line per manifest size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, nargs="+", default=[0, 40_000])
    parser.add_argument("--posts", type=int, default=40)
    parser.add_argument("--dir", default=None, help="work folder (default: the temp dir)")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for items in args.items:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            times = measure(Path(tmp), items, args.posts)
        median, slowest = statistics.median(times) * 1000, max(times) * 1000
        print(f"{items:7d} items: median POST {median:7.1f} ms, slowest {slowest:7.1f} ms")


if __name__ == "__main__":
    main()
