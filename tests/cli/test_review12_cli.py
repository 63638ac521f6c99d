"""The command line against the holes of the second attacker review of issue 12.

Real `meshmedia` processes throughout.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import NETWORK, Client, Curator, answers
from tests.helpers import free_port, run_meshmedia, wait_for
from tests.hostile import Seeder, hand_built, serve


def _serve_args(tmp_path: Path, *extra: str) -> list[str]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    return [
        "serve", "--share", f"default={share}", "--state-dir", str(tmp_path / "state"),
        "--host", "127.0.0.1", "--port", str(free_port()), "--listen-port", str(free_port()),
        "--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp", *extra,
    ]  # fmt: skip


def test_a_host_name_as_advertise_host_is_a_usage_error(tmp_path: Path) -> None:
    """Finding 6: --advertise-host nas.local was taken and put in every magnet's x.pe,
    which libtorrent drops (no peer) and connect_peer raised ArgumentError on."""
    result = run_meshmedia(*_serve_args(tmp_path, "--advertise-host", "nas.local"), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "'nas.local' is not accepted; expected an IP address or 'none'" in result.stderr
    assert "Traceback" not in result.stderr


HOSTILE_ITEMS = [
    {
        "path": "ok.mkv\n2026-12-01 20:00:00,000 INFO meshmedia.client: placed /forged.mkv",
        "torrent": "magnet:?xt=urn:btih:" + "a" * 40,
    },
    {
        "path": "x\x1b[2J\x1b[1;31mCLEARED\x1b[0m\x9b1m",
        "torrent": "magnet:?xt=urn:btih:" + "b" * 40,
    },
    {"title": "t\r\nforged line\x7f", "path": "/abs", "torrent": "magnet:?xt=urn:btih:" + "c" * 40},
]


def _no_control_characters(text: str) -> None:
    for line in text.splitlines():
        assert not any((ord(c) < 32 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in line), line
        assert not line.startswith("2026-12-01 20:00:00,000"), f"a forged log line: {line}"


def test_manifest_validate_escapes_control_characters(tmp_path: Path) -> None:
    """Finding 11: a rejected item's path or title went raw into validate's output."""
    doc = tmp_path / "hostile.json"
    doc.write_text(json.dumps({"group": "default", "version": 1, "items": HOSTILE_ITEMS}))
    result = run_meshmedia("manifest", "validate", str(doc))
    assert result.returncode == 1
    _no_control_characters(result.stdout + result.stderr)
    assert "item 1 (x\\x1b[2J\\x1b[1;31mCLEARED\\x1b[0m\\x9b1m): path contains" in result.stdout
    assert "item 0 (ok.mkv\\n2026-12-01 20:00:00,000 INFO" in result.stdout
    assert "item 2 (/abs)" in result.stdout


def test_sync_escapes_control_characters_in_its_log_and_summary(tmp_path: Path) -> None:
    """Finding 11: the client log and the --once summary quoted them raw (a forged
    'placed' line, a cleared terminal)."""
    body = json.dumps({"group": "default", "version": 1, "items": HOSTILE_ITEMS}).encode()
    with serve() as site:
        client = Client(tmp_path / "client", [site.body("/m.json", body)])
        result = client.once(timeout=60)
    assert result.returncode == 0, result.stderr  # nothing valid to place
    _no_control_characters(result.stdout + result.stderr)
    assert "refused item 1 (x\\x1b[2J" in result.stdout + result.stderr
    assert "skipping item 0 (ok.mkv\\n2026-12-01 20:00:00,000 INFO" in result.stderr


def test_under_umask_000_staging_is_private_and_media_not_writable_by_others(
    tmp_path: Path,
) -> None:
    """Finding 12: under umask 000, media/, .meshmedia/ and incomplete/ were 0777 and
    placed files 0666. Staging is 0700 whatever the umask; what is placed keeps the
    umask's read bits but never group or other write."""
    seeder = Seeder(tmp_path)
    try:
        show = hand_built(b"Show", [([b"s1", b"ep1.mkv"], b"one" * 9000), ([b"ep2.mkv"], b"2")])
        film = hand_built(b"film.mkv", single=b"film" * 9000)
        for torrent in (show, film):
            seeder.seed(torrent)
        items = [
            {"path": "TV/Show", "torrent": show.magnet("Show", seeder.port)},
            {"path": "film.mkv", "torrent": film.magnet("film.mkv", seeder.port)},
        ]
        body = json.dumps({"group": "default", "version": 1, "items": items}).encode()
        with serve() as site:
            client = Client(tmp_path / "client", [site.body("/m.json", body)])
            old = os.umask(0)
            try:
                result = client.once(timeout=120)
            finally:
                os.umask(old)
    finally:
        seeder.close()
    assert result.returncode == 0, result.stderr
    assert (client.media / "TV" / "Show" / "s1" / "ep1.mkv").read_bytes() == b"one" * 9000
    staging = client.media / ".meshmedia"
    for path in [staging, *staging.rglob("*")]:
        if path.is_dir():
            assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, path
    placed = [p for p in client.media.rglob("*") if not p.is_relative_to(staging)]
    assert len(placed) == 6  # TV, TV/Show, s1, ep1.mkv, ep2.mkv, film.mkv
    for path in [client.media, *placed]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o022 == 0, f"{path} is {mode:04o}"
        assert mode & 0o044 == 0o044, f"{path} is {mode:04o}: Jellyfin must read it"


