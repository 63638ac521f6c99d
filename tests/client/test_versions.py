"""A new version of a manifest costs the client the items that changed (issue 15).

Counted, not timed: calls of validate_item, the rows the planner reads. Every rule on
hostile input still holds for a changed item, and the whole-document rules (paths
across items, one place per torrent) still run over the unchanged ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshmedia.bounded import load_json
from meshmedia.client import SyncClient
from meshmedia.client import versions as versions_module
from meshmedia.client.versions import ItemCache, item_key
from meshmedia.engine import Engine
from meshmedia.manifest import parse_manifest, validate_item
from meshmedia.store import ClientItem, Store
from tests.helpers import make_config

URL = "http://127.0.0.1:9/manifest/default.json"


def _item(n: int, **changes: Any) -> dict[str, Any]:
    item = {"path": f"d{n % 3}/f{n}.mkv", "size": 1000 + n, "title": f"f{n}"}
    item["torrent"] = f"magnet:?xt=urn:btih:{n + 1:040x}&dn=f{n}"
    item.update(changes)
    return item


def _doc(version: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"group": "default", "version": version, "updated_at": "x", "items": items}


def _body(version: int, items: list[dict[str, Any]]) -> bytes:
    return json.dumps(_doc(version, items)).encode()


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every item that validate_item is called with, through the client's cache."""
    seen: list[object] = []

    def counting(obj: object) -> Any:
        seen.append(obj)
        return validate_item(obj)

    monkeypatch.setattr(versions_module, "validate_item", counting)
    return seen


def _same(cache: ItemCache, doc: dict[str, Any]) -> None:
    """The cache's answer is parse_manifest's: the same items, the same reasons."""
    want, want_rejected = parse_manifest(doc, one_place_per_torrent=True)
    got, got_rejected = cache.parse(doc)
    assert got == want
    assert [str(r) for r in got_rejected] == [str(r) for r in want_rejected]
    assert [r.path for r in got_rejected] == [r.path for r in want_rejected]


# Each a later version's item 1 (the earlier one's is _item(1)), refused though every
# one of them equals the earlier item as a Python value or nearly so.
HOSTILE = [
    _item(1, size=True),  # True == 1 in Python; json writes it apart
    _item(1, size=1001.0),  # 1001.0 == 1001
    _item(1, path="../f1.mkv"),
    _item(1, path="d1/f1.mkv\n"),
    _item(1, torrent="magnet:?xt=urn:btih:nothex"),
    _item(1, title=1),
    _item(1, files=[{"path": "a", "size": 1001}]),
    "d1/f1.mkv",
]


@pytest.mark.parametrize("bad", HOSTILE, ids=range(len(HOSTILE)))
def test_a_changed_hostile_item_is_refused_with_its_reason_and_the_others_kept(
    bad: object, validations: list[object]
) -> None:
    cache = ItemCache()
    items = [_item(n) for n in range(10)]
    _same(cache, _doc(1, items))
    assert len(validations) == 10
    validations.clear()
    _same(cache, _doc(2, [*items[:1], bad, *items[2:]]))
    assert validations == [bad]  # only the changed item was validated again
    manifest, rejected = cache.parse(_doc(3, [*items[:1], bad, *items[2:]]))
    assert [r.index for r in rejected] == [1]
    assert len(manifest.items) == 9


def test_unchanged_items_still_meet_the_rules_across_items(validations: list[object]) -> None:
    cache = ItemCache()
    items = [_item(n) for n in range(6)]
    _same(cache, _doc(1, items))
    validations.clear()
    again = dict(items[2])  # the same text as an item validated: from the cache
    other_place = _item(2, path="elsewhere/f2.mkv")  # item 2's torrent at another path
    inside = _item(40, path="d0/f0.mkv/extra.mkv")  # inside item 0's path
    _same(cache, _doc(2, [*items, again, other_place, inside]))
    _, rejected = cache.parse(_doc(2, [*items, again, other_place, inside]))
    assert [r.reason for r in rejected] == [
        "path is already used by item 2",
        f"its torrent {2 + 1:040x} is already listed at 'd2/f2.mkv'",
        "path lies inside item 0 ('d0/f0.mkv')",
    ]


def test_the_top_level_rules_and_bounds_hold_as_parse_manifest_has_them() -> None:
    cache = ItemCache()
    cache.parse(_doc(1, [_item(n) for n in range(3)]))
    for doc in (
        {"group": "default"},
        {"group": "", "items": []},
        {"group": "g", "items": {}},
        {"group": "g", "version": -1, "items": []},
        {"group": "g", "items": [], "x": "\ud800"},
    ):
        with pytest.raises(Exception) as want:
            parse_manifest(doc, one_place_per_torrent=True)
        with pytest.raises(type(want.value), match=str(want.value)[:20].replace("(", ".")):
            cache.parse(doc)


