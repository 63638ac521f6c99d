"""The state database: transactions it owns, and lookups that touch only the rows they need."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshmedia.store import CatalogEntry, ClientItem, ItemState, ResumeRecord, Store
from meshmedia.store.database import ROWS_A_STATEMENT


def fill(store: Store, count: int) -> None:
    """`count` published items and `count` client items (10 of them downloading)."""
    with store.transaction():
        for n in range(count):
            source = f"/share/Show {n}/ep{n}.mkv"
            item = {"path": f"Show {n}/ep{n}.mkv", "title": f"ep{n}"}
            store.save_catalog(CatalogEntry("default", item["path"], f"{n:040x}", source, item))
        store.save_client_items(
            [
                ClientItem(
                    "http://c/m.json",
                    f"Show/ep{n}.mkv",
                    f"{n:040x}",
                    ItemState.DOWNLOADING if n < 10 else ItemState.PLACED,
                    {"path": f"Show/ep{n}.mkv", "torrent": "magnet:?xt=urn:btih:" + f"{n:040x}"},
                )
                for n in range(count)
            ]
        )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """A store of 10 items and one of 3,000."""
    with Store(tmp_path / "small.db") as small, Store(tmp_path / "large.db") as large:
        fill(small, 10)
        fill(large, 3000)
        yield small, large


def vm_steps(store: Store, call: Callable[[Store], Any]) -> int:
    """SQLite virtual-machine instructions `call` makes the store run."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._db.set_progress_handler(count, 1)
    try:
        call(store)
    finally:
        store._db.set_progress_handler(None, 1)
    return steps[0]


LOOKUPS: dict[str, Callable[[Store], Any]] = {
    "catalog_entry": lambda s: s.catalog_entry("default", "Show 7/ep7.mkv"),
    "catalog_under": lambda s: s.catalog_under("/share/Show 7"),
    "catalog_uses": lambda s: s.catalog_uses(f"{7:040x}"),
    "client_item": lambda s: s.client_item("http://c/m.json", "Show/ep7.mkv"),
    "client_items_with_hash": lambda s: s.client_items_with_hash(f"{7:040x}"),
    "downloading": lambda s: s.client_items_in((ItemState.DOWNLOADING,)),
    "due": lambda s: s.client_items_in((ItemState.QUEUED, ItemState.FAILED), due_by=1e12),
    "count": lambda s: s.count_client_items((ItemState.QUEUED, ItemState.DOWNLOADING)),
}


@pytest.mark.parametrize("name", LOOKUPS)
def test_a_lookup_costs_the_same_with_300_times_the_rows(
    stores: tuple[Store, Store], name: str
) -> None:
    small, large = stores
    lookup = LOOKUPS[name]
    assert lookup(small) == lookup(large)
    few, many = vm_steps(small, lookup), vm_steps(large, lookup)
    # B-tree searches grow with log(rows); a scan (in SQL or in Python) with the rows.
    assert many <= 2 * few + 500, (few, many)


def test_a_transaction_commits_all_or_nothing_and_nests(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:

        def fail_half_way() -> None:
            with store.transaction():
                store.put("a", "1")
                with store.transaction():  # joins the outer one
                    store.put("b", "2")
                raise RuntimeError("the work failed")

        with pytest.raises(RuntimeError):
            fail_half_way()
        assert (store.get("a"), store.get("b")) == (None, None)
        with store.transaction():
            store.put("a", "1")
            store.put("b", "2")
        assert (store.get("a"), store.get("b")) == ("1", "2")
        other = sqlite3.connect(tmp_path / "s.db")  # what another connection sees: committed
        assert other.execute("SELECT COUNT(*) FROM kv").fetchone() == (2,)
        other.close()


def test_the_catalog_is_found_by_source_folder_and_by_torrent(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        for source in ("/s/A", "/s/A/x.mkv", "/s/A-B/y.mkv", "/s/AB", "/s/A/sub/z.mkv"):
            store.save_catalog(CatalogEntry("g", source[3:], source[-1] * 40, source, {}))
        assert sorted(e.source for e in store.catalog_under("/s/A")) == [
            "/s/A",
            "/s/A/sub/z.mkv",
            "/s/A/x.mkv",
        ]
        assert store.catalog_uses("v" * 40)
        assert not store.catalog_uses("q" * 40)
        assert store.catalog_sources() == sorted(store.catalog_sources())


def test_rows_saved_many_at_once_are_all_there_across_statements(tmp_path: Path) -> None:
    """Batches are written ROWS_A_STATEMENT rows an INSERT (executemany let go of the GIL
    for every row): 1,201 rows are three statements, and every row comes back as saved,
    a second save of the same keys replacing them."""
    count = 2 * ROWS_A_STATEMENT + 201
    with Store.in_state_dir(tmp_path / "state") as store:
        for version in (1, 2):
            store.save_catalogs(
                [CatalogEntry("g", f"p{k:04d}", f"{k:040x}", f"/s/{k}", {"v": version, "k": k})
                 for k in range(count)]
            )  # fmt: skip
            store.save_torrents([(f"{k:040x}", bytes([version, k % 256])) for k in range(count)])
            store.save_resumes(
                [ResumeRecord(f"{k:040x}", b"r%d" % version, "seed", ((k, version),))
                 for k in range(count)]
            )  # fmt: skip
            store.save_client_items(
                [ClientItem("u", f"p{k:04d}", None, ItemState.QUEUED, {"k": k}, attempts=version)
                 for k in range(count)]
            )  # fmt: skip
        catalog = store.catalog("g")
        assert [e.item for e in catalog] == [{"v": 2, "k": k} for k in range(count)]
        kept = store.torrents_kept([f"{k:040x}" for k in range(count)])
        assert kept == {f"{k:040x}": bytes([2, k % 256]) for k in range(count)}
        resumes = {r.info_hash: r for r in store.load_resume()}
        assert len(resumes) == count
        assert resumes[f"{count - 1:040x}"].files == ((count - 1, 2),)
        items = store.client_items()
        assert len(items) == count
        assert {i.attempts for i in items} == {2}
