"""Slow work for one item never delays another's placement: the client's main loop and its
lock never wait for a `.torrent` server or for a file being hashed (meshmedia/client/work.py).

A file being hashed is made as slow as the test needs with a real kernel mechanism: a
write lease (fcntl F_SETLEASE) held on it makes every other open() of it block until the
lease is released (or the kernel breaks it, after /proc/sys/fs/lease-break-time, 45 s).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from meshmedia.client.fetcher import ManifestFetcher
from tests.client.test_client import Node
from tests.helpers import wait_for
from tests.hostile import serve

F_SETLEASE = 1024  # linux/fcntl.h; the fcntl module has no name for it
LEASE_BREAK = Path("/proc/sys/fs/lease-break-time")


@contextmanager
def leased(path: Path) -> Iterator[threading.Event]:
    """Hold a write lease on `path`; the Event is set when someone's open() is held by it."""
    asked = threading.Event()
    previous = signal.signal(signal.SIGIO, lambda *_: asked.set())  # SIGIO would kill us
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
        yield asked
    finally:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)
        signal.signal(signal.SIGIO, previous)


@pytest.mark.skipif(
    not LEASE_BREAK.exists() or int(LEASE_BREAK.read_text()) < 30,
    reason="needs file leases held for 30 s at least (Linux, fs.lease-break-time)",
)
def test_a_trickling_torrent_url_and_a_file_being_hashed_hold_up_no_placement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the main loop hashed a file to adopt under the client's lock, so the item
    queued after it waited for the whole hash (here: until the lease was released)."""
    caplog.set_level(logging.INFO, logger="meshmedia.client")
    node = Node(tmp_path)
    with serve() as site:
        try:
            slow = node.publish("1 slow torrent.mkv", 300_000)
            big = node.publish("2 in place.mkv", 32 << 20)
            small = node.publish("3 small.mkv", 200_000)
            in_place = node.media / big.path
            in_place.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(node.share / big.path, in_place)  # the client has it already
            trickling = replace(slow, torrent=site.trickle("/slow.torrent", every=0.5))
            assert node.curator.manifests is not None
            node.curator.manifests.replace("default", [trickling, big, small])
            body = ManifestFetcher(node.url).fetch().body
            assert body is not None

            with leased(in_place) as hashing:
                assert node.client.apply(node.url, body)

                def small_placed() -> bool:
                    node.client.step()
                    return node.state(small.path).state == "placed"

                wait_for(small_placed, timeout=30, interval=0.05)
                assert hashing.is_set()  # the check of the file in place had begun
                assert node.state(big.path).state == "queued"  # its hash waits on the lease
                assert node.state(slow.path).state == "queued"  # its .torrent still trickles
                assert "adopting" not in caplog.text

            def big_placed() -> bool:
                node.client.step()
                return node.state(big.path).state == "placed"

            wait_for(big_placed, timeout=60, interval=0.05)
        finally:
            site.closing.set()
            node.close()
    assert f"{in_place} is already in place and verified: adopting it" in caplog.text
    placed = [r.getMessage().split(" (")[0] for r in caplog.records if "placed " in r.getMessage()]
    assert placed == [f"placed {node.media / small.path}", f"placed {in_place}"]
    assert site.hits.get("/slow.torrent") == 1
