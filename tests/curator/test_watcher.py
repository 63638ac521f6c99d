"""The watcher's own logic with real watchdog observers on tmp_path.

The publisher here records calls (and the size each file had when it was
published), so the tests see exactly what the watcher decided.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileModifiedEvent

from meshmedia.config import Share
from meshmedia.curator import Publisher, Watcher
from meshmedia.curator.watch_fs import file_stat, is_temporary
from meshmedia.curator.watcher import MOVED_IN_QUIET, Command, _Pending
from meshmedia.engine import Engine
from meshmedia.manifest import ManifestStore
from meshmedia.store import Store
from tests.helpers import bound, make_config, random_file, wait_for


class RecordingPublisher:
    """Records the watcher's calls; publish() remembers the size it saw."""

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[str, ...]] = []
        self.sizes: dict[Path, list[int]] = {}
        self.catalog: set[Path] = set()
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def publish(self, path: Path, group: str | None = None) -> None:
        if self.fail_on and path.name == self.fail_on:
            raise OSError("simulated failure")
        with self.lock:
            self.calls.append(("publish", path.name, group or ""))
            self.sizes.setdefault(path, []).append(path.stat().st_size)
            self.catalog.add(path)

    def unpublish(self, path: Path) -> None:
        with self.lock:
            self.calls.append(("unpublish", path.name))
            self.catalog.discard(path)

    def moved(self, old: Path, new: Path) -> None:
        with self.lock:
            self.calls.append(("moved", old.name, new.name))
            self.catalog.discard(old)
            self.catalog.add(new)

    def follow(self, path: Path) -> None:
        with self.lock:
            self.calls.append(("follow", path.name))

    def published(self) -> frozenset[Path]:
        with self.lock:
            return frozenset(self.catalog)

    def names(self, kind: str) -> list[str]:
        with self.lock:
            return [c[1] for c in self.calls if c[0] == kind]


