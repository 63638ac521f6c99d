"""The client's parts with real pieces: HTTP servers, a real curator, a real engine."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from meshmedia.client import SyncClient
from meshmedia.client.fetcher import HELD, MIN_SPACING, Fetched, FetchError, ManifestFetcher
from meshmedia.client.placement import final_path, make_dirs, matches, refuse_links, targets_for
from meshmedia.curator import Curator
from meshmedia.engine import Engine
from meshmedia.errors import EngineError, ManifestError
from meshmedia.store import ClientItem, ItemState, Store
from meshmedia.torrentinfo import read_torrent, torrent_files
from tests.helpers import make_config, random_file, wait_for

MIB = 1 << 20


# -- HTTP servers ------------------------------------------------------------------
class _Doc:
    """A manifest document a test server serves, with a condition for long-polls."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0
        self.closing = False
        self.cond = threading.Condition()

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'

    def set(self, body: bytes) -> None:
        with self.cond:
            self.body = body
            self.cond.notify_all()

    def release(self) -> None:
        """Answer every held request now."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()


@contextmanager
def serve_doc(doc: _Doc, *, long_poll: bool) -> Iterator[str]:
    """A real HTTP server for `doc`: a long-polling one, or one that ignores ?wait."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc.requests += 1
            wait = float(self.path.partition("wait=")[2] or 0) if long_poll else 0
            tag = self.headers.get("If-None-Match")
            with doc.cond:
                if long_poll and tag == doc.etag and wait:
                    doc.cond.wait_for(lambda: doc.etag != tag or doc.closing, timeout=wait)
                body, etag = doc.body, doc.etag
            if long_poll and tag == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if long_poll:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/manifest/default.json"
    finally:
        server.shutdown()
        server.server_close()


