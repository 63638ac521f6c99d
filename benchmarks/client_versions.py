"""What a new version of a manifest in which a few items changed costs the client.

    .venv/bin/python -m benchmarks.client_versions [--sizes 100,1000,5000] [--versions 8]

A SyncClient with a real Engine applies version 1 of an N-item manifest, then
`--versions` versions each changing CHANGED items (a new size), adding one and
dropping one, as a curator's publish burst sends them. Measured: CPU time of the
applying thread (time.thread_time: the machine is shared, wall time moves with it)
per version, by stage, median over the versions, for

- before: every item validated (parse_manifest) and planned (a full plan), what
  the client did until issue 15;
- after: the client's ItemCache and the planner's plan of only what changed.

Printed with the ratio before / after and the load average. Not asserted anywhere;
tests/client/test_versions.py counts the same work deterministically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshmedia.client import SyncClient
from meshmedia.client import plan as plan_module
from meshmedia.client import versions as versions_module
from meshmedia.client.versions import ItemCache
from meshmedia.engine import Engine
from meshmedia.store import Store
from tests.helpers import make_config

URL = "http://127.0.0.1:9/manifest/default.json"
CHANGED = 3
STAGES = ("load", "parse", "plan", "keep", "apply")


class FullParse(ItemCache):
    """The parsing before issue 15: every item validated again."""

    def parse(self, doc: Any, *, one_place_per_torrent: bool = True) -> tuple[Any, list[Any]]:
        """parse_manifest itself (looked up in plan.py, where `timed` wraps it)."""
        return plan_module.parse_manifest(doc, one_place_per_torrent=one_place_per_torrent)


def body(count: int, version: int) -> bytes:
    """Version `version` of the manifest: items `version`..`count + version - 1`, the
    CHANGED items after the first given a size of this version, as the curator sends it."""
    items = []
    for n in range(version, count + version):
        size = 1000 + (version if version <= n < version + CHANGED else 0)
        items.append({
            "path": f"d{n % 100}/f{n}.mkv",
            "size": size,
            "title": f"f{n}",
            "torrent": f"magnet:?xt=urn:btih:{n + 1:040x}&dn=f{n}",
        })  # fmt: skip
    doc = {"group": "default", "version": version, "updated_at": "x", "items": items}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@contextmanager
def timed(spent: dict[str, float]) -> Iterator[None]:
    """Add the CPU time of each stage of an apply to `spent`, by wrapping its functions."""
    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, stage: str) -> None:
        real = getattr(owner, name)

        def measured(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                spent[stage] += time.thread_time() - start

        originals.append((owner, name, real))
        setattr(owner, name, measured)

    wrap(plan_module, "load_document", "load")
    wrap(plan_module.ItemPlanner, "plan", "plan")
    wrap(plan_module, "parse_manifest", "parse")  # before: read_manifest calls it
    wrap(versions_module.ItemCache, "parse", "parse")
    wrap(sys.modules["meshmedia.client.sync"], "keep_manifest", "keep")
    try:
        yield
    finally:
        for owner, name, real in reversed(originals):
            setattr(owner, name, real)


def measure(count: int, versions: int, before: bool) -> dict[str, float]:
    """Median ms of CPU per version, by stage, for an N-item manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), "client", manifest_urls=(URL,))
        with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
            client = SyncClient(config, store, engine)
            if before:
                client._item_caches[URL] = FullParse()
            assert client.apply(URL, body(count, 1))
            runs: dict[str, list[float]] = defaultdict(list)
            for version in range(2, versions + 2):
                data = body(count, version)
                if before:
                    client._planner.forget()
                spent: dict[str, float] = defaultdict(float)
                with timed(spent):
                    start = time.thread_time()
                    assert client.apply(URL, data)
                    spent["apply"] = time.thread_time() - start
                for stage in STAGES:
                    runs[stage].append(spent[stage] * 1e3)
            return {stage: statistics.median(runs[stage]) for stage in STAGES}


def main() -> None:
    """Print before, after and the ratio for each size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--versions", type=int, default=8)
    args = parser.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{CHANGED} items changed, 1 added, 1 gone per version; ms of CPU per version")
    print("items   mode    " + "  ".join(f"{s:>7}" for s in STAGES) + "   ratio")
    for count in (int(s) for s in args.sizes.split(",")):
        old, new = measure(count, args.versions, True), measure(count, args.versions, False)
        for name, figures in (("before", old), ("after", new)):
            cells = "  ".join(f"{figures[s]:7.1f}" for s in STAGES)
            ratio = f"  {old['apply'] / new['apply']:5.1f}x" if name == "after" else ""
            print(f"{count:<7} {name:<7} {cells}{ratio}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
