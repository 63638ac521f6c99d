"""Signed manifests end to end: a curator with a key, clients with --trust, real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Client, Curator, Daemon, get_json, sha256
from tests.helpers import free_port, random_file, run_meshmedia, wait_for

KIB = 1024


@pytest.fixture
def signed_curator(tmp_path: Path, stop_later: list[Daemon]) -> tuple[Curator, str]:
    """A running curator whose state dir holds a signing key, with one published file."""
    curator = Curator(tmp_path / "curator")
    keygen = run_meshmedia("keygen", "--state-dir", str(curator.base / "state"))
    assert keygen.returncode == 0, keygen.stderr
    public = keygen.stdout.strip()
    stop_later.append(curator)
    curator.start()
    random_file(curator.share / "clip.mkv", 300 * KIB)
    curator.wait_items(1)
    return curator, public


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain `python -m http.server` serving a folder: manifests we can alter at will."""
    folder = tmp_path / "www"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _reachable(port), timeout=30)
        yield folder, f"http://127.0.0.1:{port}/family.json"
    finally:
        proc.kill()
        proc.wait()


def _reachable(port: int) -> bool:
    try:
        get_json(f"http://127.0.0.1:{port}/")
    except json.JSONDecodeError:
        return True
    except OSError:
        return False
    return True


def test_good_signed_manifest_syncs(signed_curator: tuple[Curator, str], tmp_path: Path) -> None:
    curator, public = signed_curator
    document = get_json(curator.manifest_url)
    assert document["signature"]["key"] == public
    client = Client(tmp_path / "client", [curator.manifest_url])
    result = client.once("--trust", public)
    assert result.returncode == 0, result.stderr
    placed = client.media / "clip.mkv"
    assert sha256(placed) == sha256(curator.share / "clip.mkv")


def test_manifest_signed_by_another_key_is_refused(
    signed_curator: tuple[Curator, str], tmp_path: Path
) -> None:
    curator, _ = signed_curator
    other = run_meshmedia("keygen", "--state-dir", str(tmp_path / "other")).stdout.strip()
    client = Client(tmp_path / "client", [curator.manifest_url])
    result = client.once("--trust", other)
    assert result.returncode == 1
    assert "refused" in result.stderr
    assert f"not by the trusted key {other}" in result.stderr
    assert not (client.media / "clip.mkv").exists()


def test_tampered_manifest_is_refused(
    signed_curator: tuple[Curator, str], plain_server: tuple[Path, str], tmp_path: Path
) -> None:
    curator, public = signed_curator
    folder, url = plain_server
    document = get_json(curator.manifest_url)
    document["items"][0]["path"] = "elsewhere/clip.mkv"
    (folder / "family.json").write_text(json.dumps(document))
    client = Client(tmp_path / "client", [url])
    result = client.once("--trust", public)
    assert result.returncode == 1
    assert "does not match its content" in result.stderr
    assert not (client.media / "elsewhere").exists()


def test_rollback_is_refused(
    signed_curator: tuple[Curator, str], plain_server: tuple[Path, str], tmp_path: Path
) -> None:
    curator, public = signed_curator
    folder, url = plain_server
    old = get_json(curator.manifest_url)
    random_file(curator.share / "second.mkv", 200 * KIB)
    curator.wait_items(2)
    new = get_json(curator.manifest_url)
    assert new["version"] > old["version"]
    client = Client(tmp_path / "client", [url])
    (folder / "family.json").write_text(json.dumps(new))
    assert client.once("--trust", public).returncode == 0
    (folder / "family.json").write_text(json.dumps(old))
    result = client.once("--trust", public)
    assert result.returncode == 1
    assert f"manifest version {old['version']}" in result.stderr
    assert "rollback refused" in result.stderr
    assert (client.media / "second.mkv").exists()  # the newer manifest's file stays
