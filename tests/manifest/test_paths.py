"""The one rule on paths side by side (manifest.PathSet) and the bounds on one path.

Review 12, finding 2: every prefix of every path was built, O(segments^2): two
20,000-segment paths (80 kB) cost a client 10.4 s and 927 MB before the signature
was even checked. Paths are now bounded (4096 bytes, 128 segments), PathSet is
linear, and a client with a trusted key checks the signature before any item.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshmedia.client.placement import unsafe_names
from meshmedia.client.plan import read_manifest
from meshmedia.errors import ManifestError
from meshmedia.manifest import (
    Nesting,
    PathSet,
    TrustPolicy,
    check_relative_path,
    generate_key,
    parse_manifest,
)
from meshmedia.manifest.format import MAX_PATH_BYTES, MAX_SEGMENTS
from meshmedia.store import Store
from meshmedia.torrentinfo import TorrentFile


def test_the_rule_finds_each_way_two_paths_meet() -> None:
    paths = PathSet("item")
    paths.add("Show/S1/e1.mkv", 0)
    paths.add("Film.mkv", 1)
    paths.add("Show/S1/e2.mkv", 2)
    met = {p: paths.overlap(p) for p in ("Show/S1/e1.mkv", "Show/S1", "Show", "Film.mkv/x")}
    assert {p: (o.nesting, o.holder, o.other) for p, o in met.items() if o} == {
        "Show/S1/e1.mkv": (Nesting.SAME, 0, "Show/S1/e1.mkv"),
        "Show/S1": (Nesting.HOLDS, 0, "Show/S1/e1.mkv"),
        "Show": (Nesting.HOLDS, 0, "Show/S1/e1.mkv"),
        "Film.mkv/x": (Nesting.INSIDE, 1, "Film.mkv"),
    }
    for fine in ("Show/S2/e1.mkv", "Show/S1/e3.mkv", "Film", "Film.mkv.part", "Sho", "S"):
        assert paths.overlap(fine) is None, fine
    with pytest.raises(ManifestError, match=r"path lies inside item 1 \('Film.mkv'\)"):
        paths.add("Film.mkv/x", 3)
    with pytest.raises(ManifestError, match=r"is a folder holding item 0 \('Show/S1/e1.mkv'\)"):
        paths.add("Show", 3)


def peak_bytes(build: Callable[[], Any]) -> int:
    """The most memory `build` held at once (tracemalloc counts allocations, not time)."""
    tracemalloc.start()
    try:
        kept = build()  # held until the peak is read
        peak = tracemalloc.get_traced_memory()[1]
        del kept
        return peak
    finally:
        tracemalloc.stop()


def deep_set(segments: int) -> PathSet:
    paths = PathSet("item")
    for k in range(2):
        paths.add(f"x{k}/" + "/".join(["abcdefgh"] * segments), k)
    return paths


def test_a_path_costs_its_length_not_its_length_squared() -> None:
    small, large = peak_bytes(lambda: deep_set(2_000)), peak_bytes(lambda: deep_set(8_000))
    assert large < 6 * small, (small, large)  # linear: 4x; every prefix kept: 16x


def test_one_path_is_bounded_in_bytes_and_segments() -> None:
    assert check_relative_path("a" * 255 + ("/" + "b" * 255) * 15)  # 4095 bytes
    assert check_relative_path("/".join(["a"] * MAX_SEGMENTS))
    with pytest.raises(ManifestError, match=f"over {MAX_PATH_BYTES} bytes"):
        check_relative_path("a" * 255 + ("/" + "b" * 255) * 16)
    with pytest.raises(ManifestError, match=f"over {MAX_PATH_BYTES} bytes"):
        check_relative_path("é" * 2049)  # 4098 bytes in 2049 characters
    with pytest.raises(ManifestError, match=f"over {MAX_SEGMENTS} segments"):
        check_relative_path("/".join(["a"] * (MAX_SEGMENTS + 1)))


def blowup(segments: int = 20_000, items: int = 2) -> dict[str, Any]:
    """The review's document: `items` items of `segments` one-letter segments."""
    magnet = "magnet:?xt=urn:btih:{:040x}"
    deep = "/".join(["a"] * segments)
    paths = [{"path": f"x{k}/{deep}", "torrent": magnet.format(k + 1)} for k in range(items)]
    return {"group": "default", "version": 1, "items": paths}


def test_the_reviews_manifest_is_refused_item_by_item() -> None:
    manifest, rejected = parse_manifest(blowup(), one_place_per_torrent=True)
    assert manifest.items == ()
    assert [r.reason for r in rejected] == [f"path is over {MAX_PATH_BYTES} bytes"] * 2


def calls_of(name: str, call: Callable[[], Any]) -> int:
    """How many times a Python function called `name` runs during `call` (a profile hook)."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call" and frame.f_code.co_name == name:
            count += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return count


def test_a_client_with_a_trusted_key_checks_the_signature_before_any_item(tmp_path: Path) -> None:
    key = generate_key()
    doc = blowup(segments=50, items=300)
    with Store(tmp_path / "state.db") as store:
        trust = TrustPolicy(store, key.public)
        unsigned = json.dumps(doc).encode()
        assert calls_of("validate_item", lambda: read_manifest("u", unsigned, trust)) == 0
        assert read_manifest("u", unsigned, trust) is None
        signed = json.dumps(key.sign(doc)).encode()
        assert calls_of("validate_item", lambda: read_manifest("u", signed, trust)) == 300


def test_a_torrents_own_names_follow_the_same_rule() -> None:
    def files(*paths: str) -> list[TorrentFile]:
        return [TorrentFile(i, p, 1, False, False) for i, p in enumerate(paths)]

    assert unsafe_names(files("T/a.mkv", "T/b/c.mkv", "T/b/d.mkv")) is None
    assert "twice" in str(unsafe_names(files("T/a.mkv", "T/a.mkv")))
    assert "one inside the other" in str(unsafe_names(files("T/b/c.mkv", "T/b")))
    assert "one inside the other" in str(unsafe_names(files("T/b", "T/b/c.mkv")))
