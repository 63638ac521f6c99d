"""The curator daemon answers HTTP before its torrents are back (issue 15).

With 5,000 torrents the engine's restore took 1-2 s before the first HTTP answer. The
daemon (`serve`) now restores on a thread: here that thread is held at its gate, and
the manifest is served from disk meanwhile; changes wait until the catalog is back.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from meshmedia.curator import Curator
from meshmedia.engine import Engine
from tests.helpers import make_config, random_file, wait_for


def manifest(curator: Curator) -> Any:
    assert curator.server is not None
    url = curator.server.url.rstrip("/") + "/manifest/default.json"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def test_the_manifest_is_served_while_the_torrents_are_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, "curator", port=0)
    share = config.shares[0].path
    for k in range(3):
        random_file(share / f"{k}.mkv", 20_000 + k)
    with Curator(config, force_polling=True) as first:
        assert first.watcher is not None
        wait_for(lambda: len(manifest(first)["items"]) == 3, timeout=30)
        assert first.engine is not None
        hashes = [t.info_hash for t in first.engine.snapshot().torrents]

    gate = threading.Event()
    restore = Engine.restore_saved

    def held(engine: Engine) -> None:
        assert gate.wait(60)
        restore(engine)

    monkeypatch.setattr(Engine, "restore_saved", held)
    with Curator(config, force_polling=True, background_restore=True) as second:
        assert second.engine is not None
        assert len(manifest(second)["items"]) == 3  # answered with no torrent back yet
        assert second.engine.snapshot().torrents == ()
        assert not second.restored.is_set()
        gate.set()
        assert second.restored.wait(60)
        wait_for(lambda: {t.info_hash for t in second.engine.snapshot().torrents} == set(hashes))
        random_file(share / "new.mkv", 30_000)  # and the watcher runs once restored
        wait_for(lambda: len(manifest(second)["items"]) == 4, timeout=30)