class _Stop(threading.Event):
    """The follow loop's stop event, recording every pause the loop sleeps in it."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(float("inf") if timeout is None else timeout)
        return super().wait(timeout)


@contextmanager
def following(
    fetcher: ManifestFetcher, interval: float, doc: _Doc, stop: _Stop | None = None
) -> Iterator[list[bytes]]:
    seen: list[bytes] = []
    stop = stop or _Stop()
    thread = threading.Thread(
        target=fetcher.follow, args=(stop, lambda body, _etag: seen.append(body), interval)
    )
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        doc.release()
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_long_poll_delivers_a_change_at_once() -> None:
    doc = _Doc(b'{"v": 1}')
    with serve_doc(doc, long_poll=True) as url:
        fetcher = ManifestFetcher(url)
        with following(fetcher, 300, doc) as seen:
            wait_for(lambda: len(seen) == 1, timeout=10)
            wait_for(lambda: doc.requests >= 2, timeout=10)  # the second request is held
            doc.set(b'{"v": 2}')
            wait_for(lambda: len(seen) == 2, timeout=10)  # interval is 300 s: not a poll
            assert fetcher.long_poll is not False
        assert seen == [b'{"v": 1}', b'{"v": 2}']


def test_a_server_that_ignores_wait_is_polled_not_hammered() -> None:
    doc = _Doc(b'{"v": 1}')
    with serve_doc(doc, long_poll=False) as url:
        fetcher = ManifestFetcher(url)
        stop = _Stop()
        with following(fetcher, 300, doc, stop) as seen:
            wait_for(lambda: fetcher.long_poll is False, timeout=10)
            # the loop has decided: it sleeps the whole interval before asking again
            wait_for(lambda: stop.pauses and stop.pauses[-1] == 300, timeout=10)
        assert seen == [b'{"v": 1}']
        assert doc.requests == 2  # the first fetch and the one that showed no hold


def test_a_changed_body_from_a_plain_server_is_seen_on_the_next_poll() -> None:
    doc = _Doc(b'{"v": 1}')
    with serve_doc(doc, long_poll=False) as url:
        fetcher = ManifestFetcher(url)
        assert fetcher.fetch().body == b'{"v": 1}'
        assert not fetcher.fetch(wait=30).changed
        doc.set(b'{"v": 2}')
        assert fetcher.fetch(wait=30).body == b'{"v": 2}'


def test_manifest_over_the_size_cap_is_refused() -> None:
    with serve_doc(_Doc(b"x" * 2048), long_poll=False) as url, pytest.raises(FetchError):
        ManifestFetcher(url, max_bytes=1024).fetch()


def test_unreachable_server_backs_off_and_never_raises() -> None:
    errors: list[FetchError] = []
    fetcher = ManifestFetcher("http://127.0.0.1:9/manifest/default.json", timeout=2)
    stop = threading.Event()
    thread = threading.Thread(
        target=fetcher.follow, args=(stop, lambda *_: None, 2.0, errors.append)
    )
    thread.start()
    wait_for(lambda: len(errors) >= 2, timeout=20)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "127.0.0.1:9" in str(errors[0])


def test_the_fetcher_thread_outlives_a_manifest_that_breaks_its_handler() -> None:
    """A manifest that raised in the handler killed the fetcher thread: that URL was
    never polled again."""
    doc = _Doc(b'{"v": 1}')
    seen: list[bytes] = []

    def handle(body: bytes, _etag: str | None) -> None:
        seen.append(body)
        if len(seen) == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    with serve_doc(doc, long_poll=True) as url:
        stop = threading.Event()
        thread = threading.Thread(target=ManifestFetcher(url).follow, args=(stop, handle, 300))
        thread.start()
        try:
            wait_for(lambda: len(seen) == 1, timeout=10)
            wait_for(lambda: doc.requests >= 2, timeout=10)
            doc.set(b'{"v": 2}')
            wait_for(lambda: len(seen) == 2, timeout=10)
            assert thread.is_alive()
        finally:
            stop.set()
            doc.release()
            thread.join(timeout=30)


# -- placement and torrents ---------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../up.mkv", "a/../../b", "a//b", "C:/x", "a\\b", ".meshmedia/x"]
)
def test_unsafe_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ManifestError):
        final_path(tmp_path, path)


def test_a_symlinked_folder_cannot_lead_outside(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "evil").symlink_to(tmp_path)
    with pytest.raises(ManifestError, match="symlink"):
        final_path(tmp_path / "media", "evil/file.mkv")
    assert final_path(tmp_path / "media", "ok/file.mkv") == tmp_path / "media" / "ok/file.mkv"


def test_matches_checks_size_then_hashes(tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", 1000, seed=1)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert matches(path, 1000, sha, None) is True
    assert matches(path, 999, sha, None) is False
    assert matches(path, 1000, "0" * 64, None) is False
    assert matches(path, 1000, None, "0" * 32) is False
    assert matches(path, 1000, None, None) is None
    assert matches(tmp_path / "missing", 1000, sha, None) is False


def _renames(files: list[tuple[int, str, int]], final: Path) -> dict[int, str]:
    return {t.index: t.new_name for t in targets_for(files, final) if t.name != t.new_name}


def test_renames_put_a_single_file_and_a_folder_at_the_item_path(tmp_path: Path) -> None:
    final = tmp_path / "Film (2001)" / "Film.mkv"
    assert _renames([(0, "upload.mkv", 5)], final) == {0: "Film.mkv"}
    assert _renames([(0, "Film.mkv", 5)], final) == {}
    folder = [(0, "Show/e1.mkv", 5), (2, "Show/e2.mkv", 5)]
    assert _renames(folder, tmp_path / "TV" / "My Show") == {
        0: "My Show/e1.mkv",
        2: "My Show/e2.mkv",
    }


@pytest.mark.parametrize(
    "names",
    [
        ["x/../../../victim/file.txt"],
        ["x/a", "x/../b"],
        ["x//etc/passwd"],
        ["x/C:/y"],
        ["x/a\\..\\b"],
        ["x/a", "x/a"],
        ["x/a\nb"],
        ["x", "y"],
    ],
)
def test_torrent_names_that_would_leave_the_item_are_refused(
    tmp_path: Path, names: list[str]
) -> None:
    """The one rule: a target is the item path plus libtorrent's name, checked and
    kept inside the item's folder."""
    files = [(i, name, 1) for i, name in enumerate(names)]
    with pytest.raises(ManifestError):
        targets_for(files, tmp_path / "Final")


