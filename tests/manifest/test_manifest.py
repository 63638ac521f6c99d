"""The manifest format and the curator's ManifestStore, on real files in tmp_path."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from meshmedia.errors import ManifestError
from meshmedia.manifest import (
    Item,
    ManifestStore,
    check_relative_path,
    magnet_info_hash,
    parse_manifest,
    validate_item,
)
from tests.helpers import run_meshmedia

IH = "0123456789abcdef0123456789abcdef01234567"
MAGNET = f"magnet:?xt=urn:btih:{IH}&dn=clip"
SEED_FORMAT = {
    "group": "family",
    "items": [
        {
            "title": "Spirited Away (2001)",
            "torrent": MAGNET,
            "path": "Spirited Away (2001)/Spirited Away.mkv",
            "sha256": "ab" * 32,
        }
    ],
}


def item(path: str, **fields: object) -> Item:
    return validate_item({"title": path, "torrent": MAGNET, "path": path, **fields})


def test_the_earlier_format_is_accepted_unchanged() -> None:
    manifest, rejected = parse_manifest(json.dumps(SEED_FORMAT))
    assert rejected == []
    assert manifest.group == "family"
    assert manifest.version == 0
    (only,) = manifest.items
    assert only.path == "Spirited Away (2001)/Spirited Away.mkv"
    assert only.sha256 == "ab" * 32
    assert only.info_hash == IH


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("a/../../b", "'..' segment"),
        ("..", "'..' segment"),
        ("./a", "'.' segment"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("", "empty"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\x1fb", "control character"),
        ("a\x7fb", "control character"),  # DEL
        ("a\x80b", "control character"),  # C1, first
        ("a\x85b", "control character"),  # NEL, a line break to some readers
        ("a\x9fb", "control character"),  # C1, last
        ("C:/x.mkv", "drive letter"),
        ("c:x.mkv", "drive letter"),
        ("a\\b.mkv", "backslash"),
        ("x" * 256, "over 255 bytes"),
        ("bad\ud800.mkv", "lone surrogate"),
        ("a/\udfff", "lone surrogate"),
    ],
)
def test_unsafe_paths_are_refused_with_the_reason(path: str, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        check_relative_path(path)


@pytest.mark.parametrize(
    "path", ["a.mkv", "Film: Part 2 (2001)/a b.mkv", "a/b/c..d/é.mkv", "a~ \xa0b.mkv", " x"]
)
def test_safe_paths_pass(path: str) -> None:
    assert check_relative_path(path) == path


def test_bad_items_are_skipped_one_by_one_with_names_and_reasons() -> None:
    doc = {
        "group": "g",
        "items": [
            {"title": "ok", "torrent": MAGNET, "path": "ok.mkv"},
            {"title": "evil", "torrent": MAGNET, "path": "../evil.mkv"},
            {"title": "no hash", "torrent": "magnet:?dn=x", "path": "x.mkv"},
            {"title": "ftp", "torrent": "ftp://host/a.torrent", "path": "y.mkv"},
            {"title": "sha", "torrent": MAGNET, "path": "s.mkv", "sha256": "xyz"},
            {"title": "size", "torrent": MAGNET, "path": "n.mkv", "size": -1},
            {"title": "xxh", "torrent": MAGNET, "path": "h.mkv", "xxh3": "12"},
            {"title": "dup", "torrent": MAGNET, "path": "ok.mkv"},
            "not an object",
            {"title": "url", "torrent": "https://curator:5000/t/a.torrent", "path": "u.mkv"},
        ],
    }
    manifest, rejected = parse_manifest(doc)
    assert [i.path for i in manifest.items] == ["ok.mkv", "u.mkv"]
    reasons = {r.index: (r.name, r.reason) for r in rejected}
    assert reasons[1] == ("../evil.mkv", "path has a '..' segment")
    assert "xt=urn:btih" in reasons[2][1]
    assert "http(s)" in reasons[3][1]
    assert reasons[4][0] == "s.mkv"
    assert "64 hex" in reasons[4][1]
    assert ">= 0" in reasons[5][1]
    assert "32 hex" in reasons[6][1]
    assert reasons[7] == ("ok.mkv", "path is already used by item 0")
    assert reasons[8] == ("#8", "an item must be an object, not str")
    assert str(rejected[0]) == "item 1 (../evil.mkv): path has a '..' segment"


def test_base32_magnets_and_multiple_xt_are_understood() -> None:
    b32 = "AERUKZ4JVPG66AJDIVTYTK6N54ASGRLH"  # IH in base32
    assert magnet_info_hash(f"magnet:?xt=urn:btih:{b32}&dn=x") == IH
    assert magnet_info_hash(f"magnet:?xt=urn:btih:{b32.lower()}") == IH
    two = f"magnet:?xt=urn:btmh:1220{'0' * 64}&xt=urn:btih:{IH.upper()}"
    assert magnet_info_hash(two) == IH


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{nope", "not JSON: Expecting property name"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'{"group": "g", "items": {}}', "'items' must be a list, not dict"),
        (b'{"group": "g"}', "'items' is missing"),
        (b'{"items": []}', "'group' must be a non-empty string"),
        (b'{"group": "g", "items": [], "version": -3}', "'version'"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 200_000, "nested deeper than 32 levels"),
        (b'{"group": "g", "items": [], "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper"),
        (b'{"group": "g", "items": [], "version": 1' + b"0" * 100 + b"}", "a number of 101 digits"),
        (b'{"group": "g", "items": [], "version": NaN}', "NaN is not a JSON number"),
        (b'{"group": "g\\ud800", "items": []}', "lone surrogate"),
        (b"{" + b" " * (17 * 1024 * 1024) + b"}", "over the cap of 16777216"),
    ],
)
def test_a_document_that_is_not_a_manifest_raises_a_precise_error(data: bytes, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        parse_manifest(data)


def test_unknown_fields_survive_a_round_trip_and_serialization_is_canonical() -> None:
    doc = {
        "items": [{"path": "a.mkv", "torrent": MAGNET, "title": "A", "poster": "p.jpg"}],
        "group": "g",
        "version": 3,
        "updated_at": "2026-11-24T21:00:00Z",
        "comment": "hi",
    }
    manifest, _ = parse_manifest(doc)
    again, _ = parse_manifest(manifest.dumps())
    assert again == manifest
    assert json.loads(manifest.dumps())["items"][0]["poster"] == "p.jpg"
    assert json.loads(manifest.dumps())["comment"] == "hi"
    reordered, _ = parse_manifest(json.dumps(dict(reversed(doc.items()))))
    assert reordered.dumps() == manifest.dumps()
    assert reordered.etag == manifest.etag
    assert manifest.etag.startswith('"')
    assert manifest.etag.endswith('"')


def test_store_versions_merge_noop_and_atomic_files(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "manifests")
    empty = store.get("family")
    assert (empty.version, empty.items) == (0, ())
    assert store.groups() == []
    one = store.upsert("family", [item("a.mkv"), item("b.mkv")])
    assert one.version == 1
    assert one.updated_at.endswith("Z")
    assert all(i.added_at for i in one.items)
    assert store.upsert("family", [item("a.mkv")]) is one  # no-op: added_at kept
    two = store.upsert("family", [item("a.mkv", size=5), item("c.mkv")])
    assert two.version == 2
    assert [(i.path, i.size) for i in two.items] == [("a.mkv", 5), ("b.mkv", None), ("c.mkv", None)]
    three = store.remove("family", ["b.mkv", "nope.mkv"])
    assert [i.path for i in three.items] == ["a.mkv", "c.mkv"]
    four = store.replace("family", [item("z.mkv")])
    assert (four.version, [i.path for i in four.items]) == (4, ["z.mkv"])
    assert store.groups() == ["family"]
    store.flush()
    on_disk = tmp_path / "manifests" / "family.json"
    assert on_disk.read_bytes() == four.dumps()
    left = sorted(p.name for p in on_disk.parent.iterdir())
    assert left == [".versions", "family.json"]  # no temp files left
    store.close()  # a clean stop: the next start reads the same version back
    reopened = ManifestStore(tmp_path / "manifests").get("family")
    assert reopened == four
    assert reopened.etag == four.etag
    with pytest.raises(ManifestError, match="not valid"):
        store.get("../etc")


def test_store_reads_a_file_in_the_earlier_format(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    doc = {**SEED_FORMAT, "items": [*SEED_FORMAT["items"], {"path": "/abs", "torrent": MAGNET}]}
    (folder / "family.json").write_text(json.dumps(doc))
    store = ManifestStore(folder)
    manifest = store.get("family")
    assert manifest.version == 0
    assert len(manifest.items) == 1
    assert store.upsert("family", [item("new.mkv")]).version == 1


class _ParkedCondition(threading.Condition):
    """A Condition that says when someone is parked in wait() (the store's wake-up path)."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.parked = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.parked.set()
        return super().wait(timeout)


def test_wait_for_change_returns_when_the_manifest_changes(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    before = store.upsert("g", [item("a.mkv")])
    # the timeout path: nothing changes
    assert store.wait_for_change("g", before.etag, 0.2) is before
    store._changed = condition = _ParkedCondition()
    result: list[Any] = []
    waiter = threading.Thread(
        target=lambda: result.append(store.wait_for_change("g", before.etag, 3600)), daemon=True
    )
    waiter.start()
    try:
        assert condition.parked.wait(30)  # the waiter is asleep on the condition
        assert result == []
        store.upsert("g", [item("b.mkv")])  # wakes it (its own timeout is an hour)
    finally:
        waiter.join(30)
    assert not waiter.is_alive()
    [after] = result
    assert after.version == 2
    assert after.etag != before.etag
    assert store.wait_for_change("g", None, 30) is after  # no etag: at once


def test_validate_command_reports_problems_and_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SEED_FORMAT))
    result = run_meshmedia("manifest", "validate", str(good))
    assert result.returncode == 0, result.stderr
    assert "1 item" in result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SEED_FORMAT, "items": [{"path": "../x", "torrent": MAGNET}]}))
    result = run_meshmedia("manifest", "validate", str(bad))
    assert result.returncode == 1
    assert "item 0 (../x): path has a '..' segment" in result.stdout + result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = run_meshmedia("manifest", "validate", str(broken))
    assert result.returncode == 1
    assert "not JSON" in result.stderr
    help_text = run_meshmedia("manifest", "validate", "--help").stdout
    assert "Example" in help_text


