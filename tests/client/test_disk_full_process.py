"""A full disk, as real processes on a real small file system (tmpfs, 12 MiB): an item
too large is not started; the disk filling mid-download pauses that item with a clear
status line while the others stay placed and seeding; nothing partial appears at a
final path; the download resumes by itself once space returns (issue 17)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.test_hooks_process import Receiver
from tests.client.test_sync_process import FinalPathWatcher
from tests.daemons import MIB, Client, Curator, Daemon, sha256
from tests.helpers import random_file, wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs (root mounts it: here and in CI, where a skip fails the run)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "client" / "media"
    mount.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", str(mount)],
                   check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def events(receiver: Receiver) -> set[tuple[str, str]]:
    return {(b["event"], b["path"]) for b in receiver.bodies}


def item_state(client: Client, path: str) -> dict[str, str] | None:
    items = (client.status() or {}).get("items", [])
    return next((i for i in items if i["path"] == path), None)


def test_a_disk_that_fills_and_frees(
    tmp_path: Path, small_disk: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator", upload_limit="1M")
    stop_later.append(curator)
    random_file(curator.share / "Big.mkv", 8 * MIB, seed=1)
    random_file(curator.share / "Huge.mkv", 20 * MIB, seed=2)
    random_file(curator.share / "Small.mkv", MIB // 4, seed=3)
    curator.start()
    curator.wait_items(3)
    client = Client(tmp_path / "client", [curator.manifest_url])
    assert client.media == small_disk
    watcher = FinalPathWatcher(
        {client.media / name: sha256(curator.share / name) for name in ("Big.mkv", "Huge.mkv")}
    )
    watcher.start()
    stop_later.append(client)
    receiver = Receiver(failures=0)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    try:
        client.start("--webhook", f"http://127.0.0.1:{receiver.server_port}/hook")
        wait_for(lambda: client.placed("Small.mkv"), timeout=60, describe=client.text)
        huge = wait_for(
            lambda: (s := item_state(client, "Huge.mkv")) and s["state"] == "paused" and s
        )
        assert "not enough disk space" in huge["error"]

        def downloading() -> bool:
            torrents = (client.status() or {}).get("engine", {}).get("torrents", [])
            return any(t["name"] == "Big.mkv" and t["total_done"] > MIB for t in torrents)

        wait_for(downloading, timeout=60, describe=client.text)
        filler = client.media / "filler.bin"
        free = os.statvfs(client.media).f_bavail * os.statvfs(client.media).f_frsize
        random_file(filler, free - 1 * MIB)  # 1 MiB left: Big cannot finish

        def paused() -> dict[str, str] | None:
            state = item_state(client, "Big.mkv")
            return state if state and state["state"] == "paused" else None

        big = wait_for(paused, timeout=60, describe=client.text)
        assert "the disk is full" in big["error"]
        assert "download paused" in big["error"]
        assert not (client.media / "Big.mkv").exists()
        # the others go on: Small stays placed and seeding, the daemon keeps answering
        assert client.placed("Small.mkv")
        torrents = (client.status() or {})["engine"]["torrents"]
        assert [t["state"] for t in torrents if t["name"] == "Small.mkv"] == ["seeding"]

        filler.unlink()  # space returns; --interval 2: the pause is retried
        wait_for(lambda: client.placed("Big.mkv"), timeout=90, describe=client.text)
        wait_for(lambda: ("placed", "Big.mkv") in events(receiver), timeout=30)
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
        receiver.shutdown()
        receiver.server_close()
    paused = [b["path"] for b in receiver.bodies if b.get("state") == "paused"]
    assert sorted(paused) == ["Big.mkv", "Huge.mkv"]  # told once each, not on every retry
    assert sha256(client.media / "Big.mkv") == sha256(curator.share / "Big.mkv")
    assert watcher.violations == []
    assert not (client.media / "Huge.mkv").exists()
    client.stop()
