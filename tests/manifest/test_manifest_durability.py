"""Manifests are durable without an fsync on the publish path, and versions never go back."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshmedia.manifest import ManifestStore
from meshmedia.manifest.durability import BLOCK
from tests.manifest.test_manifest import item


def test_a_crash_that_loses_the_last_files_never_reuses_a_version(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    store = ManifestStore(folder)
    store.upsert("family", [item("a.mkv")])
    store.flush()
    first_file = (folder / "family.json").read_bytes()
    store.upsert("family", [item("b.mkv")])
    served = store.upsert("family", [item("c.mkv")])
    assert served.version == 3
    store.flush()
    # The crash: no close(), and the disk kept only version 1 of the file.
    (folder / "family.json").write_bytes(first_file)
    reopened = ManifestStore(folder)
    restored = reopened.get("family")
    # The items the disk kept, above every version served before the crash: a client
    # that saw version 3 takes it (it was served as version 1 before, a step back).
    assert restored.version > served.version
    assert [i.path for i in restored.items] == ["a.mkv"]
    on_disk = json.loads((folder / "family.json").read_bytes())
    assert on_disk["version"] == restored.version  # written, not only served
    after = reopened.upsert("family", [item("d.mkv")])
    assert after.version == restored.version + 1
    assert [i.path for i in after.items] == ["a.mkv", "d.mkv"]


def test_a_clean_close_goes_on_at_plus_one(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    store = ManifestStore(folder)
    store.preload(["family"])
    assert store.upsert("family", [item("a.mkv")]).version == 1
    assert store.upsert("family", [item("b.mkv")]).version == 2
    store.close()
    assert json.loads((folder / ".versions").read_text()) == {"family": 2}
    reopened = ManifestStore(folder)
    reopened.preload(["family"])
    assert reopened.upsert("family", [item("c.mkv")]).version == 3
    # An unclean stop after that jumps over the whole reservation.
    after_crash = ManifestStore(folder)
    assert after_crash.get("family").version == 3 + BLOCK
    assert after_crash.upsert("family", [item("d.mkv")]).version == 3 + BLOCK + 1


def test_closing_after_an_unclean_start_keeps_the_reservation(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    store = ManifestStore(folder)
    store.upsert("family", [item("a.mkv")])
    store.upsert("family", [item("b.mkv")])  # served as version 2, then a crash
    store.flush()
    mark = json.loads((folder / ".versions").read_text())["family"]
    (folder / "family.json").unlink()  # the crash lost the file altogether
    restarted = ManifestStore(folder)
    assert (restarted.get("family").version, restarted.get("family").items) == (mark + 1, ())
    restarted.close()  # the mark must not fall back
    assert ManifestStore(folder).upsert("family", [item("c.mkv")]).version == mark + 2


def test_publishing_writes_no_file_on_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ManifestStore(tmp_path / "manifests")
    store.preload(["family"])
    calls: list[tuple[str, str]] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls.append((name, threading.current_thread().name))
            return real(*args)

        return call

    monkeypatch.setattr(os, "fsync", spy("fsync", os.fsync))
    monkeypatch.setattr(os, "replace", spy("replace", os.replace))
    for n in range(5):
        store.upsert("family", [item(f"{n}.mkv")])
    assert [c for c in calls if c[1] == threading.current_thread().name] == []
    assert store.flush(timeout=10)
    assert ("fsync", "manifest-fsync") in calls
    assert ("replace", "manifest-fsync") in calls
    reread = ManifestStore(tmp_path / "manifests").get("family")
    assert [i.path for i in reread.items] == [f"{n}.mkv" for n in range(5)]
    store.close()


def test_a_broken_file_is_set_aside_and_versions_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "manifests"
    store = ManifestStore(folder)
    store.upsert("family", [item("a.mkv")])
    store.close()
    (folder / "family.json").write_bytes(b"")  # a power cut before the fsync can leave this
    reopened = ManifestStore(folder)
    assert reopened.get("family").items == ()
    assert (folder / "family.json.broken").exists()
    assert "renamed it to family.json.broken" in caplog.text
    assert reopened.get("family").version == 2  # version 1 was served with a.mkv
    assert reopened.upsert("family", [item("b.mkv")]).version == 3