def _items(count: int) -> list[dict[str, str]]:
    return [
        {"path": f"d/{n}.mkv", "torrent": f"magnet:?xt=urn:btih:{n:040x}"} for n in range(count)
    ]


def test_a_manifest_of_more_than_100000_items_is_refused_whole() -> None:
    """150k items (15 MB, under the 16 MiB cap) took a client to 475 MB RSS and growing."""
    manifest, rejected = parse_manifest({"group": "g", "items": _items(100_000)})
    assert (len(manifest.items), rejected) == (100_000, [])
    with pytest.raises(ManifestError, match="lists 100001 items; at most 100,000 are accepted"):
        parse_manifest({"group": "g", "items": _items(100_001)})


def test_an_item_inside_another_items_path_is_refused_naming_both() -> None:
    """Items `A` and `A/b` crashed the client (a folder where a file goes)."""
    doc = {
        "group": "g",
        "items": [
            {"path": "A", "torrent": MAGNET},
            {"path": "A/b", "torrent": f"magnet:?xt=urn:btih:{'1' * 40}"},
            {"path": "C/d/e.mkv", "torrent": f"magnet:?xt=urn:btih:{'2' * 40}"},
            {"path": "C/d", "torrent": f"magnet:?xt=urn:btih:{'3' * 40}"},
            {
                "path": "Other.mkv",
                "torrent": f"magnet:?xt=urn:btih:{IH.upper()}&dn=the-same-torrent",
            },
        ],
    }
    manifest, rejected = parse_manifest(doc, one_place_per_torrent=True)
    assert [i.path for i in manifest.items] == ["A", "C/d/e.mkv"]
    assert [str(r) for r in rejected] == [
        "item 1 (A/b): path lies inside item 0 ('A')",
        "item 3 (C/d): path is a folder holding item 2 ('C/d/e.mkv')",
        f"item 4 (Other.mkv): its torrent {IH} is already listed at 'A'",
    ]
    curator_view, _ = parse_manifest(doc)  # a curator may list one torrent at two paths
    assert [i.path for i in curator_view.items] == ["A", "C/d/e.mkv", "Other.mkv"]


