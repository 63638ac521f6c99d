"""The manifest format's exact rules: canonical bytes, folder files, item names, documents."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from meshmedia.bounded import MAX_FILES
from meshmedia.errors import ManifestError
from meshmedia.manifest import canonical_json, parse_manifest
from meshmedia.manifest.format import (
    MAX_TORRENT_CHARS,
    FileEntry,
    Item,
    Manifest,
    Nesting,
    PathSet,
    Rejected,
    _cached_info_hash,
    check_files,
    check_relative_path,
    check_torrent,
    magnet_info_hash,
    parse_items,
    printable,
    utc_now,
    validate_item,
)

IH = "0123456789abcdef0123456789abcdef01234567"
MAGNET = f"magnet:?xt=urn:btih:{IH}"
SHA = "ab" * 32


def item(path: str, **fields: Any) -> dict[str, Any]:
    return {"path": path, "torrent": MAGNET, **fields}


def files_entry(path: str, size: int = 1, **fields: Any) -> dict[str, Any]:
    return {"path": path, "size": size, "sha256": SHA, **fields}


def test_utc_now_is_iso_8601_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": [1, {"d": 2, "c": "é"}], "a": None}) == (
        '{"a":null,"b":[1,{"c":"é","d":2}]}'.encode()
    )
    assert canonical_json({"x": "\u2028"}) == '{"x":"\u2028"}'.encode()


def test_a_manifest_round_trips_and_its_etag_is_of_its_bytes() -> None:
    doc = {"group": "g", "version": 3, "updated_at": "t", "items": [item("a.mkv")], "z": 1}
    manifest, rejected = parse_manifest(json.dumps(doc))
    assert rejected == []
    assert manifest.extra == {"z": 1}
    assert json.loads(manifest.dumps()) == {**doc, "items": [{**item("a.mkv"), "title": "a.mkv"}]}
    assert manifest.etag == parse_manifest(manifest.dumps())[0].etag
    assert re.fullmatch(r'"[0-9a-f]{32}"', manifest.etag)
    assert manifest.item_for("a.mkv") is manifest.items[0]
    assert manifest.item_for("b.mkv") is None


def test_item_to_json_keeps_unknown_fields_under_known_ones() -> None:
    got = validate_item({**item("a.mkv", size=5), "extra": [1], "title": "T"})
    assert got.to_json() == {
        "extra": [1], "title": "T", "torrent": MAGNET, "path": "a.mkv", "size": 5,
    }  # fmt: skip
    forged = Item("T", MAGNET, "a.mkv", extra={"path": "evil", "x": 1})
    assert forged.to_json()["path"] == "a.mkv"
    assert forged.to_json()["x"] == 1


def test_validate_item_defaults_and_types() -> None:
    got = validate_item(item("Show/S1/e1.mkv", sha256=SHA.upper(), xxh3="CD" * 16))
    assert (got.title, got.sha256, got.xxh3, got.size) == ("e1.mkv", SHA, "cd" * 16, None)
    for bad, reason in [
        ([], "an item must be an object, not list"),
        ({"torrent": MAGNET}, "path is missing"),
        ({"path": "a"}, "torrent is missing"),
        (item("a", title=3), "title must be a string, not int"),
        (item("a", size=-1), "size must be a whole number of bytes >= 0, got -1"),
        (item("a", size=True), "size must be a whole number"),
        (item("a", size=1.5), "size must be a whole number"),
        (item("a", added_at=5), "added_at must be a string"),
        (item("a", sha256="xy"), "sha256 must be 64 hex digits, got 'xy'"),
        (item("a", sha256=5), "sha256 must be 64 hex digits, got 5"),
        (item("a", xxh3="ab" * 15), r"xxh3 must be 32 hex digits \(XXH3-128\)"),
        (item("a", note="\ud800"), "lone surrogate in '\\\\ud800'"),
    ]:
        with pytest.raises(ManifestError, match=reason):
            validate_item(bad)
    assert validate_item(item("a", size=0)).size == 0


def test_check_files_accepts_a_folder_listing() -> None:
    got = check_files(
        [files_entry("e1.mkv", 3), files_entry("S1/e2.mkv", 4, xxh3="EF" * 16)], total=7
    )
    assert got == (
        FileEntry("e1.mkv", 3, SHA, None),
        FileEntry("S1/e2.mkv", 4, SHA, "ef" * 16),
    )
    assert check_files([files_entry("a", 9)], total=None)[0].size == 9


@pytest.mark.parametrize(
    ("raw", "total", "reason"),
    [
        ({}, None, "files must be a list, not dict"),
        ([], None, "files is empty"),
        (["x"], None, r"files\[0\] must be an object"),
        ([files_entry("a"), 5], None, r"files\[1\] must be an object"),
        ([{"size": 1, "sha256": SHA}], None, r"files\[0\]: path is empty"),
        ([files_entry("../a")], None, r"files\[0\]: path has a '..' segment"),
        ([{"path": "a", "sha256": SHA}], None, r"files\[0\]: size and sha256 are required"),
        ([{"path": "a", "size": 1}], None, r"files\[0\]: size and sha256 are required"),
        ([files_entry("a", -1)], None, r"files\[0\]: size must be a whole number"),
        ([files_entry("a", sha256="x")], None, r"files\[0\]: sha256 must be 64 hex digits"),
        ([files_entry("a"), files_entry("a")], None, r"files\[1\]: path is already used"),
        ([files_entry("a"), files_entry("a/b")], None, r"files\[1\]: path lies inside"),
        ([files_entry("a/b"), files_entry("a")], None, r"files\[1\]: path is a folder holding"),
        ([files_entry("a", xxh3="z")], None, "xxh3 must be 32 hex digits"),
        ([files_entry("a", 2), files_entry("b", 3)], 6, "the sizes in files add up to 5, not 6"),
    ],
)
def test_check_files_refuses(raw: Any, total: int | None, reason: str) -> None:
    with pytest.raises(ManifestError, match=reason):
        check_files(raw, total)


def test_check_files_caps_the_count_exactly() -> None:
    many = [files_entry(f"f{n}") for n in range(MAX_FILES)]
    assert len(check_files(many, None)) == MAX_FILES
    with pytest.raises(ManifestError, match=f"files lists {MAX_FILES + 1} files; at most"):
        check_files([*many, files_entry("one-more")], None)


def test_an_item_with_bad_files_is_rejected_by_name() -> None:
    items, rejected = parse_items([item("Show", files=[files_entry("a", 2)], size=3)])
    assert items == []
    assert rejected == [
        Rejected(0, "Show", "the sizes in files add up to 2, not 3", "Show"),
    ]
    assert str(rejected[0]) == "item 0 (Show): the sizes in files add up to 2, not 3"
    assert rejected[0].to_json() == {
        "index": 0, "name": "Show", "reason": "the sizes in files add up to 2, not 3",
    }  # fmt: skip


def test_rejected_items_are_named_by_path_then_title_then_index() -> None:
    _, rejected = parse_items(
        [
            {"path": "a/../b", "torrent": MAGNET},
            {"title": "Only a title", "torrent": MAGNET},
            {"path": "", "title": "", "torrent": MAGNET},
            {"path": 5, "title": "T5", "torrent": MAGNET},
            "not an object",
            {"path": "x" * 300 + "\ud800", "torrent": 1},
        ]
    )
    names = [r.name for r in rejected]
    assert names[:5] == ["a/../b", "Only a title", "#2", "T5", "#4"]
    assert names[5] == "x" * 200  # cut at 200 characters, always printable as UTF-8
    _, [odd] = parse_items([{"path": "\ud800bad", "torrent": 1}])
    assert odd.name == "\\ud800bad"
    assert odd.name.encode("utf-8")


def test_parse_items_refuses_repeats_and_nesting_but_keeps_the_first() -> None:
    items, rejected = parse_items(
        [item("A"), item("A/b"), item("A"), item("C/d"), item("C")],
    )
    assert [i.path for i in items] == ["A", "C/d"]
    assert [(r.index, r.reason) for r in rejected] == [
        (1, "path lies inside item 0 ('A')"),
        (2, "path is already used by item 0"),
        (4, "path is a folder holding item 3 ('C/d')"),
    ]


def test_one_place_per_torrent_is_a_client_rule() -> None:
    raw = [item("a.mkv"), item("b.mkv"), item("c.mkv", torrent="https://x/t.torrent")]
    items, rejected = parse_items(raw)
    assert len(items) == 3
    assert rejected == []
    items, rejected = parse_items(raw, one_place_per_torrent=True)
    assert [i.path for i in items] == ["a.mkv", "c.mkv"]
    assert rejected[0].reason == f"its torrent {IH} is already listed at 'a.mkv'"
    raw = [item("x/a.mkv"), item("x"), item("y.mkv")]  # a rejected item frees nothing
    items, rejected = parse_items(raw, one_place_per_torrent=True)
    assert [i.path for i in items] == ["x/a.mkv"]
    assert len(rejected) == 2


def test_parse_items_needs_a_list_within_the_cap() -> None:
    with pytest.raises(ManifestError, match="'items' must be a list, not dict"):
        parse_items({})


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("[]", "a manifest must be a JSON object, not list"),
        ("{", "not JSON"),
        ({"items": []}, "'group' must be a non-empty string"),
        ({"group": "", "items": []}, "'group' must be a non-empty string"),
        ({"group": 5, "items": []}, "'group' must be a non-empty string"),
        ({"group": "g"}, "'items' is missing"),
        ({"group": "g", "items": [], "version": -1}, "'version' must be a whole number >= 0"),
        ({"group": "g", "items": [], "version": True}, "'version' must be a whole number"),
        ({"group": "g", "items": [], "version": 1.0}, "'version' must be a whole number"),
        ({"group": "g", "items": [], "updated_at": 5}, "'updated_at' must be a string"),
        ({"group": "g", "items": [], "x": "\udc00"}, "lone surrogate in '\\\\udc00', not text"),
        ({"group": "\udc00", "items": []}, "lone surrogate"),
    ],
)
def test_parse_manifest_refuses(doc: Any, reason: str) -> None:
    data = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(ManifestError, match=reason):
        parse_manifest(data)


def test_parse_manifest_defaults() -> None:
    manifest, _ = parse_manifest({"group": "g", "items": []})
    assert (manifest.version, manifest.updated_at, manifest.extra) == (0, "", {})
    assert isinstance(manifest, Manifest)
    manifest, _ = parse_manifest({"group": "g", "items": [], "version": 0})
    assert manifest.version == 0


def test_a_manifest_serialises_as_canonical_json_of_its_document() -> None:
    """The served bytes join each item's cached JSON; they must equal canonical JSON of
    the whole document, whatever the top-level fields sort around `items`."""
    items = (
        Item(title="Été", torrent="magnet:?xt=urn:btih:" + "a" * 40, path="b/é.mkv", size=3),
        Item(title="x", torrent="magnet:?xt=urn:btih:" + "b" * 40, path="a.mkv",
             extra={"zzz": [1, {"b": 2, "a": None}], "files": []}),
    )  # fmt: skip
    for extra in ({}, {"aaa": {"items": []}, "signature": {"sig": "00"}, "zz": "ü"}):
        for listed in (items, ()):
            manifest = Manifest("default", 7, "2026-12-02T00:00:00Z", listed, extra)
            assert manifest.dumps() == canonical_json(manifest.to_json())


# -- what mutation testing found unchecked (native_notes/testing.md, format.py) ------


def test_a_magnet_may_name_its_hash_in_a_numbered_xt_after_other_fields() -> None:
    hexdigest = "cd" * 20
    assert magnet_info_hash(f"magnet:?dn=a.mkv&tr=x&xt.1=urn:btih:{hexdigest}") == hexdigest
    assert magnet_info_hash(f"magnet:?dn=b.mkv&xt.x=urn:btih:{hexdigest}") is None
    assert magnet_info_hash(f"magnet:?xt=&xt=urn:btih:{hexdigest.upper()}") == hexdigest


def test_printable_escapes_c0_del_and_c1() -> None:
    assert printable("a\nb\x1b[31m\x7f\x85é") == "a\\nb\\x1b[31m\\x7f\\x85é"


def test_utc_now_is_utc_whatever_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XXX-9")  # nine hours east of UTC, no daylight saving
    time.tzset()
    try:
        before, now, after = time.time() - 5, utc_now(), time.time() + 5
    finally:
        monkeypatch.undo()
        time.tzset()
    hours = {time.strftime("%Y-%m-%dT%H", time.gmtime(t)) for t in (before, after)}
    assert now[:13] in hours, (now, hours)


def test_folder_file_refusals_are_worded_exactly() -> None:
    with pytest.raises(ManifestError) as caught:
        check_files([], None)
    assert str(caught.value) == "files is empty"
    entry = {"path": "a.mkv", "size": 1, "sha256": "00" * 32, "xxh3": "zz"}
    with pytest.raises(ManifestError) as caught:
        check_files([entry], None)
    assert "xxh3 must be 32 hex digits (XXH3-128), got 'zz'" in str(caught.value)


def test_manifest_refusals_are_worded_exactly() -> None:
    cases = [
        ({"group": "", "items": []}, "'group' must be a non-empty string"),
        ({"group": "family"}, "'items' is missing"),
        ({"group": "family", "items": [], "updated_at": 5}, "'updated_at' must be a string"),
    ]
    for doc, message in cases:
        with pytest.raises(ManifestError) as caught:
            parse_manifest(doc)
        assert str(caught.value) == message


def test_a_rejected_item_whose_path_is_not_text_names_no_path() -> None:
    _, rejected = parse_manifest({"group": "family", "items": [{"path": 5, "title": "x"}]})
    assert [(r.index, r.path) for r in rejected] == [(0, None)]


def test_torrent_refusals_are_worded_exactly_and_the_length_cap_is_exact() -> None:
    url = "http://curator.example/t/"
    at_cap = url + "a" * (MAX_TORRENT_CHARS - len(url))
    assert check_torrent(at_cap) == at_cap
    assert check_torrent("HTTP://curator.example/a.torrent") == "HTTP://curator.example/a.torrent"
    cases = [
        ("", "torrent must be a non-empty string"),
        (at_cap + "a", f"torrent is {MAX_TORRENT_CHARS + 1:,} characters long; at most "
         f"{MAX_TORRENT_CHARS:,} are accepted"),
        ("magnet:?dn=x",
         "torrent is a magnet without xt=urn:btih:<40 hex or 32 base32 characters>"),
        ("ftp://curator.example/a.torrent", "torrent must be a magnet URI or an http(s) URL"),
        ("http://curator.example/a b.torrent", "torrent URL contains spaces or control characters"),
    ]  # fmt: skip
    for torrent, message in cases:
        with pytest.raises(ManifestError) as caught:
            check_torrent(torrent)
        assert str(caught.value) == message


def test_item_refusals_are_worded_exactly() -> None:
    cases = [
        ([], "an item must be an object, not list"),
        ({"torrent": MAGNET}, "path is missing"),
        ({"path": "a"}, "torrent is missing"),
        (item("a", title=3), "title must be a string, not int"),
        (item("a", size=-1), "size must be a whole number of bytes >= 0, got -1"),
        (item("a", size="5"), "size must be a whole number of bytes >= 0, got '5'"),
        (item("a", added_at=5), "added_at must be a string"),
        (item("a", sha256="xy"), "sha256 must be 64 hex digits, got 'xy'"),
        (item("a", xxh3="z"), "xxh3 must be 32 hex digits (XXH3-128), got 'z'"),
        (
            item("a", note="\ud800"),
            "the item holds a lone surrogate in '\\ud800', which is not text",
        ),
        (item("a", files=[]), "files is empty"),
    ]
    for raw, message in cases:
        with pytest.raises(ManifestError) as caught:
            validate_item(raw)
        assert str(caught.value) == message, raw
    versions = [(-1, "-1"), (True, "True"), (1.0, "1.0"), ("1", "'1'")]
    for version, shown in versions:
        with pytest.raises(ManifestError) as caught:
            parse_manifest({"group": "g", "items": [], "version": version})
        assert str(caught.value) == f"'version' must be a whole number >= 0, got {shown}"
    with pytest.raises(ManifestError) as caught:
        parse_manifest({"group": "g", "items": [], "x": "\udc00"})
    assert str(caught.value) == "the manifest holds a lone surrogate in '\\udc00', not text"
    with pytest.raises(ManifestError) as caught:
        parse_manifest("[]")
    assert str(caught.value) == "a manifest must be a JSON object, not list"


def test_a_field_named_like_group_in_another_case_hides_no_lone_surrogate() -> None:
    """Unknown fields are checked with the group and updated_at in one dict: a `GROUP`
    or `UPDATED_AT` field (kept as unknown) must not take the place of the real one."""
    for field in ("group", "updated_at"):
        doc = {"group": "g", "updated_at": "", "items": [], field: "\udc00"}
        doc |= {"GROUP": "g", "UPDATED_AT": ""}
        with pytest.raises(ManifestError) as caught:
            parse_manifest(doc)
        assert str(caught.value) == "the manifest holds a lone surrogate in '\\udc00', not text"


def test_a_magnet_over_the_cap_is_read_but_never_cached() -> None:
    """The cache holds magnets of at most MAX_TORRENT_CHARS (40 x 4 MB ones held 134 MiB,
    finding 3); a longer one is still read, every time."""
    base = f"{MAGNET}&dn="
    at_cap = base + "a" * (MAX_TORRENT_CHARS - len(base))
    over = at_cap + "a"
    _cached_info_hash.cache_clear()
    assert magnet_info_hash(at_cap) == IH
    assert magnet_info_hash(at_cap) == IH
    assert (_cached_info_hash.cache_info().hits, _cached_info_hash.cache_info().currsize) == (1, 1)
    assert magnet_info_hash(over) == IH
    assert Item("T", over, "a.mkv").info_hash == IH
    assert _cached_info_hash.cache_info().currsize == 1


def test_a_path_set_says_how_a_path_meets_one_taken() -> None:
    items = PathSet()
    items.add("A", 0)
    with pytest.raises(ManifestError) as caught:
        items.add("A", 1)
    assert str(caught.value) == "path is already used by item 0"  # "item" by default
    paths = PathSet("file")
    paths.take("A/b", "first")
    assert paths.overlap("C") is None
    assert paths.overlap("A/c") is None
    for path, nesting in (("A/b", Nesting.SAME), ("A/b/c", Nesting.INSIDE), ("A", Nesting.HOLDS)):
        found = paths.overlap(path)
        assert found is not None, path
        assert (found.nesting, found.holder, found.other) == (nesting, "first", "A/b"), path


def test_the_path_rule_is_exact_at_its_bounds_and_word_for_word() -> None:
    """tests/manifest/test_paths.py says much of this too, but mutmut cannot run it."""
    at_cap = "/".join(["a" * 240] * 17)  # 4,096 bytes in 17 segments of 240
    assert len(at_cap) == 4096
    assert check_relative_path(at_cap) == at_cap
    assert check_relative_path("a" * 255) == "a" * 255
    segments = "/".join(["a"] * 128)
    assert check_relative_path(segments) == segments
    wide = "/".join(["\u00e9" * 100] * 21)  # 2,120 characters, 4,220 bytes
    cases = [
        (5, "path must be a string, not int"),
        (None, "path must be a string, not NoneType"),
        (at_cap + "a", "path is over 4096 bytes"),
        (wide, "path is over 4096 bytes"),
        (segments + "/a", "path has over 128 segments"),
        ("a" * 256, "path has a segment over 255 bytes"),
        ("a/\ud800", "path contains a lone surrogate (e.g. '\\ud800'), which is not text"),
        ("a\\b", "path contains a backslash"),
        ("a//b", "path has an empty segment"),
        ("/a", "path is absolute"),
        ("C:a", "path starts with a drive letter"),
    ]
    for path, message in cases:
        with pytest.raises(ManifestError) as caught:
            check_relative_path(path)  # type: ignore[arg-type]
        assert str(caught.value) == message, path
