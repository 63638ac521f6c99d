"""A round of many new files is listed in batches (issue 15): one manifest version per
file made publishing 5,000 files O(N^2) (each version copied and served every item)."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

from meshmedia.config import Share
from meshmedia.curator import Publisher
from meshmedia.curator.batches import Shares, _share_of
from meshmedia.engine import Engine
from meshmedia.manifest import Item, ManifestStore
from meshmedia.store import Store
from tests.helpers import make_config, random_file


def test_a_round_of_40_files_is_listed_in_a_few_versions(tmp_path: Path) -> None:
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    files = [random_file(share / "d" / f"{k:02d}.jpg", 10_000 + k) for k in range(40)]
    random_file(share / "Show", 5_000)
    clash = random_file(share / "x" / "y.jpg", 7_000)
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        publisher.publish(share / "Show")
        first = manifests.get("default").version
        publisher.publish_many([(p, None) for p in [*files, clash]])
        manifest = manifests.get("default")
        assert {i.path for i in manifest.items} == {
            "Show", "x/y.jpg", *(f"d/{k:02d}.jpg" for k in range(40))
        }  # fmt: skip
        # the first at once, the rest together (one per BATCH_SECONDS): 41 before
        assert manifest.version - first <= 4, manifest.version - first
        assert {e.path for e in store.catalog()} == {i.path for i in manifest.items}
        assert {t.info_hash for t in engine.snapshot().torrents} == {
            i.info_hash for i in manifest.items
        }
        assert set(publisher.published()) == {p.resolve() for p in [share / "Show", *files, clash]}
        manifests.close()


def test_a_long_round_lists_its_batches_ever_further_apart(tmp_path: Path) -> None:
    """Batches 0.25 s, then 0.5, 1 and 2 s apart (at most): a 5,000-file burst made 24
    versions in 8 s, each fetched and parsed whole by every client."""
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    files = [random_file(share / "d" / f"{k:03d}.jpg", 1_000 + k) for k in range(121)]
    now = [0.0]

    def clock() -> float:  # each look: 50 ms later (about one look a file)
        now[0] += 0.05
        return now[0]

    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests, clock=clock)
        publisher.publish_many([(p, None) for p in files])
        manifest = manifests.get("default")
        assert len(manifest.items) == 121
        # the first, then ~6 s of looks: 0.25 + 0.5 + 1 + 2 + 2 (+ the rest); 25 at 0.25 s
        assert manifest.version <= 8, manifest.version
        manifests.close()


def test_a_batch_that_cannot_be_kept_is_listed_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `.torrent` row that cannot be written (disk full) fails one batch: its files go
    one by one, and the round goes on (review 7: the sqlite3 error ended the round)."""
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    files = [random_file(share / f"{k}.jpg", 10_000 + k) for k in range(5)]
    real, calls = Store.save_torrents, []

    def full_once(self: Store, rows: list[tuple[str, bytes]]) -> None:
        calls.append(len(rows))
        if len(rows) > 1 and calls.count(len(rows)) == 1:  # the first batch's
            raise sqlite3.OperationalError("database or disk is full")
        real(self, rows)

    monkeypatch.setattr(Store, "save_torrents", full_once)
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        publisher.publish_many([(p, None) for p in files])
        assert sorted(i.path for i in manifests.get("default").items) == [
            f"{k}.jpg" for k in range(5)
        ]
        assert {e.path for e in store.catalog()} == {f"{k}.jpg" for k in range(5)}
        manifests.close()