SECRET = "s3cret-token-for-finding-13"


def _post_status(port: int, token: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/manifest/default.json",
        data=b'{"items": []}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("how", ["--token-file", "MESHMEDIA_TOKEN_FILE", "--token"])
def test_the_write_token_can_come_from_a_file_and_a_flag_is_warned_about(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, stop_later: list[Any]
) -> None:
    """Finding 13: `serve --token X` showed the token to every user in ps; a file
    (flag or environment) keeps it out of the process list, and the flag (kept for
    compatibility) now warns."""
    secret = tmp_path / "token.secret"
    secret.write_text(SECRET + "\n")
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    extra = {"--token-file": ["--token-file", str(secret)], "--token": ["--token", SECRET]}
    if how == "MESHMEDIA_TOKEN_FILE":
        monkeypatch.setenv("MESHMEDIA_TOKEN_FILE", str(secret))
    curator.spawn(
        "serve", "--share", f"default={curator.share}", "--state-dir", str(curator.base / "state"),
        "--host", "127.0.0.1", "--port", str(curator.port), "--listen-port",
        str(curator.peer_port), *NETWORK, *extra.get(how, []),
    )  # fmt: skip
    wait_for(lambda: answers(f"http://127.0.0.1:{curator.port}/"), timeout=60, interval=0.2)
    assert _post_status(curator.port, SECRET) == 200
    assert _post_status(curator.port, "wrong") == 401
    assert curator.proc is not None
    cmdline = Path(f"/proc/{curator.proc.pid}/cmdline").read_bytes()
    warned = "--token on the command line is visible to every user" in curator.text()
    assert (SECRET.encode() in cmdline) == (how == "--token") == warned
    assert SECRET not in curator.text()


def test_the_jellyfin_api_key_can_come_from_a_file(tmp_path: Path) -> None:
    """Finding 13: the same for `sync --jellyfin-api-key`; an empty or missing file is
    a usage error naming it."""
    key = tmp_path / "jellyfin.key"
    key.write_text("abc123\n")
    check = (
        "import sys\nfrom meshmedia.cli.options import build_config\n"
        "c = build_config({'jellyfin_api_key': None, 'jellyfin_api_key_file': "
        "__import__('pathlib').Path(sys.argv[1]), 'state_dir': sys.argv[2]})\n"
        "print(c.jellyfin_api_key)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check, str(key), str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.stdout.strip() == "abc123", run.stderr
    key.write_text("\n")
    url = "http://127.0.0.1:9/m.json"
    result = run_meshmedia(
        "sync", "--once", "--manifest-url", url, "--jellyfin-api-key-file", str(key),
        "--state-dir", str(tmp_path / "state"), "--download-dir", str(tmp_path / "media"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"the secret file {key} is empty" in result.stderr
