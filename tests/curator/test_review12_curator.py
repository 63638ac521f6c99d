"""The curator against the holes of the second attacker review of issue 12.

A real `meshmedia serve` and a real `meshmedia sync --once`, on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemons import Client, Curator

# Names libtorrent 2.1.1 changes when it loads a torrent (native_notes/security.md):
# over 240 bytes (cut to 240), and bidirectional-text controls (dropped).
SANITISED = ["L" * 246 + ".mkv", "movie\u202egpj.mkv", "a\u200eb.mkv", "\u65e5" * 83 + ".mkv"]


def test_names_libtorrent_changes_sync_under_their_real_names(
    tmp_path: Path, stop_later: list[Any]
) -> None:
    """Finding 4: such files were published and announced, then stayed "downloading"
    forever without a word (the seed looked for libtorrent's name, not the file's).
    The seed now serves them under their real names, and `sync --once` places them."""
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    payloads = {name: os.urandom(30_000 + n) for n, name in enumerate([*SANITISED, "plain.mkv"])}
    for name, payload in payloads.items():
        (curator.share / name).write_bytes(payload)
    curator.start()
    curator.wait_items(len(payloads))
    client = Client(tmp_path / "client", [curator.manifest_url])
    result = client.once(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    for name, payload in payloads.items():
        placed = client.media / name
        assert hashlib.sha256(placed.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert curator.stop() == 0  # restored from its resume data, the seed still finds them
    curator.start()
    again = Client(tmp_path / "again", [curator.manifest_url])
    result = again.once(timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert all((again.media / name).read_bytes() == data for name, data in payloads.items())


def test_a_folder_with_a_name_libtorrent_changes_is_refused_naming_the_file(
    tmp_path: Path, stop_later: list[Any]
) -> None:
    """Finding 4, folder items: a file inside a folder item whose name libtorrent
    changes would be placed under another name than the manifest's `files` list;
    POST /seed refuses it with a message naming the file."""
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    folder = curator.share / "Show"
    folder.mkdir()
    (folder / SANITISED[1]).write_bytes(b"x" * 20_000)
    (folder / "other.mkv").write_bytes(b"y" * 1000)
    curator.start()
    token = (curator.base / "state" / "token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{curator.port}/seed",
        json.dumps({"path": str(folder), "dest_path": "F-Show"}).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, body = answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        status, body = exc.code, json.loads(exc.read())
    assert status == 400, body
    assert "Show/movie\\u202egpj.mkv" in body["error"]
    assert "libtorrent would store it as 'Show/moviegpj.mkv'" in body["error"]
