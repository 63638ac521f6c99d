"""The client's status port answers before its torrents are restored (issue 15): with
5,000 torrents the restore took 2-4 s before the first answer."""

from __future__ import annotations

import json
import threading
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from meshmedia.client import daemon
from meshmedia.engine import Engine
from tests.helpers import make_config

URL = "http://127.0.0.1:9/manifest/default.json"


def test_status_answers_while_the_torrents_are_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, "client", manifest_urls=(URL,))
    gate, reached = threading.Event(), threading.Event()
    restore = Engine.restore_saved

    def held(engine: Engine) -> None:
        reached.set()
        assert gate.wait(60)
        restore(engine)

    monkeypatch.setattr(Engine, "restore_saved", held)
    monkeypatch.setattr(daemon, "prepare_daemon", lambda: None)  # leaves this process alone
    stop = threading.Event()
    with ExitStack() as stack:
        parts: list[object] = []
        starting = threading.Thread(
            target=lambda: parts.append(daemon._start_parts(config, stack, stop))
        )
        starting.start()
        try:
            assert reached.wait(60)
            url = f"http://127.0.0.1:{config.status_port}/status"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert answer.status == 200
                assert json.loads(answer.read())["engine"]["torrents"] == []
        finally:
            gate.set()
            starting.join(60)
        assert parts
        stop.set()