def test_make_dirs_refuses_a_planted_symlink_and_follows_none(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "a" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ManifestError, match="symlink or not a folder"):
        make_dirs(root, "a/link/deeper")
    assert list((tmp_path / "outside").iterdir()) == []
    assert make_dirs(root, "a/b/c") == root / "a/b/c"
    assert (root / "a/b/c").is_dir()
    with pytest.raises(ManifestError, match="symlink"):
        refuse_links(root, "a/link/x.mkv")


def test_torrent_files_agree_with_a_published_folder(tmp_path: Path) -> None:
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    random_file(share / "Show" / "e1.mkv", 300_000, seed=2)
    random_file(share / "Show" / "e2.mkv", 200_000, seed=3)
    with Curator(config, force_polling=True) as curator:
        assert curator.publisher is not None
        assert curator.engine is not None
        item = curator.publisher.publish(share / "Show")
        data = curator.engine.torrent_bytes(item.info_hash or "")
    assert data is not None
    assert read_torrent(data).info_hash == item.info_hash
    real = [(f.path, f.size) for f in torrent_files(data) if not f.pad]
    assert real == [("Show/e1.mkv", 300_000), ("Show/e2.mkv", 200_000)]
    with pytest.raises(EngineError):
        read_torrent(b"d4:infoi3ee")


def test_client_items_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        item = ClientItem(
            "http://x/m.json", "a/b.mkv", "ab" * 20, ItemState.QUEUED, {"path": "a/b.mkv"}
        )
        store.save_client_item(item)
        assert store.client_items() == [item]
        assert store.client_item("http://x/m.json", "a/b.mkv") == item
        assert type(store.client_items()[0].state) is ItemState  # not the stored string
        assert store.client_items_in((ItemState.QUEUED,)) == [item]
        assert store.count_client_items((ItemState.PLACED,)) == 0
        store.delete_client_item("http://x/m.json", "a/b.mkv")
        assert store.client_items() == []


# -- the sync client against a real curator ------------------------------------------
class Node:
    """A curator (in process) and a SyncClient with its own engine."""

    def __init__(self, tmp_path: Path, **client_config: Any) -> None:
        self.curator_config = make_config(tmp_path, "curator")
        self.share = self.curator_config.shares[0].path
        self.curator = Curator(self.curator_config, force_polling=True)
        self.curator.start()
        assert self.curator.server is not None
        self.url = self.curator.server.url.rstrip("/") + "/manifest/default.json"
        self.config = make_config(
            tmp_path, "client", manifest_urls=(self.url,), interval=5, **client_config
        )
        self.media = self.config.download_dir
        self.store = Store.in_state_dir(self.config.state_dir)
        self.engine = Engine(self.config, self.store)
        self.client = SyncClient(self.config, self.store, self.engine, retry_base=3600)
        self.client.retries = False

    def publish(self, name: str, size: int, **kwargs: Any) -> Any:
        assert self.curator.publisher is not None
        path = random_file(self.share / name, size, seed=size)
        return self.curator.publisher.publish(path, **kwargs)

    def sync(self) -> None:
        body = ManifestFetcher(self.url).fetch().body
        assert body is not None
        assert self.client.apply(self.url, body)
        wait_for(lambda: self.client.step() or self.client.settled(), timeout=60, interval=0.2)

    def state(self, path: str) -> ClientItem:
        found = self.store.client_item(self.url, path)
        assert found is not None
        return found

    def close(self) -> None:
        self.engine.close()
        self.store.close()
        self.curator.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.close()


def test_sync_places_renamed_files_and_folders(node: Node) -> None:
    node.publish("upload.bin", 2 * MIB, dest_path="Film (2001)/Film.mkv")
    random_file(node.share / "Show" / "e1.mkv", 300_000, seed=5)
    random_file(node.share / "Show" / "e2.mkv", 100_000, seed=6)
    assert node.curator.publisher is not None
    node.curator.publisher.publish(node.share / "Show", dest_path="TV/My Show")
    node.sync()
    placed = node.media / "Film (2001)" / "Film.mkv"
    assert placed.read_bytes() == (node.share / "upload.bin").read_bytes()
    for name in ("e1.mkv", "e2.mkv"):
        assert (node.media / "TV/My Show" / name).read_bytes() == (
            node.share / "Show" / name
        ).read_bytes()
    assert {ci.state for ci in node.client.items()} == {"placed"}
    assert not any((node.media / ".meshmedia" / "incomplete").iterdir())


