"""The engine's alert loop: an explicit table of real alert types, and a full queue is heard of."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import libtorrent as lt
import pytest

from meshmedia.engine import Engine, EngineEvent, EventKind
from meshmedia.store import Store
from tests.engine.test_engine import engine, make_torrent
from tests.helpers import make_config, random_file, wait_for


def test_every_alert_in_the_table_is_an_alert_type_of_this_libtorrent(tmp_path: Path) -> None:
    with engine(tmp_path, "node") as eng:
        names = eng._alerts.names
    assert len(names) >= 20
    missing = [name for name in names if not isinstance(getattr(lt, name, None), type)]
    assert missing == []
    assert all(issubclass(getattr(lt, name), lt.alert) for name in names)


def test_dropped_alerts_and_a_nearly_full_queue_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The alert thread is held in a subscriber while 40 torrents are added (each posts
    a few alerts): a queue of 8 overflows, libtorrent says so, and so does the log."""
    torrents = []
    for number in range(40):
        source = random_file(tmp_path / "src" / f"{number}" / "f.bin", 16 * 1024, seed=number)
        torrents.append((make_torrent(source, 16 * 1024), source.parent))
    held, release = threading.Event(), threading.Event()

    def hold(event: EngineEvent) -> None:
        if event.kind == EventKind.REMOVED:
            held.set()
            release.wait(30)

    config = make_config(tmp_path, "small-queue")
    caplog.set_level(logging.WARNING, logger="meshmedia.engine")
    with (
        Store.in_state_dir(config.state_dir) as store,
        Engine(config, store, settings={"alert_queue_size": 8}) as eng,
    ):
        eng.subscribe(hold)
        first = eng.add_seed(*torrents[0])
        eng.remove(first)
        assert held.wait(30)  # the alert thread is inside `hold` now
        for data, folder in torrents[1:]:
            eng.add_seed(data, folder)
        release.set()
        assert wait_for(lambda: "libtorrent dropped alerts" in caplog.text, timeout=30)
        assert wait_for(lambda: "the alert queue held" in caplog.text, timeout=30)
        # the engine goes on: a fresh status for every torrent still comes
        assert wait_for(lambda: len(eng.snapshot().torrents) == 39, timeout=30)
        eng.close(timeout=2)  # resume data alerts drop too (that is what the warning is for)


def test_close_lets_go_of_the_session_and_its_port(tmp_path: Path) -> None:
    """libtorrent closes its sockets only when the last reference to the session goes;
    every component holding it must let go at close (a restart wants the same port)."""
    with engine(tmp_path, "node") as eng:
        port = eng.listen_port
    assert eng._session is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # OSError while the old session still listens
