"""Manifest validation against the holes of the second attacker review of issue 12."""

from __future__ import annotations

import gc
import json
import tracemalloc

from meshmedia.manifest import magnet_info_hash, parse_manifest

IH = "ab" * 20


def _doc(version: int, torrent: str) -> bytes:
    item = {"path": "film.mkv", "torrent": torrent}
    return json.dumps({"group": "g", "version": version, "items": [item]}).encode()


def test_huge_magnets_and_urls_are_refused_and_not_kept_in_memory() -> None:
    """Finding 3: 4 MB magnets were valid, and magnet_info_hash's lru_cache kept each
    one (RSS 119 -> 253 MiB over 40 versions, never given back)."""
    tracemalloc.start()
    try:
        for version in range(20):
            magnet = f"magnet:?xt=urn:btih:{IH}&x.junk={version:08d}" + "z" * 1_000_000
            manifest, rejected = parse_manifest(_doc(version, magnet), one_place_per_torrent=True)
            assert manifest.items == ()
            (bad,) = rejected
            assert "characters long; at most 8,192 are accepted" in bad.reason
            assert magnet_info_hash(magnet) == IH  # still answered, never cached
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"Python memory held after 20 documents with 1 MB magnets: {held / 2**20:.1f} MiB")
    assert held < 4 << 20  # one document's worth at most; the cache held 20 MB before
    url = "http://example.invalid/t.torrent?" + "q" * 9000
    _, rejected = parse_manifest(_doc(1, url))
    assert "at most 8,192" in rejected[0].reason
    fine = f"magnet:?xt=urn:btih:{IH}&dn=" + "n" * 8000
    manifest, rejected = parse_manifest(_doc(1, fine))
    assert rejected == []
    assert manifest.items[0].info_hash == IH