def test_a_wrong_sha256_never_places_and_logs_both_hashes(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """An item with a SHA-256 and no XXH3 (the earlier format) is checked by its SHA-256."""
    item = node.publish("a.bin", MIB)
    assert node.curator.manifests is not None
    wrong = "ab" * 32
    bad = dataclasses.replace(item, **{"sha256": wrong, "xxh3": None})
    node.curator.manifests.replace("default", [bad])
    with caplog.at_level(logging.ERROR, logger="meshmedia.client"):
        node.sync()
    assert not (node.media / "a.bin").exists()
    state = node.state("a.bin")
    assert state.state == "failed"
    assert state.attempts == 1
    assert wrong in caplog.text
    assert item.sha256 in caplog.text


class PathEvents(FileSystemEventHandler):
    """Every path a real inotify observer reports under a folder (sources and targets)."""

    def __init__(self, folder: Path) -> None:
        self.paths: set[Path] = set()
        self.lock = threading.Lock()
        self.observer = InotifyObserver()
        self.observer.schedule(self, str(folder), recursive=True)

    def on_any_event(self, event: FileSystemEvent) -> None:
        with self.lock:
            self.paths.add(Path(os.fsdecode(event.src_path)))
            if event.dest_path:
                self.paths.add(Path(os.fsdecode(event.dest_path)))

    def saw(self, path: Path) -> bool:
        with self.lock:
            return path in self.paths

    def saw_under(self, folder: Path) -> bool:
        with self.lock:
            return any(p.is_relative_to(folder) for p in self.paths)


def test_a_corrupt_download_is_never_visible_at_its_final_path(node: Node) -> None:
    """Verified before visible: a download that is not the item must never appear at its
    final path, not even for a moment between a move and a check (Jellyfin could see it).
    inotify reports every create and rename in the media folder, in order."""
    item = node.publish("a.bin", MIB)
    assert node.curator.manifests is not None
    bad = dataclasses.replace(item, **{"xxh3": "cd" * 16})  # the check an XXH3 item gets
    node.curator.manifests.replace("default", [bad])
    node.media.mkdir(parents=True, exist_ok=True)
    events = PathEvents(node.media)
    events.observer.start()
    try:
        node.sync()
        # inotify delivers in order: once the marker is seen, so is everything before it
        marker = node.media / "marker"
        marker.write_bytes(b"")
        wait_for(lambda: events.saw(marker), timeout=30)
    finally:
        events.observer.stop()
        events.observer.join(10)
    assert events.saw_under(node.media / ".meshmedia" / "incomplete")  # it was downloaded
    assert not events.saw(node.media / "a.bin")
    assert node.state("a.bin").state == "failed"


def test_an_item_whose_sha256_arrives_later_is_not_downloaded_again(node: Node) -> None:
    """A large file is listed before its SHA-256 (curator/digests.py). The client places
    it on its pieces and XXH3; the later version that adds the SHA-256 changes nothing
    but the row and the placed file's record: no new download, no new check."""
    assert node.curator.publisher is not None
    assert node.curator.manifests is not None
    node.curator.publisher.first_pass_min = 0
    node.curator.publisher.close()  # the curator's own pass held back: the test adds it
    item = node.publish("big.mkv", 2 * MIB)
    assert item.sha256 is None
    assert item.xxh3
    node.sync()
    assert node.state("big.mkv").state == "placed"
    (record,) = node.store.placed_files(node.url, "big.mkv")
    assert record.sha256 == ""
    status = node.engine.status(item.info_hash or "")
    assert status is not None
    assert status.total_download >= 2 * MIB
    sha = hashlib.sha256((node.share / "big.mkv").read_bytes()).hexdigest()
    node.curator.manifests.update("default", [dataclasses.replace(item, sha256=sha)])
    node.sync()
    state = node.state("big.mkv")
    assert (state.state, state.item.get("sha256")) == ("placed", sha)
    again = node.engine.status(item.info_hash or "")
    assert again is not None
    assert again.total_download == status.total_download
    (record,) = node.store.placed_files(node.url, "big.mkv")
    assert record.sha256 == sha


def test_a_download_under_way_takes_the_sha256_of_a_later_version_without_a_restart(
    tmp_path: Path,
) -> None:
    """The version that adds a large file's SHA-256 comes while clients download it (the
    curator's pass ends 1-2 s after the listing): the download goes on, is never removed
    and started again, and is placed with the new row."""
    node = Node(tmp_path, download_limit=512 * 1024)
    try:
        assert node.curator.publisher is not None
        assert node.curator.manifests is not None
        node.curator.publisher.first_pass_min = 0
        node.curator.publisher.close()  # the curator's own pass held back: the test adds it
        item = node.publish("big.mkv", 2 * MIB)
        ih = item.info_hash or ""
        removed: list[str] = []
        node.engine.subscribe(
            lambda e: removed.append(e.info_hash) if e.kind.value == "removed" else None
        )

        def under_way() -> bool:
            node.client.step()
            status = node.engine.status(ih)
            return status is not None and 0 < status.total_done < 2 * MIB

        body = ManifestFetcher(node.url).fetch().body
        assert body is not None
        assert node.client.apply(node.url, body)
        wait_for(under_way, timeout=60, interval=0.05)
        sha = hashlib.sha256((node.share / "big.mkv").read_bytes()).hexdigest()
        node.curator.manifests.update("default", [dataclasses.replace(item, sha256=sha)])
        node.sync()
        state = node.state("big.mkv")
        assert (state.state, state.item.get("sha256")) == ("placed", sha)
        assert ih not in removed
        (record,) = node.store.placed_files(node.url, "big.mkv")
        assert record.sha256 == sha
        assert (node.media / "big.mkv").read_bytes() == (node.share / "big.mkv").read_bytes()
    finally:
        node.close()


def test_a_correct_file_in_place_is_adopted_without_downloading(node: Node) -> None:
    item = node.publish("movie.mkv", 2 * MIB)
    random_file(node.media / "movie.mkv", 2 * MIB, seed=2 * MIB)
    inode = (node.media / "movie.mkv").stat().st_ino
    node.sync()
    assert node.state("movie.mkv").state == "placed"
    status = node.engine.status(item.info_hash or "")
    assert status is not None
    assert status.total_download == 0
    assert (node.media / "movie.mkv").stat().st_ino == inode
    assert status.save_path.rstrip("/") == str(node.media)


def test_items_gone_from_the_manifest_stop_seeding_and_are_kept(node: Node) -> None:
    item = node.publish("keep.bin", MIB)
    node.sync()
    assert node.curator.manifests is not None
    node.curator.manifests.replace("default", [])
    node.sync()
    assert node.engine.status(item.info_hash or "") is None
    assert (node.media / "keep.bin").exists()
    assert node.client.items() == []


def test_a_download_that_would_fill_the_disk_is_not_started(tmp_path: Path) -> None:
    node = Node(tmp_path, min_free=1 << 60)
    try:
        item = node.publish("huge.bin", MIB)
        node.sync()
        state = node.state("huge.bin")
        assert state.state == "paused"
        assert "not enough disk space" in (state.error or "")
        assert "--min-free" in (state.error or "")
        assert node.engine.status(item.info_hash or "") is None
    finally:
        node.close()


def test_progress_rows_render_rate_and_eta() -> None:
    from meshmedia.client.progress import Row, render  # noqa: PLC0415

    line = render(Row("Spirited Away (2001)", 512 * 1024, 1024 * 1024, 256 * 1024))
    assert "50.0%" in line
    assert "256.0 KiB/s" in line
    assert "ETA 0:02" in line


def test_a_holding_server_is_asked_again_at_once_after_a_change() -> None:
    """Drops a moment apart: the next change must not wait out a pause meant for
    servers that answer at once (it waited up to MIN_SPACING, 1 s, every time)."""
    fetcher = ManifestFetcher("http://127.0.0.1:9/manifest/default.json")
    # Not known yet: one immediate request after a change, then spacing.
    assert fetcher._pause(60, Fetched(b"{}", '"a"', 0.01), 300) == 0.0
    assert fetcher._pause(60, Fetched(b"{}", '"b"', 0.01), 300) == MIN_SPACING
    assert fetcher.long_poll is None
    # Held before its change came: a long-polling server, asked again at once.
    assert fetcher._pause(60, Fetched(b"{}", '"c"', HELD + 0.1), 300) == 0.0
    assert fetcher.long_poll is True
    assert fetcher._pause(60, Fetched(b"{}", '"d"', 0.01), 300) == 0.0
    assert fetcher._pause(60, Fetched(b"{}", '"e"', 0.01), 300) == 0.0
    # One that only seemed to hold answers "unchanged" at once: found out.
    assert fetcher._pause(60, Fetched(None, '"e"', 0.01), 300) == 300
    assert fetcher.long_poll is False
    assert fetcher._pause(60, Fetched(b"{}", '"f"', 0.01), 300) == 300


# -- hostile and careless input (issue 12) -------------------------------------------
def test_the_same_torrent_at_two_paths_places_one_and_refuses_the_other(node: Node) -> None:
    """A curator lists one info hash at two paths after POST /seed with a dest_path for a
    published file: the client crashed. The later item is refused, naming the first."""
    first = node.publish("a.bin", MIB)
    assert node.curator.publisher is not None
    second = node.curator.publisher.publish(node.share / "a.bin", dest_path="Other/a.bin")
    assert first.info_hash == second.info_hash
    node.sync()
    assert (node.media / "a.bin").read_bytes() == (node.share / "a.bin").read_bytes()
    assert not (node.media / "Other").exists()
    (refusal,) = node.client.rejected[node.url]
    assert "Other/a.bin" in refusal
    assert "'a.bin'" in refusal
    assert first.info_hash in refusal


def _publish_folder(node: Node, name: str, files: dict[str, int], **kwargs: Any) -> Any:
    for rel, size in files.items():
        random_file(node.share / name / rel, size, seed=size)
    assert node.curator.publisher is not None
    return node.curator.publisher.publish(node.share / name, **kwargs)


def test_a_folder_item_never_merges_into_a_folder_it_does_not_own(node: Node) -> None:
    """An existing DOWNLOAD_DIR/Movies with the user's own file was merged into, then
    deleted whole by --delete-removed. Now the item fails, naming the stranger."""
    _publish_folder(node, "Movies", {"a.mkv": 200_000, "b.mkv": 100_000})
    own = random_file(node.media / "Movies" / "family.mkv", 5000, seed=9)
    mine = own.read_bytes()
    node.sync()
    state = node.state("Movies")
    assert state.state == "failed"
    assert "family.mkv" in (state.error or "")
    assert "folder of its own" in (state.error or "")
    assert sorted(p.name for p in (node.media / "Movies").iterdir()) == ["family.mkv"]
    assert own.read_bytes() == mine
    assert not (node.media / ".meshmedia" / "replaced").exists()


def test_delete_removed_deletes_only_the_files_meshmedia_placed(tmp_path: Path) -> None:
    node = Node(tmp_path, delete_removed=True)
    try:
        _publish_folder(node, "Show", {"e1.mkv": 200_000, "e2.mkv": 100_000})
        node.publish("single.mkv", 300_000)
        node.sync()
        assert node.state("Show").state == "placed"
        family = random_file(node.media / "Show" / "family.mkv", 4000, seed=11)
        edited = node.media / "single.mkv"
        edited.write_bytes(b"the user's own cut")
        assert node.curator.manifests is not None
        node.curator.manifests.replace("default", [])
        node.sync()
        assert node.client.items() == []
        assert sorted(p.name for p in (node.media / "Show").iterdir()) == ["family.mkv"]
        assert family.stat().st_size == 4000
        assert edited.read_bytes() == b"the user's own cut"
    finally:
        node.close()


def test_delete_removed_deletes_a_placed_folder_whole_when_it_is_all_ours(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path, delete_removed=True)
    try:
        _publish_folder(node, "Show", {"s1/e1.mkv": 200_000, "e2.mkv": 100_000})
        node.sync()
        assert (node.media / "Show" / "s1" / "e1.mkv").exists()
        assert node.curator.manifests is not None
        node.curator.manifests.replace("default", [])
        node.sync()
        assert not (node.media / "Show").exists()
    finally:
        node.close()


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"xxh3": "cd" * 16}, "e2.mkv: XXH3 mismatch: expected " + "cd" * 16),
        ({"sha256": "ab" * 32, "xxh3": None}, "e2.mkv: SHA-256 mismatch: expected " + "ab" * 32),
    ],
)
def test_a_folder_item_with_a_wrong_file_hash_is_not_placed(
    node: Node, changed: dict[str, str | None], reason: str
) -> None:
    """A folder item's per-file hashes were ignored: a wrong one was placed. Each file is
    checked by its XXH3, or by its SHA-256 when it has no XXH3 (the earlier format)."""
    item = _publish_folder(node, "Show", {"e1.mkv": 300_000, "e2.mkv": 100_000})
    files = item.extra["files"]
    assert [f["path"] for f in files] == ["e1.mkv", "e2.mkv"]
    second = {k: v for k, v in {**files[1], **changed}.items() if v is not None}
    bad = dataclasses.replace(item, **{"extra": {**item.extra, "files": [files[0], second]}})
    assert node.curator.manifests is not None
    node.curator.manifests.replace("default", [bad])
    node.sync()
    state = node.state("Show")
    assert state.state == "failed"
    assert reason in (state.error or "")
    assert not (node.media / "Show").exists()


