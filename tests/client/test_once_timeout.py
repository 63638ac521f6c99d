"""`meshmedia sync --once --timeout SECONDS` as a real process: it never hangs, and its
summary names each unfinished item and why (issue 17; review finding 15)."""

from __future__ import annotations

from pathlib import Path

from tests.daemons import MIB, Client, Curator, Daemon
from tests.helpers import random_file


def test_once_gives_up_at_its_timeout_naming_each_item_and_why(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator", upload_limit="128K")  # 4 MiB: 32 s
    stop_later.append(curator)
    random_file(curator.share / "Film.mkv", 4 * MIB, seed=1)
    curator.start()
    curator.wait_items(1)
    client = Client(tmp_path / "client", [curator.manifest_url])

    slow = client.once("--timeout", "3")
    assert slow.returncode == 1, slow.stderr
    assert "timed out after 3 s (--timeout)" in slow.stderr
    assert "0 in place, 1 not" in slow.stderr
    assert "Film.mkv: downloading: " in slow.stderr
    assert not (client.media / "Film.mkv").exists()

    curator.stop()  # unreachable: no manifest server, no peer
    cut_off = client.once("--timeout", "2")
    assert cut_off.returncode == 1, cut_off.stderr
    assert "using the last good manifest" in cut_off.stderr
    assert "Film.mkv: downloading: " in cut_off.stderr
    assert "no peer" in cut_off.stderr
    assert "timed out after 2 s" in cut_off.stderr
    assert not (client.media / "Film.mkv").exists()


def test_timeout_is_a_setting_with_a_usage_error_for_bad_values(tmp_path: Path) -> None:
    client = Client(tmp_path / "client", ["http://127.0.0.1:9/manifest/default.json"])
    bad = client.once("--timeout", "soon")
    assert bad.returncode == 2
    assert "--timeout" in bad.stderr
    assert "Traceback" not in bad.stderr