@pytest.fixture(params=["inotify", "polling"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def share(tmp_path: Path) -> Path:
    folder = tmp_path / "share"
    folder.mkdir()
    return folder


class FakeClock:
    """The watcher's clock, moved on only by the test (then `Watcher.wake()`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def start_watcher(
    tmp_path: Path, share: Path, pub: RecordingPublisher, mode: str, clock: Any = None
) -> Watcher:
    config = make_config(tmp_path, shares=(Share("family", share),), poll_quiet=0.6)
    watcher = Watcher(
        config, pub, force_polling=(mode == "polling"), poll_interval=0.1,
        clock=clock or time.monotonic,
    )  # fmt: skip
    watcher.start()
    assert watcher.polling == (mode == "polling")
    return watcher


@pytest.fixture
def pub() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def watcher(tmp_path: Path, share: Path, pub: RecordingPublisher, mode: str) -> Iterator[Watcher]:
    w = start_watcher(tmp_path, share, pub, mode)
    try:
        assert w.wait_idle(bound(30))
        yield w
    finally:
        w.close()


def test_temporary_names() -> None:
    root = Path("/s")
    for name in [
        "a.part",
        "b.crdownload",
        "c.TMP",
        "d~",
        ".hidden",
        ".movie.mkv.Ab12Cd",
        "x/.git/f",
    ]:
        assert is_temporary(root / name, root), name
    for name in ["movie.mkv", "Show/S01/e1.mkv", "a.partial", "tmp/a.mkv"]:
        assert not is_temporary(root / name, root), name
    assert is_temporary(Path("/elsewhere/a.mkv"), root)


def test_copied_file_is_published_once_complete(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    data = os.urandom(300_000)
    (share / "film.mkv").write_bytes(data)
    wait_for(lambda: pub.names("publish"), timeout=20)
    assert watcher.wait_idle(bound(30))
    assert pub.sizes[share / "film.mkv"] == [len(data)]
    assert ("publish", "film.mkv", "family") in pub.calls


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def frozen(
    tmp_path: Path, share: Path, pub: RecordingPublisher, mode: str, clock: FakeClock
) -> Iterator[Watcher]:
    """A watcher on a clock that stands still until the test moves it: nothing is ever
    settled or quiet by itself, however slow the machine."""
    w = start_watcher(tmp_path, share, pub, mode, clock)
    try:
        assert w.wait_idle(bound(30))
        yield w
    finally:
        w.close()


def seen(watcher: Watcher, path: Path, size: int) -> bool:
    """The watcher has taken in `path` at `size`: closed (inotify) or its stat (polling)."""
    pending = watcher._pending.get(path)
    if pending is None:
        return False
    if watcher.polling:
        return pending.stat is not None and pending.stat[0] == size
    return pending.due is not None and path.stat().st_size == size


def test_slow_writer_is_followed_not_published_early(
    share: Path, pub: RecordingPublisher, frozen: Watcher, clock: FakeClock, mode: str
) -> None:
    path = share / "slow.mkv"
    with path.open("wb") as out:
        for number in range(1, 7):
            out.write(os.urandom(50_000))
            out.flush()
            if mode == "polling":
                wait_for(lambda n=number: seen(frozen, path, n * 50_000))
            else:  # one follow per write once the throttle's interval has passed
                wait_for(lambda n=number: len(pub.names("follow")) == n)
                clock.now += 0.5
        assert pub.names("publish") == []
    wait_for(lambda: seen(frozen, path, 300_000))  # the close (inotify), the last stat
    assert pub.names("publish") == []  # written, closed, seen: but not quiet yet
    clock.now += 0.6
    frozen.wake()
    wait_for(lambda: pub.names("publish"), timeout=20)
    assert frozen.wait_idle(bound(30))
    assert pub.sizes[path] == [300_000]


def test_following_is_throttled(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock
) -> None:
    """Growth is followed (inotify's modify events) at most once per follow interval."""
    watcher = start_watcher(tmp_path, share, pub, "inotify", clock)
    try:
        path = share / "fast.mkv"
        with path.open("wb") as out:
            for _ in range(5):
                out.write(os.urandom(10_000))
                out.flush()
            wait_for(lambda: len(pub.names("follow")) == 1)
            clock.now += 0.5  # the follow interval
            out.write(os.urandom(10_000))
            out.flush()
        wait_for(lambda: seen(watcher, path, 60_000))  # the close: every write came before
        assert len(pub.names("follow")) == 2  # six writes, one interval apart at most: two
    finally:
        watcher.close()


def test_rewrite_republishes(share: Path, pub: RecordingPublisher, watcher: Watcher) -> None:
    path = share / "doc.bin"
    path.write_bytes(b"a" * 1000)
    wait_for(lambda: pub.sizes.get(path) == [1000], timeout=20)
    with path.open("ab") as out:  # an SMB/NFS copy reopening the file
        out.write(b"b" * 1000)
    wait_for(lambda: pub.sizes.get(path) == [1000, 2000], timeout=20)


def test_part_file_renamed_is_published_under_final_name(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    (share / "dl.mkv.part").write_bytes(os.urandom(10_000))
    (share / ".rsync.mkv.Xy12Zz").write_bytes(os.urandom(10_000))
    (share / "marker.mkv").write_bytes(b"m")  # seen after them (in order, or one poll)
    wait_for(lambda: pub.names("publish") == ["marker.mkv"], timeout=20)
    assert watcher.wait_idle(bound(30))
    assert [c for c in pub.calls if c[1] != "marker.mkv"] == []  # temporary names: nothing
    pub.calls.clear()
    (share / "dl.mkv.part").rename(share / "dl.mkv")
    wait_for(lambda: pub.names("publish"), timeout=20)
    assert watcher.wait_idle(bound(30))
    assert pub.names("publish") == ["dl.mkv"]


def test_a_published_file_renamed_to_a_temporary_name_is_unpublished(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    """`a.mkv` -> `a.mkv.part` is a file being rewritten (or hidden), not a move: the
    temporary name must never be published, and the old one is gone."""
    (share / "a.mkv").write_bytes(b"1" * 100)
    wait_for(lambda: share / "a.mkv" in pub.catalog, timeout=20)
    assert watcher.wait_idle(bound(30))
    pub.calls.clear()
    (share / "a.mkv").rename(share / "a.mkv.part")
    wait_for(lambda: pub.names("unpublish") == ["a.mkv"], timeout=20)
    assert watcher.wait_idle(bound(30))
    assert pub.names("moved") == []
    assert pub.catalog == set()


def test_move_delete_and_folder_operations(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    (share / "a").mkdir()
    (share / "a" / "one.mkv").write_bytes(b"1" * 100)
    (share / "a" / "two.mkv").write_bytes(b"2" * 100)
    (share / "solo.mkv").write_bytes(b"3" * 100)
    wait_for(lambda: len(pub.catalog) == 3, timeout=20)
    assert watcher.wait_idle(bound(30))
    pub.calls.clear()

    (share / "solo.mkv").rename(share / "renamed.mkv")
    wait_for(lambda: ("moved", "solo.mkv", "renamed.mkv") in pub.calls, timeout=20)
    (share / "a").rename(share / "b")
    wait_for(lambda: share / "b" / "two.mkv" in pub.catalog, timeout=20)
    wait_for(lambda: share / "b" / "one.mkv" in pub.catalog, timeout=20)
    assert watcher.wait_idle(bound(30))
    assert pub.names("publish") == []  # moves never re-publish

    (share / "renamed.mkv").unlink()
    wait_for(lambda: pub.names("unpublish") == ["renamed.mkv"], timeout=20)
    os.rename(share / "b", share.parent / "outside")  # folder moved out of the share
    wait_for(lambda: pub.catalog == set(), timeout=20)


def test_reconcile_at_start(tmp_path: Path, share: Path, mode: str) -> None:
    pub = RecordingPublisher()
    (share / "kept.mkv").write_bytes(b"k" * 10)
    (share / "new.mkv").write_bytes(b"n" * 10)
    (share / "skip.part").write_bytes(b"p" * 10)
    pub.catalog = {share / "kept.mkv", share / "gone.mkv"}
    w = start_watcher(tmp_path, share, pub, mode)
    try:
        wait_for(lambda: len(pub.names("publish")) == 2, timeout=20)
        assert w.wait_idle(bound(30))
    finally:
        w.close()
    assert sorted(pub.names("publish")) == ["kept.mkv", "new.mkv"]
    assert pub.names("unpublish") == ["gone.mkv"]


def test_folder_items_are_republished_as_a_whole(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    """A folder published as one item (POST /seed) is never split into file items."""
    series = share / "Series"
    pub.catalog.add(series)  # as if POST /seed had published the folder
    series.mkdir()
    (series / "e1.mkv").write_bytes(b"1" * 100)
    wait_for(lambda: pub.names("publish"), timeout=20)
    assert watcher.wait_idle(bound(30))
    (series / "e2.mkv").write_bytes(b"2" * 100)
    wait_for(lambda: len(pub.names("publish")) >= 2, timeout=20)
    (series / "e1.mkv").unlink()
    wait_for(lambda: len(pub.names("publish")) >= 3, timeout=20)
    assert watcher.wait_idle(bound(30))
    assert set(pub.names("publish")) == {"Series"}
    assert pub.names("unpublish") == []
    series.rename(share / "Show")
    moved = ("moved", "Series", "Show")
    wait_for(lambda: moved in pub.calls, timeout=20, describe=lambda: repr(pub.calls))
    assert watcher.wait_idle(bound(30))
    assert pub.catalog == {share / "Show"}


@pytest.mark.parametrize("mode", ["polling"])
def test_folder_renamed_in_the_middle_of_a_poll_is_a_move(
    share: Path, pub: RecordingPublisher, watcher: Watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename lands after a poll listed the share, before it looked at the folder."""
    series = share / "Series"
    series.mkdir()
    (series / "e1.mkv").write_bytes(b"1" * 100)
    pub.catalog.add(series)
    wait_for(lambda: pub.names("publish"), timeout=20)
    assert watcher.wait_idle(bound(30))
    real_stat, renamed = os.stat, threading.Event()

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if path == str(series) and not renamed.is_set():  # the poll's walk, not pathlib
            series.rename(share / "Show")
            renamed.set()
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)  # the next poll's walk renames the folder
    moved = ("moved", "Series", "Show")
    wait_for(lambda: moved in pub.calls, timeout=20, describe=lambda: f"{renamed} {pub.calls}")
    assert watcher.wait_idle(bound(30))
    assert pub.names("unpublish") == []
    assert pub.catalog == {share / "Show"}


def test_one_failure_does_not_stop_the_watcher(tmp_path: Path, share: Path) -> None:
    pub = RecordingPublisher(fail_on="bad.mkv")
    w = start_watcher(tmp_path, share, pub, "inotify")
    try:
        (share / "bad.mkv").write_bytes(b"x" * 10)
        (share / "good.mkv").write_bytes(b"y" * 10)
        wait_for(lambda: pub.names("publish") == ["good.mkv"], timeout=20)
    finally:
        w.close()


def test_inotify_failure_falls_back_to_polling(
    tmp_path: Path, share: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def watch_limit(self: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    # Where inotify_init / inotify_add_watch fail in real life.
    monkeypatch.setattr("watchdog.observers.inotify.InotifyEmitter.on_thread_start", watch_limit)
    pub = RecordingPublisher()
    config = make_config(tmp_path, shares=(Share("family", share),), poll_quiet=0.3)
    watcher = Watcher(config, pub, force_polling=False, poll_interval=0.1)
    try:
        watcher.start()
        assert watcher.polling
        assert "falling back to polling" in caplog.text
        (share / "late.mkv").write_bytes(b"z" * 10)
        wait_for(lambda: pub.names("publish") == ["late.mkv"], timeout=20)
    finally:
        watcher.close()


def test_with_the_real_publisher(tmp_path: Path) -> None:
    """Store + Engine + ManifestStore + Publisher: a write, a rename and a move, hashed once."""
    config = make_config(tmp_path, shares=(Share("family", tmp_path / "share"),))
    share = config.shares[0].path
    (share / "Later").mkdir()
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        random_file(share / "Series" / "e1.mkv", 20_000)
        publisher.publish(share / "Series")  # a folder item, as POST /seed makes

        def paths() -> set[str]:
            return {item.path for item in manifests.get("family").items} - {"Series"}

        def series_files() -> list[str]:
            items = {item.path: item for item in manifests.get("family").items}
            return [f["path"] for f in items["Series"].extra.get("files", [])]

        with Watcher(config, publisher) as watcher:
            with (share / "a.mkv.part").open("wb") as out:
                for _ in range(4):
                    out.write(os.urandom(64_000))
                    out.flush()
                    time.sleep(0.1)  # a slow writer to a .part: never published, cannot race
            (share / "a.mkv.part").rename(share / "a.mkv")
            wait_for(lambda: paths() == {"a.mkv"}, timeout=30)
            assert watcher.wait_idle(bound(30))
            hashed = publisher.bytes_hashed
            assert hashed >= 256_000

            (share / "a.mkv").rename(share / "Later" / "a.mkv")
            wait_for(lambda: paths() == {"Later/a.mkv"}, timeout=30)
            assert watcher.wait_idle(bound(30))
            assert publisher.bytes_hashed == hashed  # the move read nothing again

            random_file(share / "Series" / "e2.mkv", 20_000)
            wait_for(lambda: series_files() == ["e1.mkv", "e2.mkv"], timeout=30)
            assert watcher.wait_idle(bound(30))
            assert paths() == {"Later/a.mkv"}  # no file item split off the folder
        publisher.close()


# -- links, whole folders deleted, start-up, the clock (issue 18's mutation round) ----
def test_a_symbolic_link_is_never_published_and_replaces_a_published_file_as_gone(
    share: Path, pub: RecordingPublisher, watcher: Watcher, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.mkv"
    outside.write_bytes(b"o" * 100)
    (share / "real.mkv").write_bytes(b"r" * 100)
    wait_for(lambda: share / "real.mkv" in pub.catalog, timeout=20)
    assert watcher.wait_idle(bound(30))
    (share / "link.mkv").symlink_to(outside)
    (share / "swap.tmp").symlink_to(outside)
    (share / "swap.tmp").rename(share / "real.mkv")  # a link renamed over the published file
    (share / "marker.mkv").write_bytes(b"m")
    wait_for(lambda: share / "marker.mkv" in pub.catalog, timeout=20)
    wait_for(lambda: share / "real.mkv" not in pub.catalog, timeout=20)
    assert watcher.wait_idle(bound(30))
    assert "link.mkv" not in pub.names("publish")
    assert pub.names("publish").count("real.mkv") == 1  # only the file, before the link


def test_a_deleted_folder_unpublishes_each_of_its_files(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    (share / "Show" / "S1").mkdir(parents=True)
    (share / "Show" / "S1" / "e1.mkv").write_bytes(b"1" * 100)
    (share / "Show" / "e2.mkv").write_bytes(b"2" * 100)
    (share / "Other.mkv").write_bytes(b"3" * 100)
    wait_for(lambda: len(pub.catalog) == 3, timeout=20)
    assert watcher.wait_idle(bound(30))
    shutil.rmtree(share / "Show")
    wait_for(lambda: pub.catalog == {share / "Other.mkv"}, timeout=20)
    assert watcher.wait_idle(bound(30))
    assert sorted(pub.names("unpublish")) == ["e1.mkv", "e2.mkv"]


def test_an_empty_file_waits_for_its_writes_with_inotify(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock
) -> None:
    watcher = start_watcher(tmp_path, share, pub, "inotify", clock)

    def published() -> set[str]:  # the clock moved on and the watcher woken each time
        clock.now += 10
        watcher.wake()
        return set(pub.names("publish"))

    try:
        (share / "empty.mkv").touch()
        (share / "marker.mkv").write_bytes(b"m")  # its events come after the empty file's
        wait_for(lambda: "marker.mkv" in published(), timeout=20)
        assert published() == {"marker.mkv"}  # both were due: the empty one waits
        (share / "empty.mkv").write_bytes(b"now written")
        wait_for(lambda: "empty.mkv" in published(), timeout=20)
    finally:
        watcher.close()


def test_a_file_renamed_in_whole_waits_less_than_one_written_in_place(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock
) -> None:
    """A rename from outside the share brings a complete file: published after
    MOVED_IN_QUIET; one written in the share waits for its close and settle_time."""
    watcher = start_watcher(tmp_path, share, pub, "inotify", clock)
    staged = tmp_path / "staging" / "whole.mkv"
    staged.parent.mkdir()
    staged.write_bytes(b"complete")
    try:
        (share / "written.mkv").write_bytes(b"written here")
        wait_for(lambda: seen(watcher, share / "written.mkv", 12), timeout=20)
        staged.rename(share / "whole.mkv")
        wait_for(lambda: (share / "whole.mkv") in watcher._pending, timeout=20)
        clock.now += MOVED_IN_QUIET
        watcher.wake()
        wait_for(lambda: "whole.mkv" in pub.names("publish"), timeout=20)
        assert pub.names("publish") == ["whole.mkv"]  # the same round: written.mkv not due
        clock.now += watcher._config.settle_time
        watcher.wake()
        wait_for(lambda: "written.mkv" in pub.names("publish"), timeout=20)
    finally:
        watcher.close()


def test_at_start_an_old_file_is_published_at_once_a_fresh_one_once_quiet(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock, mode: str
) -> None:
    (share / "old.mkv").write_bytes(b"o" * 10)
    os.utime(share / "old.mkv", (time.time() - 3600, time.time() - 3600))
    (share / "fresh.mkv").write_bytes(b"f" * 10)
    config = make_config(tmp_path, shares=(Share("family", share),), poll_quiet=60)
    watcher = Watcher(config, pub, force_polling=mode == "polling", clock=clock)
    watcher.start()
    try:
        wait_for(lambda: pub.names("publish") == ["old.mkv"], timeout=20)
        assert not watcher.wait_idle(timeout=0.2)  # fresh.mkv is pending on the clock
        assert pub.names("publish") == ["old.mkv"]
        clock.now += 60
        watcher.wake()
        wait_for(lambda: "fresh.mkv" in pub.names("publish"), timeout=20)
        assert watcher.wait_idle(bound(30))
    finally:
        watcher.close()


def test_a_published_file_replaced_by_a_link_while_stopped_is_unpublished(
    tmp_path: Path, share: Path, mode: str
) -> None:
    pub = RecordingPublisher()
    (tmp_path / "elsewhere.mkv").write_bytes(b"e" * 10)
    (share / "was.mkv").symlink_to(tmp_path / "elsewhere.mkv")
    (tmp_path / "other").mkdir()
    pub.catalog = {share / "was.mkv", tmp_path / "other" / "gone.mkv"}  # one outside the share
    w = start_watcher(tmp_path, share, pub, mode)
    try:
        wait_for(lambda: pub.names("unpublish") == ["was.mkv"], timeout=20)
        assert w.wait_idle(bound(30))
    finally:
        w.close()
    assert pub.names("publish") == []
    assert pub.names("unpublish") == ["was.mkv"]  # a path outside every share is not ours


@pytest.mark.parametrize(("value", "polling"), [("1", True), ("yes", True), ("0", False)])
def test_the_environment_forces_polling(
    tmp_path: Path, share: Path, monkeypatch: pytest.MonkeyPatch, value: str, polling: bool
) -> None:
    monkeypatch.setenv("MESHMEDIA_FORCE_POLLING", value)
    config = make_config(tmp_path, shares=(Share("family", share),))
    with Watcher(config, RecordingPublisher()) as watcher:
        assert watcher.polling is polling
    monkeypatch.delenv("MESHMEDIA_FORCE_POLLING")
    with Watcher(config, RecordingPublisher()) as watcher:
        assert watcher.polling is False


def test_a_file_moved_out_of_a_folder_item_republishes_the_folder_and_itself(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    series = share / "Series"
    series.mkdir()
    (series / "e1.mkv").write_bytes(b"1" * 100)
    (series / "e2.mkv").write_bytes(b"2" * 100)
    pub.catalog.add(series)
    wait_for(lambda: "Series" in pub.names("publish"), timeout=20)
    assert watcher.wait_idle(bound(30))
    pub.calls.clear()
    (series / "e2.mkv").rename(share / "e2.mkv")
    wait_for(lambda: set(pub.names("publish")) == {"Series", "e2.mkv"}, timeout=20)
    assert watcher.wait_idle(bound(30))
    assert set(pub.names("publish")) == {"Series", "e2.mkv"}
    assert pub.names("moved") == []
    assert pub.names("unpublish") == []


def test_a_folder_moved_out_while_a_file_in_it_waits_drops_both(
    share: Path, pub: RecordingPublisher, frozen: Watcher, clock: FakeClock
) -> None:
    """Moved out of the share, a folder is one event, none for its files: the waiting
    file is forgotten (never published once its time comes) and the published one is
    unpublished."""
    (share / "a").mkdir()
    (share / "a" / "one.mkv").write_bytes(b"1" * 100)

    def published(name: str) -> bool:  # the clock moved on and the watcher woken each time
        clock.now += 10
        frozen.wake()
        return name in pub.names("publish")

    wait_for(lambda: published("one.mkv"), timeout=20)
    (share / "a" / "two.mkv").write_bytes(b"2" * 100)
    wait_for(lambda: share / "a" / "two.mkv" in frozen._pending, timeout=20)
    os.rename(share / "a", share.parent / "away")
    wait_for(lambda: "one.mkv" in pub.names("unpublish"), timeout=20)
    clock.now += 10
    frozen.wake()
    assert frozen.wait_idle(bound(30))
    assert "two.mkv" not in pub.names("publish")


def test_an_empty_file_deleted_or_renamed_away_while_it_waits_leaves_nothing_pending(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock
) -> None:
    """An empty file waits for its writes with no due time: only its own delete or move
    event can drop it, or the watcher is never idle again."""
    watcher = start_watcher(tmp_path, share, pub, "inotify", clock)

    def published() -> set[str]:
        clock.now += 10
        watcher.wake()
        return set(pub.names("publish"))

    staged = tmp_path / "marker.mkv"
    staged.write_bytes(b"m")
    try:
        (share / "deleted.mkv").touch()
        (share / "renamed.mkv").touch()
        # Renamed in whole: one event, after the empty files'. Written in place, its
        # created event alone could be due on the jumping clock before its modified and
        # closed events came, and those publish it a second time (CI, 1 run in ~20).
        staged.rename(share / "marker.mkv")
        wait_for(lambda: "marker.mkv" in published(), timeout=20)
        assert not watcher.wait_idle(timeout=0.2)  # the two empty files wait, with no due
        (share / "deleted.mkv").unlink()
        (share / "renamed.mkv").rename(share / "renamed.mkv.part")
        assert watcher.wait_idle(bound(30))
        assert pub.names("publish") == ["marker.mkv"]
    finally:
        watcher.close()


def test_a_temporary_file_leaving_a_published_folder_does_not_republish_it(
    share: Path, pub: RecordingPublisher, watcher: Watcher
) -> None:
    """A folder item is hashed whole when it is republished: a `.part` that was never
    part of it moving out is no reason to."""
    series = share / "Series"
    pub.catalog.add(series)  # as if POST /seed had published the folder
    series.mkdir()
    (series / "e1.mkv").write_bytes(b"1" * 100)
    wait_for(lambda: pub.names("publish") == ["Series"], timeout=20)
    assert watcher.wait_idle(bound(30))
    (series / "e2.mkv.part").write_bytes(b"2" * 100)
    (series / "e2.mkv.part").rename(share / "e2.mkv.part")
    (share / "marker.mkv").write_bytes(b"m")  # its events come after the move's
    wait_for(lambda: "marker.mkv" in pub.names("publish"), timeout=20)
    assert watcher.wait_idle(bound(30))
    assert pub.names("publish") == ["Series", "marker.mkv"]


def test_close_stops_both_threads_and_may_be_called_twice(
    tmp_path: Path, share: Path, pub: RecordingPublisher, mode: str
) -> None:
    watcher = start_watcher(tmp_path, share, pub, mode)
    observer, worker = watcher._observer, watcher._worker
    assert observer is not None
    assert worker is not None
    watcher.close()
    assert not observer.is_alive()
    assert not worker.is_alive()
    watcher.close()


def test_close_gives_up_on_a_publish_that_never_ends_after_its_timeout(
    tmp_path: Path, share: Path
) -> None:
    """close() finishes a publish under way, but waits for it only `timeout` seconds."""
    entered, release = threading.Event(), threading.Event()

    class Stuck(RecordingPublisher):
        def publish(self, path: Path, group: str | None = None) -> None:
            entered.set()
            release.wait(120)

    watcher = start_watcher(tmp_path, share, Stuck(), "inotify")
    closed = threading.Event()
    try:
        (share / "a.mkv").write_bytes(b"a")
        assert entered.wait(bound(30))
        threading.Thread(target=lambda: (watcher.close(timeout=0.5), closed.set())).start()
        assert closed.wait(bound(30))  # while the publish is still stuck
        assert not release.is_set()
    finally:
        release.set()


def test_a_file_linked_in_complete_is_published_after_the_settle_time(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock
) -> None:
    """A hard link brings a complete file in with one create event and no writes or
    close: its settle time is its only way to be published, and it is kept to."""
    outside = tmp_path / "outside.mkv"
    outside.write_bytes(b"x" * 1000)
    watcher = start_watcher(tmp_path, share, pub, "inotify", clock)
    try:
        linked = share / "linked.mkv"
        os.link(outside, linked)
        # seen, looked at (the worker idle again), and waiting on the clock
        wait_for(lambda: linked in watcher._pending and not watcher._busy, timeout=20)
        assert pub.names("publish") == []
        clock.now += 1  # past the settle time (0.2 s on this clock)
        watcher.wake()
        wait_for(lambda: pub.names("publish") == ["linked.mkv"], timeout=20)
    finally:
        watcher.close()


def test_a_published_file_opened_for_writing_and_closed_unwritten_is_looked_at_again(
    tmp_path: Path, share: Path, pub: RecordingPublisher
) -> None:
    """A close after writing is the writer's "done"; a close is a file's first event when
    it was opened for writing and closed unwritten (inotify only): it is published again
    once settled, in the share the close came from."""
    watcher = start_watcher(tmp_path, share, pub, "inotify")
    try:
        (share / "a.mkv").write_bytes(b"a" * 100)
        wait_for(lambda: pub.names("publish") == ["a.mkv"], timeout=20)
        assert watcher.wait_idle(bound(30))
        with (share / "a.mkv").open("r+b"):
            pass
        wait_for(lambda: pub.names("publish") == ["a.mkv", "a.mkv"], timeout=20)
        assert pub.calls[-1] == ("publish", "a.mkv", "family")
    finally:
        watcher.close()


def test_modify_events_within_the_follow_interval_follow_once(
    tmp_path: Path, share: Path, pub: RecordingPublisher, clock: FakeClock
) -> None:
    """Each modify event is handled as it comes (the worker's own path, called here in
    order: inotify merges repeated unread events, so writes cannot show the throttle)."""
    config = make_config(tmp_path, shares=(Share("family", share),))
    watcher = Watcher(config, pub, clock=clock)  # not started: no thread, no observer
    family = config.shares[0]
    path = share / "growing.mkv"
    path.write_bytes(b"g" * 10)
    for _ in range(3):
        watcher._on_event(family, FileModifiedEvent(str(path)))
    assert pub.names("follow") == ["growing.mkv"]
    clock.now += 0.5  # the follow interval
    for _ in range(3):
        watcher._on_event(family, FileModifiedEvent(str(path)))
    assert pub.names("follow") == ["growing.mkv", "growing.mkv"]


@pytest.mark.parametrize(("quiet", "interval"), [(0.6, 0.3), (10.0, 1.0), (0.1, 0.1)])
def test_polling_looks_every_half_quiet_time_within_a_tenth_and_one_second(
    tmp_path: Path, share: Path, quiet: float, interval: float
) -> None:
    """Without a poll interval given, the polling observer looks every poll_quiet / 2,
    at least every second and at most every tenth of one."""
    config = make_config(tmp_path, shares=(Share("family", share),), poll_quiet=quiet)
    with Watcher(config, RecordingPublisher(), force_polling=True) as watcher:
        assert watcher._observer is not None
        assert watcher._observer.timeout == interval


def test_close_of_a_watcher_never_started_does_nothing(tmp_path: Path, share: Path) -> None:
    config = make_config(tmp_path, shares=(Share("family", share),))
    watcher = Watcher(config, RecordingPublisher())
    watcher.close()
    watcher.close()


def test_start_creates_a_missing_share_folder_and_its_parents(tmp_path: Path) -> None:
    share = tmp_path / "not" / "yet" / "share"
    config = make_config(tmp_path, shares=(Share("family", share),))
    shutil.rmtree(tmp_path / "not")  # make_config made it
    with Watcher(config, RecordingPublisher()):
        assert share.is_dir()


def test_the_worker_is_a_named_daemon_thread(tmp_path: Path, share: Path) -> None:
    """Named for py-spy and `top -H`; a daemon, so a process that never closes its
    watcher still exits (a child process here, bounded)."""
    config = make_config(tmp_path, shares=(Share("family", share),))
    with Watcher(config, RecordingPublisher()):
        workers = [t for t in threading.enumerate() if t.name == "meshmedia-watcher"]
        assert len(workers) == 1
        assert workers[0].daemon
    child = (
        "import sys; from pathlib import Path; from meshmedia.curator import Watcher;"
        "from meshmedia.config import Share; from tests.helpers import make_config;"
        "from tests.curator.test_watcher import RecordingPublisher;"
        f"c = make_config(Path({str(tmp_path)!r}), 'child',"
        f" shares=(Share('f', Path({str(share)!r})),));"
        "Watcher(c, RecordingPublisher()).start(); print('started')"
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=Path(__file__).parents[2], capture_output=True,
        text=True, timeout=bound(60), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "started"


def test_a_stop_that_comes_while_the_queue_drains_ends_the_worker(
    tmp_path: Path, share: Path
) -> None:
    """The worker takes every queued event before it looks at what is due; a STOP among
    them is put back and ends the loop after that look."""
    config = make_config(tmp_path, shares=(Share("family", share),))
    watcher = Watcher(config, RecordingPublisher())  # not started: _run on a thread here
    watcher._events.put(Command.WAKE)
    watcher._events.put(Command.STOP)
    worker = threading.Thread(target=watcher._run, daemon=True)
    worker.start()
    worker.join(bound(20))
    assert not worker.is_alive()


def unstarted(tmp_path: Path, share: Path, clock: FakeClock, *, polling: bool) -> Watcher:
    """A watcher whose worker's own steps the test calls in order (no thread)."""
    config = make_config(tmp_path, shares=(Share("family", share),), poll_quiet=0.6)
    watcher = Watcher(config, RecordingPublisher(), clock=clock)
    watcher.polling = polling
    return watcher


def test_the_worker_wakes_when_the_first_pending_file_is_due(
    tmp_path: Path, share: Path, clock: FakeClock
) -> None:
    watcher = unstarted(tmp_path, share, clock, polling=False)
    assert watcher._next_timeout() is None  # nothing pending: wait for an event
    family = watcher._config.shares[0]
    watcher._pending[share / "a.mkv"] = _Pending(family, clock.now + 0.05)
    watcher._pending[share / "b.mkv"] = _Pending(family, clock.now + 3)
    assert watcher._next_timeout() == pytest.approx(0.05)
    clock.now += 10
    assert watcher._next_timeout() == 0.0


def test_a_polled_file_that_changed_since_its_last_look_waits_quiet_again(
    tmp_path: Path, share: Path, clock: FakeClock
) -> None:
    """Due, but its size or mtime moved since the poll that queued it: it waits
    poll_quiet from now with the new stat, and is published once that passes unchanged."""
    watcher = unstarted(tmp_path, share, clock, polling=True)
    path = random_file(share / "a.mkv", 100)
    family = watcher._config.shares[0]
    watcher._pending[path] = _Pending(family, clock.now, (50, 0))  # an earlier stat
    watcher._run_due()
    pending = watcher._pending[path]
    assert (pending.stat, pending.due) == (file_stat(path), clock.now + 0.6)
    clock.now += 0.6
    watcher._run_due()
    assert watcher._publisher.names("publish") == ["a.mkv"]  # type: ignore[attr-defined]


def test_a_link_among_due_files_does_not_hold_the_others_back(
    tmp_path: Path, share: Path, clock: FakeClock
) -> None:
    watcher = unstarted(tmp_path, share, clock, polling=False)
    (share / "link.mkv").symlink_to(random_file(tmp_path / "elsewhere.mkv", 10))
    path = random_file(share / "a.mkv", 100)
    family = watcher._config.shares[0]
    watcher._pending[share / "link.mkv"] = _Pending(family, clock.now)  # looked at first
    watcher._pending[path] = _Pending(family, clock.now)
    watcher._run_due()
    assert watcher._publisher.names("publish") == ["a.mkv"]  # type: ignore[attr-defined]
    assert watcher._pending == {}


class BatchingPublisher(RecordingPublisher):
    """A publisher with the burst path (the real Publisher has it): one call a round."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[list[tuple[str, str | None]]] = []

    def publish_many(self, targets: list[tuple[Path, str | None]]) -> None:
        with self.lock:
            self.rounds.append([(path.name, group) for path, group in targets])
        for path, group in targets:
            self.publish(path, group)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_files_due_together_go_to_the_burst_path_in_one_call(
    tmp_path: Path, share: Path, clock: FakeClock, count: int
) -> None:
    """Two or more files due in one look are one publish_many call (batches.py lists
    them in a few manifest versions); a file alone takes publish."""
    pub = BatchingPublisher()
    watcher = unstarted(tmp_path, share, clock, polling=False)
    watcher._publisher = pub
    family = watcher._config.shares[0]
    paths = [random_file(share / f"{k}.mkv", 100) for k in range(count)]
    for path in paths:
        watcher._pending[path] = _Pending(family, clock.now)
    watcher._run_due()
    names = [p.name for p in paths]
    assert sorted(pub.names("publish")) == names
    assert pub.rounds == ([] if count == 1 else [[(n, "family") for n in names]])


class ExpectingPublisher(BatchingPublisher):
    """Records what the watcher says is coming (expect_many) and the rounds, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.said: list[tuple[str, int]] = []

    def expect_many(self, count: int) -> None:
        with self.lock:
            self.said.append(("expect", count))

    def publish_many(self, targets: list[tuple[Path, str | None]]) -> None:
        with self.lock:
            self.said.append(("round", len(targets)))
        super().publish_many(targets)


def test_the_publisher_hears_of_a_burst_before_its_round(tmp_path: Path, share: Path) -> None:
    """Files moved in wait MOVED_IN_QUIET before their round: the publisher is told how
    many wait meanwhile, so its hashing child is up when the round begins (55 ms)."""
    pub = ExpectingPublisher()
    staged = [random_file(tmp_path / "staging" / f"{k}.mkv", 100) for k in range(6)]
    watcher = start_watcher(tmp_path, share, pub, "inotify")
    try:
        for path in staged:
            path.rename(share / path.name)
        wait_for(lambda: len(pub.names("publish")) == 6, timeout=30)
    finally:
        watcher.close()
    first_round = next(k for k, (what, _) in enumerate(pub.said) if what == "round")
    told = [n for what, n in pub.said[:first_round] if what == "expect"]
    assert told, pub.said
    assert max(told) >= pub.said[first_round][1], pub.said