def test_a_folder_item_with_the_right_file_hashes_is_placed_and_recorded(node: Node) -> None:
    item = _publish_folder(node, "Show", {"e1.mkv": 300_000, "sub/e2.mkv": 100_000})
    node.sync()
    assert node.state("Show").state == "placed"
    records = node.store.placed_files(node.url, "Show")
    assert [(r.rel, r.sha256) for r in records] == [
        ("Show/e1.mkv", item.extra["files"][0]["sha256"]),
        ("Show/sub/e2.mkv", item.extra["files"][1]["sha256"]),
    ]


def test_a_folder_item_without_files_has_its_size_checked(node: Node) -> None:
    item = _publish_folder(node, "Show", {"e1.mkv": 300_000, "e2.mkv": 100_000})
    extra = {k: v for k, v in item.extra.items() if k != "files"}
    bad = dataclasses.replace(item, **{"extra": extra, "size": 400_001})
    assert node.curator.manifests is not None
    node.curator.manifests.replace("default", [bad])
    node.sync()
    state = node.state("Show")
    assert state.state == "failed"
    assert "size mismatch" in (state.error or "")
    assert not (node.media / "Show").exists()


def test_a_symlink_at_the_final_path_is_never_written_through(node: Node, tmp_path: Path) -> None:
    """A pre-planted DOWNLOAD_DIR/Show -> /elsewhere was written through."""
    _publish_folder(node, "Show", {"e1.mkv": 300_000})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    node.media.mkdir(parents=True, exist_ok=True)
    (node.media / "Show").symlink_to(elsewhere)
    node.sync()
    state = node.state("Show")
    assert state.state == "failed"
    assert "symlink" in (state.error or "")
    assert list(elsewhere.iterdir()) == []
    assert (node.media / "Show").is_symlink()