def test_a_lone_surrogate_anywhere_in_an_item_rejects_that_item_only() -> None:
    doc = json.dumps(
        {
            "group": "g",
            "items": [
                {"path": "ok.mkv", "torrent": MAGNET},
                {"path": "t.mkv", "torrent": f"magnet:?xt=urn:btih:{'1' * 40}", "title": "\ud800"},
            ],
        }
    )
    manifest, rejected = parse_manifest(doc.encode())
    assert [i.path for i in manifest.items] == ["ok.mkv"]
    assert "lone surrogate" in rejected[0].reason
    assert rejected[0].name == "t.mkv"


def test_folder_items_per_file_hashes_are_validated() -> None:
    sha = "ab" * 32
    good = [
        {"path": "e1.mkv", "size": 3, "sha256": sha},
        {"path": "s/e2.mkv", "size": 4, "sha256": sha},
    ]
    assert item("Show", size=7, files=good).files is not None
    for files, reason in [
        ([{"path": "../x", "size": 1, "sha256": sha}], "files\\[0\\]: path has a '..' segment"),
        ([{"path": "a", "size": 1}], "size and sha256 are required"),
        ([good[0], good[0]], "path is already used by files entry 0"),
        ([{"path": "s", "size": 3, "sha256": sha}, good[1]], "lies inside files entry 0"),
        (good[:1], "add up to 3, not 7"),
        ([], "files is empty"),
        ({"e1": 1}, "files must be a list"),
    ]:
        with pytest.raises(ManifestError, match=reason):
            item("Show", size=7, files=files)
    older = item("Show", size=7)  # the earlier format: no files, still an item
    assert older.files is None


def test_a_files_list_over_the_bound_is_refused() -> None:
    files = [{"path": f"{n}", "size": 0, "sha256": "ab" * 32} for n in range(100_001)]
    with pytest.raises(ManifestError, match="at most 100,000"):
        item("Show", files=files)