def test_the_cache_holds_only_the_last_version(validations: list[object]) -> None:
    cache = ItemCache()
    cache.parse(_doc(1, [_item(n) for n in range(5)]))
    cache.parse(_doc(2, [_item(n) for n in range(5, 10)]))
    validations.clear()
    cache.parse(_doc(3, [_item(n) for n in range(5)]))
    assert len(validations) == 5


@pytest.mark.parametrize(
    "texts",
    [
        ('{"a":1}', '{"a":true}', '{"a":1.0}', '{"a":"1"}'),
        ('{"a":0.0}', '{"a":-0.0}'),
        ('{"a":1,"b":2}', '{"b":2,"a":1}'),
        ('{"a":null}', '{"a":"None"}', '{"a":[]}', '{"a":"[]"}', '{"a":{}}'),
        ('{"a":"x\'y"}', '{"a":"x\\"y"}', '{"a":"\\ud800"}', '{"a":"\\\\ud800"}'),
    ],
)
def test_items_that_differ_as_json_have_different_keys(texts: tuple[str, ...]) -> None:
    keys = {item_key(load_json(text)) for text in texts}
    assert len(keys) == len(texts)


# -- through the client --------------------------------------------------------------
@pytest.fixture
def client(tmp_path: Path) -> Iterator[SyncClient]:
    config = make_config(tmp_path, "client", manifest_urls=(URL,))
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        yield SyncClient(config, store, engine)


class _Reads:
    """The rows the planner reads from `store`."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        for name in ("client_items", "client_items_at"):
            real = getattr(store, name)

            def counted(*args: Any, _real: Any = real) -> list[ClientItem]:
                found: list[ClientItem] = _real(*args)
                self.rows += len(found)
                return found

            monkeypatch.setattr(store, name, counted)


def _rows(client: SyncClient) -> list[tuple[str, str, str, str | None]]:
    return [
        (ci.path, ci.state.value, json.dumps(ci.item, sort_keys=True), ci.error)
        for ci in client.store.client_items(URL)
    ]


def test_a_version_with_a_few_changes_costs_those_items(
    client: SyncClient, validations: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [_item(n) for n in range(50)]
    assert client.apply(URL, _body(1, items))
    validations.clear()
    reads = _Reads(client.store, monkeypatch)
    later = [*items[:3], _item(3, size=7), _item(4, size=True), *items[5:49], _item(60)]
    assert client.apply(URL, _body(2, later))  # 3 changed, 4 hostile, 49 gone, 60 new
    assert len(validations) == 3
    assert reads.rows == 3  # rows at 3, 4 and 49 (60 has none)
    reason = "size must be a whole number of bytes >= 0, got True"
    assert client.rejected[URL] == [f"item 4 (d1/f4.mkv): {reason}"]
    paths = [row[0] for row in _rows(client)]
    assert "d1/f49.mkv" not in paths
    assert "d0/f60.mkv" in paths
    assert "d1/f4.mkv" in paths  # still listed, only invalid now: kept
    assert json.loads(next(r[2] for r in _rows(client) if r[0] == "d0/f3.mkv"))["size"] == 7


def _versions() -> list[list[dict[str, Any]]]:
    base = [_item(n) for n in range(12)]
    return [
        base,
        [*base[:2], _item(2, size=5), *base[3:11]],  # one changed, 11 gone
        [*base[:2], _item(2, size=True), *base[3:11], _item(11)],  # 2 rejected, 11 back
        [*base[:4], {"title": "no path"}, *base[5:9]],  # a rejection without a path
        [*base[:4], *base[5:9]],  # now 4, 9 and 10 are gone
        [*base[:6], _item(20, path="d0/f0.mkv")],  # a repeated path
        [*base[1:6], _item(0, size=0)],
    ]


def test_planning_only_what_changed_leaves_the_rows_a_full_plan_leaves(
    tmp_path: Path,
) -> None:
    """Two clients take the same versions; one plans each in full (forget())."""
    results = []
    for full in (False, True):
        config = make_config(tmp_path / str(full), "client", manifest_urls=(URL,))
        with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
            client = SyncClient(config, store, engine)
            seen = []
            for version, items in enumerate(_versions(), start=1):
                if full:
                    client._planner.forget()
                client.apply(URL, _body(version, items))
                seen.append((_rows(client), client.rejected[URL]))
            results.append(seen)
    assert results[0] == results[1]
