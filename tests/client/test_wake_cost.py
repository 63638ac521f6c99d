"""A client's wake costs the same with 10 or 5,000 placed items (issue 13).

Before, every wake read and JSON-decoded every client_items row, as often as every
20 ms. The cost is counted as SQLite's own work: statements run and virtual-machine
steps (sqlite3's progress handler), so the figure is the same on a loaded machine.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from meshmedia.client import SyncClient
from meshmedia.engine import Engine
from meshmedia.store import ClientItem, ItemState, Store
from tests.helpers import make_config

URL = "http://127.0.0.1:9/manifest/default.json"
STEP = 10  # VM instructions between two calls of the progress handler


class Work:
    """What SQLite did on one connection: statements and VM steps (in STEPs)."""

    def __init__(self) -> None:
        self.statements: list[str] = []  # numbers (times) written as N
        self.steps = 0

    def ran(self, sql: str) -> None:
        self.statements.append(re.sub(r"[0-9]+(\.[0-9]+)?", "N", sql))

    def step(self) -> int:
        self.steps += 1
        return 0  # go on


@contextmanager
def counted(db: sqlite3.Connection) -> Iterator[Work]:
    """Count the statements and VM steps `db` runs inside the block."""
    work = Work()
    db.set_trace_callback(work.ran)
    db.set_progress_handler(work.step, STEP)
    try:
        yield work
    finally:
        db.set_trace_callback(None)
        db.set_progress_handler(None, STEP)


DOWNLOADS = 3


def filled(store: Store, engine: Engine, placed: int, media: Path) -> None:
    """`placed` placed items and DOWNLOADS downloads waiting for peers (magnets nobody
    seeds), as a client that synced a library and follows a few new items holds them."""
    rows = []
    for k in range(placed):
        ih = f"{k + 1:040x}"
        item = {"title": f"t{k}", "torrent": f"magnet:?xt=urn:btih:{ih}", "path": f"f{k}.mkv"}
        rows.append(ClientItem(URL, item["path"], ih, ItemState.PLACED, item))
    for n in range(DOWNLOADS):
        ih = f"{0xD0 + n:040x}"
        magnet = f"magnet:?xt=urn:btih:{ih}&dn=wait{n}"
        engine.add_download(magnet, media / ".meshmedia" / "incomplete" / ih)
        item = {"path": f"Waiting/{n}.mkv", "torrent": magnet, "title": f"wait{n}"}
        rows.append(ClientItem(URL, item["path"], ih, ItemState.DOWNLOADING, item))
    store.save_client_items(rows)


def wake_costs(tmp_path: Path, count: int) -> tuple[Work, Work]:
    """(50 idle wakes' work, the work of the wake that starts a new item) of a client
    with `count` placed items and DOWNLOADS downloads under way."""
    config = make_config(tmp_path / str(count), "client", manifest_urls=(URL,))
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        filled(store, engine, count, config.download_dir)
        client = SyncClient(config, store, engine)
        for _ in range(20):  # the first looks: space, files in place, peers
            client.step()
        with counted(store._db) as idle:
            for _ in range(50):
                client.step()
                client.wait(0)
        item = {"title": "new", "torrent": f"magnet:?xt=urn:btih:{'e' * 40}", "path": "new.mkv"}
        store.save_client_items([ClientItem(URL, "new.mkv", None, ItemState.QUEUED, item)])
        client._active.reload()  # what apply() does after a plan: look for due items once
        with counted(store._db) as starting:
            client.step()
        assert store.count_client_items((ItemState.PLACED,)) == count
        return idle, starting


def test_a_wake_costs_the_same_with_10_or_5000_placed_items(tmp_path: Path) -> None:
    few_idle, few_start = wake_costs(tmp_path, 10)
    many_idle, many_start = wake_costs(tmp_path, 5_000)
    # Idle wakes read nothing (before: 4 statements a wake, 200 in 50, at either size).
    assert few_idle.statements == many_idle.statements == []
    # Starting an item: the same statements, about the same SQLite work (an index one
    # level deeper); reading 5,000 rows would be 5,000 * ~20 VM steps at least.
    assert many_start.statements == few_start.statements
    assert many_start.steps <= 2 * few_start.steps + 20, (few_start.steps, many_start.steps)


def test_the_counter_sees_a_read_of_every_row(tmp_path: Path) -> None:
    config = make_config(tmp_path, "client")
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        filled(store, engine, 1_000, config.download_dir)
        with counted(store._db) as work:
            assert len(store.client_items()) == 1_000 + DOWNLOADS
        assert work.steps * STEP > 1_000 * 10
        assert len(work.statements) == 1