def test_items_placed_before_files_were_recorded_get_their_records(node: Node) -> None:
    """Upgrading from a version without placed_files: what the engine seeds from its
    final place is recorded the next time the manifest is planned, with the hashes the
    manifest gives (a folder's per-file ones, a single file's own), else none ("")."""
    _publish_folder(node, "Show", {"e1.mkv": 300_000, "e2.mkv": 100_000})
    bare = _publish_folder(node, "Bare", {"b1.mkv": 200_000, "b2.mkv": 50_000})
    node.publish("single.mkv", 200_000)
    assert node.curator.manifests is not None
    unlisted = {k: v for k, v in bare.extra.items() if k != "files"}
    node.curator.manifests.upsert("default", [dataclasses.replace(bare, **{"extra": unlisted})])
    node.sync()
    paths = ("Show", "Bare", "single.mkv")

    def recorded() -> dict[str, list[tuple[str, str]]]:
        return {p: [(r.rel, r.sha256) for r in node.store.placed_files(node.url, p)] for p in paths}

    placed = recorded()
    assert all(rows and all(len(sha) == 64 for _, sha in rows) for rows in placed.values())
    for path in paths:
        node.store.delete_placed_files(node.url, path)
    body = ManifestFetcher(node.url).fetch().body
    assert body is not None
    assert node.client.apply(node.url, body)  # the same manifest, planned again
    placed["Bare"] = [(rel, "") for rel, _ in placed["Bare"]]  # no hash in the manifest
    assert recorded() == placed