def test_what_a_round_has_ready_is_listed_before_a_large_file(tmp_path: Path) -> None:
    """A large file (a first pass, its SHA-256 later) or a folder may take minutes: the
    small files hashed before it are listed first (review 7: they waited for it)."""
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    small = [random_file(share / f"{k}.jpg", 10_000 + k) for k in range(3)]
    large = random_file(share / "large.mkv", 300_000)
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        publisher.first_pass_min = 200_000
        updates: list[list[str]] = []
        real = manifests.update

        def spy(group: str, items: list[Item], *gone: object) -> object:
            updates.append([i.path for i in items])
            return real(group, items, *gone)

        manifests.update = spy  # type: ignore[method-assign]
        publisher.publish_many([(p, None) for p in [*small, large]])
        assert updates[:3] == [["0.jpg"], ["1.jpg", "2.jpg"], ["large.mkv"]], updates
        listed = {i.path: i for i in manifests.get("default").items}
        assert set(listed) == {"0.jpg", "1.jpg", "2.jpg", "large.mkv"}
        manifests.close()


def test_a_round_path_belongs_to_a_share_only_below_its_folder(tmp_path: Path) -> None:
    """The burst path matches paths to share folders as text: a sibling whose name starts
    with the share's, the share folder itself and a path with `..` belong to none (they
    take publish()'s path, which resolves and explains)."""
    share = Share("default", tmp_path / "share")
    shares = Shares([(share, tmp_path / "share")])
    assert _share_of(tmp_path / "share" / "d" / "a.jpg", shares) == (
        share, tmp_path / "share", "d/a.jpg"
    )  # fmt: skip
    assert _share_of(tmp_path / "share2" / "a.jpg", shares) is None
    assert _share_of(tmp_path / "share", shares) is None
    assert _share_of(Path(f"{tmp_path}/share/../etc/a.jpg"), shares) is None
    assert _share_of(Path(f"{tmp_path}/share/d/.."), shares) is None


def test_a_large_round_is_hashed_ahead_by_the_child_and_listed_right(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A round of 400 small files, told of beforehand as the watcher does: the hashing
    child hashes nearly all (the publisher those it has no answer for yet); every item's
    digests are the file's own. Started with the round instead, the child is up after
    55 ms, when this thread had already hashed 120-180 of them."""
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    files = [random_file(share / "d" / f"{k:03d}.jpg", 60_000 + 37 * k) for k in range(400)]
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        publisher.expect_many(len(files))
        time.sleep(1.0)  # the files settle meanwhile: the child starts (55 ms)
        with caplog.at_level(logging.INFO, logger="meshmedia.hash_child"):
            publisher.publish_many([(p, None) for p in files])
        publisher.close()
        items = {i.path: i for i in manifests.get("default").items}
        assert len(items) == 400
        for path in files:
            item = items[f"d/{path.name}"]
            assert item.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert item.size == path.stat().st_size
        (line,) = [r.getMessage() for r in caplog.records if "hashing child" in r.getMessage()]
        used = int(line.split(" hashed ")[1].split()[0])
        assert used >= 350, line  # nearly all: the first request's answer was awaited
        manifests.close()


def test_a_burst_with_hostile_entries_publishes_only_the_plain_files_inside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A round large enough for the hashing child, with a folder that links out of the
    share, a linked file, a FIFO and a file gone before its turn: none is published (nor
    read: no item has the outside file's digest), each is named, the plain files are."""
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    outside = random_file(tmp_path / "outside" / "secret.jpg", 50_000)
    files = [random_file(share / "d" / f"{k:03d}.jpg", 20_000 + k) for k in range(120)]
    (share / "evil").symlink_to(outside.parent)
    (share / "link.jpg").symlink_to(outside)
    os.mkfifo(share / "d" / "pipe.jpg")
    gone = share / "d" / "gone.jpg"
    hostile = [share / "evil" / "secret.jpg", share / "link.jpg", share / "d" / "pipe.jpg", gone]
    targets = files[:60] + hostile + files[60:]
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        publisher.expect_many(len(targets))
        time.sleep(1.0)  # the child starts
        with caplog.at_level(logging.WARNING):
            publisher.publish_many([(p, None) for p in targets])
        publisher.close()
        items = manifests.get("default").items
        assert {i.path for i in items} == {f"d/{p.name}" for p in files}
        secret = hashlib.sha256(outside.read_bytes()).hexdigest()
        assert secret not in {i.sha256 for i in items}
        for path in hostile:
            assert str(path) in caplog.text, path
        manifests.close()
