"""`meshmedia serve` as a real process: a share folder in, manifests out over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, meshmedia_command, random_file, wait_for

GROUP = "family"


class CuratorProcess:
    """One `meshmedia serve` child with its own state dir, ports and share folder."""

    def __init__(self, base: Path, *, polling: bool = False) -> None:
        self.base = base
        self.share = base / "share"
        self.state = base / "state"
        self.log = base / "serve.log"
        self.port = free_port()
        self.polling = polling
        self.proc: subprocess.Popen[bytes] | None = None
        self.share.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = meshmedia_command(
            "serve",
            "--share", f"{GROUP}={self.share}",
            "--state-dir", str(self.state),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--listen-host", "127.0.0.1", "--listen-port", str(free_port()),
            "--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp",
            "--settle-time", "0.2", "--poll-quiet", "1.0",
            "--log-level", "DEBUG",
        )  # fmt: skip
        env = {**os.environ, "MESHMEDIA_FORCE_POLLING": "1" if self.polling else "0"}
        env.pop("MESHMEDIA_TOKEN", None)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=self.base
            )
        wait_for(self._up, timeout=60, interval=0.1)

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log_text()}")
        try:
            self.get("/")
        except OSError:
            return False
        return True

    def get(self, route: str) -> Any:
        with urllib.request.urlopen(self.url + route, timeout=10) as answer:
            return json.loads(answer.read())

    def items(self) -> dict[str, dict[str, Any]]:
        """The manifest's items by path."""
        try:
            manifest = self.get(f"/manifest/{GROUP}.json")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise
        return {item["path"]: item for item in manifest["items"]}

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running(base: Path, *, polling: bool = False) -> Iterator[CuratorProcess]:
    curator = CuratorProcess(base, polling=polling)
    try:
        curator.start()
        yield curator
    finally:
        curator.kill()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def info_hash(item: dict[str, Any]) -> str:
    match = re.search(r"urn:btih:([0-9a-fA-F]{40})", item["torrent"])
    assert match, item["torrent"]
    return match.group(1).lower()


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_share_folder_to_manifest(tmp_path: Path, polling: bool) -> None:
    with running(tmp_path / "c", polling=polling) as curator:
        # A copied file appears with the right sha256 and path.
        source = random_file(tmp_path / "src.bin", 200_000)
        (curator.share / "Films").mkdir()
        (curator.share / "Moved").mkdir()  # watched before the move (see the notes)
        target = curator.share / "Films" / "film.mkv"
        target.write_bytes(source.read_bytes())
        item = wait_for(lambda: curator.items().get("Films/film.mkv"), timeout=30)
        assert item["sha256"] == sha256(source)
        assert item["size"] == 200_000

        # A slow writer is never listed before it is complete. With inotify nothing is
        # published before the close, so the writer's pauses cannot race the watcher;
        # polling's quiet interval is raced by any pause, so that case is tested on an
        # injected clock (test_watcher.py::test_slow_writer_is_followed_not_published_early).
        if not polling:
            slow = curator.share / "slow.mkv"
            with slow.open("wb") as out:
                for _ in range(8):
                    out.write(os.urandom(32_000))
                    out.flush()
                    assert "slow.mkv" not in curator.items()
                    time.sleep(0.4)  # a deliberate slow writer; the file stays open
            item = wait_for(lambda: curator.items().get("slow.mkv"), timeout=30)
            assert item["sha256"] == sha256(slow)
            assert item["size"] == 8 * 32_000

        # `.part` then rename: listed once, under the final name.
        part = random_file(curator.share / "dl.mkv.part", 50_000)
        digest = sha256(part)
        part.rename(curator.share / "dl.mkv")
        item = wait_for(lambda: curator.items().get("dl.mkv"), timeout=30)
        assert item["sha256"] == digest
        assert not [p for p in curator.items() if p.endswith(".part")]

        # A move changes the path without re-hashing: the same torrent (info hash),
        # and the publisher logs a hash-cache hit for the new path instead of hashing.
        before = curator.items()["Films/film.mkv"]
        new = curator.share / "Moved" / "film.mkv"
        target.rename(new)
        wait_for(
            lambda: (
                "Films/film.mkv" not in (items := curator.items()) and "Moved/film.mkv" in items
            ),
            timeout=30,
        )
        moved = curator.items()["Moved/film.mkv"]
        assert moved["added_at"] == before["added_at"]
        assert info_hash(moved) == info_hash(before)
        assert moved["sha256"] == before["sha256"]
        assert f"hash cache hit for {new}" in curator.log_text()

        # A delete removes the item.
        (curator.share / "dl.mkv").unlink()
        wait_for(lambda: "dl.mkv" not in curator.items(), timeout=30)

        assert curator.stop() == 0
        log = curator.log_text()
        assert "manifests at" in log
        assert "write token in" in log
        assert str(curator.share) in log


def test_restart_reconciles_and_sigterm_exits_zero(tmp_path: Path) -> None:
    with running(tmp_path / "c") as curator:
        kept = random_file(curator.share / "kept.mkv", 30_000)
        gone = random_file(curator.share / "gone.mkv", 30_000)
        wait_for(lambda: {"kept.mkv", "gone.mkv"} <= set(curator.items()), timeout=30)
        assert curator.stop() == 0

        gone.unlink()
        added = random_file(curator.share / "added.mkv", 40_000)
        (curator.share / "ignored.tmp").write_bytes(b"x" * 10)
        curator.start()
        wait_for(lambda: set(curator.items()) == {"kept.mkv", "added.mkv"}, timeout=30)
        items = curator.items()
        assert items["added.mkv"]["sha256"] == sha256(added)
        assert items["kept.mkv"]["sha256"] == sha256(kept)
        assert curator.stop() == 0
        assert "Traceback" not in curator.log_text()


def test_busy_http_port_is_one_clear_line(tmp_path: Path) -> None:
    curator = CuratorProcess(tmp_path / "c")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", curator.port))
        try:
            curator.start()
        except AssertionError as exc:
            message = str(exc)
        else:
            curator.kill()
            pytest.fail("serve started on a busy port")
    assert "serve exited 2" in message
    assert f"cannot listen on 127.0.0.1:{curator.port}" in message
    assert "Traceback" not in message


def test_a_crash_that_empties_the_manifest_loses_no_item_and_no_version(tmp_path: Path) -> None:
    curator = CuratorProcess(tmp_path / "c")
    try:
        curator.start()
        random_file(curator.share / "a.bin", 100_000)
        wait_for(lambda: "a.bin" in curator.items(), timeout=30, describe="a.bin listed")
        served = curator.get(f"/manifest/{GROUP}.json")["version"]
        curator.kill()
        # What a power cut between the rename and the background fsync can leave.
        (curator.state / "manifests" / f"{GROUP}.json").write_bytes(b"")
        curator.start()
        manifest = curator.get(f"/manifest/{GROUP}.json")
        assert [item["path"] for item in manifest["items"]] == ["a.bin"]  # from the catalog
        assert manifest["version"] > served  # clients that saw `served` accept it
        log = curator.log_text()
        assert "renamed it to family.json.broken" in log
        assert "listed again" in log
    finally:
        curator.kill()
