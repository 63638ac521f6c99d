"""The client against the holes of the second attacker review of issue 12 (review12.md).

Real parts: a libtorrent seeder on 127.0.0.1 serving hand-built torrents, real HTTP
servers for the manifests, a SyncClient with a real Engine (or `meshmedia sync` as a
process).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.test_hostile_client import MANIFEST, Local
from tests.hostile import Seeder, Site, files_under, hand_built, serve


@pytest.fixture
def seeder(tmp_path: Path) -> Iterator[Seeder]:
    seeding = Seeder(tmp_path)
    try:
        yield seeding
    finally:
        seeding.close()


@pytest.fixture
def site() -> Iterator[Site]:
    with serve() as running:
        yield running


def manifest(*items: dict[str, Any], version: int = 1) -> bytes:
    return json.dumps({"group": "default", "version": version, "items": list(items)}).encode()


def _restarted(tmp_path: Path, url: str, node: Local | None, **config: Any) -> Local:
    """A new SyncClient and Engine on the same folders (a restart of the daemon)."""
    if node is not None:
        node.close()
    return Local(tmp_path, url, **config)


@pytest.mark.parametrize("dn", ["../../../../../victim.txt", "ABSOLUTE"])
def test_a_magnets_dn_never_names_a_path_outside_the_download_dir(
    tmp_path: Path, seeder: Seeder, site: Site, dn: str
) -> None:
    """Finding 1 (critical): the adoption link was made at incomplete/<ih>/<dn>, so a
    second manifest version with dn=../../../../../victim.txt (or an absolute dn) made the
    client unlink a file outside DOWNLOAD_DIR and hard-link the item's content there."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's own file")
    dn = str(victim) if dn == "ABSOLUTE" else dn
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    seeder.seed(good)
    item = {
        "path": "film.mkv",
        "torrent": good.magnet("film.mkv", seeder.port),
        "size": len(good.payloads[0]),
        "sha256": hashlib.sha256(good.payloads[0]).hexdigest(),
    }
    url = site.url + MANIFEST
    site.body(MANIFEST, manifest(item))
    node = _restarted(tmp_path, url, None)
    try:
        assert node.client.apply(url, manifest(item))
        node.settle()
        assert node.state("film.mkv").state == "placed"
        evil = dict(item, torrent=item["torrent"].replace("dn=film.mkv", f"dn={dn}"))
        before = files_under(tmp_path, tmp_path / "local", tmp_path / "seeder")
        inode = victim.stat().st_ino
        node = _restarted(tmp_path, url, node)
        assert node.client.apply(url, manifest(evil, version=2))
        node.settle()
        assert victim.read_bytes() == b"the user's own file"
        assert victim.stat().st_ino == inode
        assert files_under(tmp_path, tmp_path / "local", tmp_path / "seeder") == before
        assert node.state("film.mkv").state == "placed"
        assert node.engine.status(good.info_hash).total_download == 0  # adopted, not fetched
        assert (node.media / "film.mkv").read_bytes() == good.payloads[0]
        for path in files_under(tmp_path / "local"):
            assert os.path.realpath(path).startswith(str(tmp_path / "local"))
    finally:
        node.close()


def _item_of(torrent: Any, path: str, port: int) -> dict[str, Any]:
    return {
        "path": path,
        "torrent": torrent.magnet(path, port),
        "size": len(torrent.payloads[0]),
        "sha256": hashlib.sha256(torrent.payloads[0]).hexdigest(),
    }


def test_delete_removed_keeps_the_files_of_an_item_that_is_only_rejected(
    tmp_path: Path, seeder: Seeder, site: Site
) -> None:
    """Finding 7: a placed item listed again with a malformed sha256 was "left the
    manifest" and --delete-removed deleted its file. Only an item genuinely absent
    from a good manifest is removed."""
    kept, gone = (hand_built(b"%s.mkv" % n, single=n * 20000) for n in (b"a", b"b"))
    for torrent in (kept, gone):
        seeder.seed(torrent)
    node = Local(tmp_path, site.url + MANIFEST, delete_removed=True)
    try:
        first = [_item_of(kept, "a.mkv", seeder.port), _item_of(gone, "b.mkv", seeder.port)]
        assert node.client.apply(node.url, manifest(*first))
        node.settle()
        assert node.state("a.mkv").state == node.state("b.mkv").state == "placed"
        bad = dict(first[0], sha256="not-a-hash")
        assert node.client.apply(node.url, manifest(bad, version=2))
        node.settle()
        assert (node.media / "a.mkv").read_bytes() == kept.payloads[0]
        assert node.state("a.mkv").state == "placed"
        assert not (node.media / "b.mkv").exists()  # genuinely absent: removed
        pathless = {"title": "no path", "torrent": first[0]["torrent"]}
        assert node.client.apply(node.url, manifest(pathless, version=3))
        node.settle()
        assert (node.media / "a.mkv").read_bytes() == kept.payloads[0]
        assert node.client.apply(node.url, manifest(version=4))
        node.settle()
        assert not (node.media / "a.mkv").exists()
    finally:
        node.close()
