"""The client against hostile input: torrents, manifests and servers chosen by an attacker.

Real parts throughout: a libtorrent seeder serving hand-built torrents, real
HTTP servers, `meshmedia sync` as a process or a SyncClient with a real Engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Client
from tests.hostile import Seeder, Site, files_under, hand_built, serve

MANIFEST = "/manifest/default.json"


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


def manifest(*items: dict[str, Any]) -> bytes:
    return json.dumps({"group": "default", "version": 1, "items": list(items)}).encode()


def test_torrent_names_with_dotdot_or_absolute_never_write_outside(
    tmp_path: Path, seeder: Seeder, site: Site
) -> None:
    """Finding 1 (critical): the placer re-parsed the raw info dict and fed
    `x/../../../victim/file.txt` to rename_file: files outside DOWNLOAD_DIR were
    overwritten ("1 in place"). Now each such item is refused by name."""
    victim = tmp_path / "victim" / "file.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    absolute = tmp_path / "abs-victim.txt"
    dotdot = hand_built(
        b"x",
        [
            ([b"..", b"..", b"..", b"victim", b"file.txt"], b"overwritten" * 50),
            ([b"ok.txt"], b"fine" * 10),
        ],
    )
    rooted = hand_built(b"y", [([str(absolute).encode()], b"rooted" * 40)])
    named = hand_built(b"../../../escape.txt", single=b"named" * 30)
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    for torrent in (dotdot, rooted, named, good):
        seeder.seed(torrent)
    site.body(
        MANIFEST,
        manifest(
            {"title": "Final", "path": "Final", "torrent": dotdot.magnet("x", seeder.port)},
            {"title": "Rooted", "path": "Rooted", "torrent": rooted.magnet("y", seeder.port)},
            {"title": "Named", "path": "Named.txt", "torrent": named.magnet("n", seeder.port)},
            {"title": "Good", "path": "Good/film.mkv", "torrent": good.magnet("g", seeder.port)},
        ),
    )
    before = files_under(tmp_path, tmp_path / "client", tmp_path / "seeder")
    client = Client(tmp_path / "client", [site.url + MANIFEST])
    result = client.once(timeout=180)
    after = files_under(tmp_path, tmp_path / "client", tmp_path / "seeder")
    assert after == before, "files outside DOWNLOAD_DIR changed"
    assert victim.read_bytes() == b"precious"
    assert not absolute.exists()
    assert (client.media / "Good" / "film.mkv").read_bytes() == good.payloads[0]
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "1 in place, 3 not" in out
    assert "Final: refused:" in out
    assert "'x/../../../victim/file.txt'" in out
    assert "Rooted: refused:" in out
    assert "Named.txt: refused:" in out
    assert not (client.media / "Final").exists()
    assert not (client.media / "Rooted").exists()
    for path in files_under(tmp_path / "client"):
        assert path.resolve().is_relative_to(tmp_path / "client")
