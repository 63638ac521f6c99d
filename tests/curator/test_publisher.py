"""publisher: real Engine sessions on 127.0.0.1, real files, real manifests on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import xxhash

from meshmedia.config import Config
from meshmedia.curator import Publisher
from meshmedia.engine import Engine, TorrentState
from meshmedia.errors import PublishError
from meshmedia.manifest import ManifestStore
from meshmedia.store import Store
from meshmedia.torrentinfo import read_torrent
from tests.helpers import free_port, make_config, random_file, run_meshmedia

TIMEOUT = 60


class Curator:
    """Store + Engine + ManifestStore + Publisher of one test curator."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store.in_state_dir(config.state_dir)
        self.engine = Engine(config, self.store)
        self.manifests = ManifestStore(config.state_dir / "manifests")
        self.publisher = Publisher(config, self.store, self.engine, self.manifests)
        self.share = config.shares[0].path

    def close(self) -> None:
        self.publisher.close()
        self.manifests.close()
        self.engine.close()
        self.store.close()

    def items(self, group: str = "default") -> dict[str, dict[str, object]]:
        return {i.path: i.to_json() for i in self.manifests.get(group).items}


@contextmanager
def running(config: Config) -> Iterator[Curator]:
    curator = Curator(config)
    try:
        yield curator
    finally:
        curator.close()


@pytest.fixture
def curator(tmp_path: Path) -> Iterator[Curator]:
    with running(make_config(tmp_path, "curator")) as node:
        yield node


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_published_file_and_folder_download_byte_identical(
    curator: Curator, tmp_path: Path
) -> None:
    movie = random_file(curator.share / "Films" / "Movie (2001).mkv", 3 * 2**20 + 12345, seed=1)
    show = curator.share / "Show"
    random_file(show / "s01" / "e01.mkv", 400_000, seed=2)  # not a piece multiple: pad file
    random_file(show / "s01" / "e02.mkv", 700_001, seed=3)
    random_file(show / "notes.txt", 5, seed=4)

    item = curator.publisher.publish(movie)
    folder = curator.publisher.publish(show, title="The Show")

    port = curator.engine.listen_port
    assert item.path == "Films/Movie (2001).mkv"
    assert item.title == "Movie (2001)"
    assert (item.size, item.sha256) == (movie.stat().st_size, sha256_of(movie))
    assert item.torrent.startswith("magnet:?xt=urn:btih:")
    assert f"x.pe=127.0.0.1:{port}" in item.torrent
    assert (folder.path, folder.title, folder.sha256) == ("Show", "The Show", None)
    assert curator.manifests.get("default").version == 2
    assert set(curator.items()) == {"Films/Movie (2001).mkv", "Show"}
    assert [f["path"] for f in folder.extra["files"]] == ["notes.txt", "s01/e01.mkv", "s01/e02.mkv"]
    assert curator.publisher.publish(show, title="The Show") == folder  # a no-op
    assert curator.manifests.get("default").version == 2

    with running(make_config(tmp_path, "client")) as client:
        dest = tmp_path / "downloads"
        hashes = []
        for published in (item, folder):
            info_hash = published.info_hash
            assert info_hash is not None
            torrent = curator.publisher.torrent_bytes(info_hash)
            assert torrent is not None
            assert curator.store.torrent(info_hash) == torrent  # kept in the state database
            hashes.append(client.engine.add_download(torrent, dest, [("127.0.0.1", port)]))
        for info_hash in hashes:
            client.engine.wait_until(info_hash, TorrentState.SEEDING, TIMEOUT)
    # Hashed just now: served without seed_mode's second SHA-1 pass over each piece.
    assert curator.engine.stats()["disk.disk_hash_time"] == 0
    assert (dest / movie.name).read_bytes() == movie.read_bytes()
    for name in ("s01/e01.mkv", "s01/e02.mkv", "notes.txt"):
        assert (dest / "Show" / name).read_bytes() == (show / name).read_bytes()


def test_a_torrent_file_left_by_an_older_meshmedia_is_served_and_released(
    tmp_path: Path,
) -> None:
    """Torrents are kept in the state database; a state dir from before has them as files
    in `torrents/`: still served and seeded, and deleted once unpublished."""
    config = make_config(tmp_path, "curator")
    path = random_file(config.shares[0].path / "film.mkv", 300_000, seed=9)
    with running(config) as curator:
        info_hash = curator.publisher.publish(path).info_hash or ""
        data = curator.store.torrent(info_hash)
        assert data is not None
        assert not (config.state_dir / "torrents").exists()
        curator.store.delete_torrent(info_hash)
    legacy = config.state_dir / "torrents" / f"{info_hash}.torrent"
    legacy.parent.mkdir()
    legacy.write_bytes(data)
    with running(config) as curator:
        assert curator.publisher.torrent_bytes(info_hash) == data
        assert curator.engine.status(info_hash) is not None
        curator.publisher.unpublish(path)
        assert curator.publisher.torrent_bytes(info_hash) is None
    assert not legacy.exists()


@pytest.mark.parametrize("damage", ["integer-row", "text-row", "fifo", "folder"])
def test_a_damaged_torrent_row_or_old_file_is_rewritten_not_served(
    tmp_path: Path, damage: str
) -> None:
    """A row that is not a blob, or a FIFO or folder where an older meshmedia kept the
    file, is no torrent: not served (an integer row gave that many zero bytes, a FIFO
    blocked the read for ever), and publishing writes the torrent again (review 7)."""
    config = make_config(tmp_path, "curator")
    path = random_file(config.shares[0].path / "film.mkv", 300_000, seed=9)
    with running(config) as curator:
        info_hash = curator.publisher.publish(path).info_hash or ""
        data = curator.store.torrent(info_hash)
        assert data is not None
        if damage.endswith("-row"):
            value: object = 100_000_000 if damage == "integer-row" else "d4:infoe"
            curator.store.execute("UPDATE torrents SET data = ? WHERE info_hash = ?",
                                  (value, info_hash))  # fmt: skip
        else:
            curator.store.delete_torrent(info_hash)
            legacy = config.state_dir / "torrents" / f"{info_hash}.torrent"
            legacy.parent.mkdir()
            os.mkfifo(legacy) if damage == "fifo" else legacy.mkdir()
        assert curator.publisher.torrent_bytes(info_hash) is None
        curator.publisher.publish(path)
        assert curator.publisher.torrent_bytes(info_hash) == data


def test_cache_and_catalog_avoid_rehashing(tmp_path: Path) -> None:
    config = make_config(tmp_path, "curator", listen_port=free_port())  # the magnet names it
    path = random_file(config.shares[0].path / "a" / "film.mkv", 2 * 2**20 + 7, seed=5)
    size = path.stat().st_size
    with running(config) as curator:
        first = curator.publisher.publish(path)
        assert curator.publisher.bytes_hashed == size
        assert curator.publisher.publish(path) == first  # unchanged: a no-op
        assert curator.publisher.bytes_hashed == size
        assert curator.manifests.get("default").version == 1

    with running(config) as curator:  # a restart
        assert curator.publisher.published() == {path}
        assert curator.engine.status(first.info_hash or "") is not None
        curator.store.delete_torrent(first.info_hash or "")  # lost: rebuilt from the hash cache
        assert curator.publisher.publish(path) == first
        rebuilt = curator.store.torrent(first.info_hash or "")
        assert rebuilt is not None  # its creation date may differ, not its info hash
        assert read_torrent(rebuilt).info_hash == first.info_hash
        assert curator.publisher.torrent_bytes(first.info_hash or "") == rebuilt
        moved = path.parent.parent / "b" / "film.mkv"
        moved.parent.mkdir()
        path.rename(moved)
        before = curator.manifests.get("default").version
        curator.publisher.moved(path, moved)
        assert curator.publisher.bytes_hashed == 0
        # one new version: no reader ever sees a manifest with neither path
        assert curator.manifests.get("default").version == before + 1
        assert set(curator.items()) == {"b/film.mkv"}
        item = curator.items()["b/film.mkv"]
        assert (item["sha256"], item["added_at"]) == (first.sha256, first.added_at)
        assert item["torrent"] == first.torrent  # same name and pieces: same torrent
        assert curator.publisher.published() == {moved}

        with moved.open("ab") as out:  # changed content is always hashed again
            out.write(b"more")
        changed = curator.publisher.publish(moved)
        assert curator.publisher.bytes_hashed == size + 4
        assert changed.sha256 == sha256_of(moved)
        assert changed.info_hash != first.info_hash
        assert curator.engine.status(first.info_hash or "") is None  # the old torrent left
        assert curator.publisher.torrent_bytes(first.info_hash or "") is None
        assert curator.manifests.get("default").items == (changed,)


def test_published_is_a_snapshot_handed_out_without_a_copy(curator: Curator) -> None:
    """The watcher asks for every moved file: a copy of 5,000 paths cost 0.78 ms each."""
    first = random_file(curator.share / "one.mkv", 1000, seed=61)
    curator.publisher.publish(first)
    before = curator.publisher.published()
    assert before == {first}
    assert curator.publisher.published() is before  # nothing changed: the same object
    second = random_file(curator.share / "two.mkv", 1000, seed=62)
    curator.publisher.publish(second)
    after = curator.publisher.published()
    assert after == {first, second}
    assert before == {first}  # a snapshot: what a caller holds never changes under it
    assert not hasattr(after, "add")  # and no caller can change the publisher's view
    first.unlink()
    curator.publisher.unpublish(first)
    assert curator.publisher.published() == {second}


def test_unpublish_removes_item_and_seed(curator: Curator) -> None:
    path = random_file(curator.share / "gone.mkv", 300_000, seed=6)
    item = curator.publisher.publish(path, "family", dest_path="Films/Gone.mkv")
    assert [i.path for i in curator.manifests.get("family").items] == ["Films/Gone.mkv"]
    path.unlink()
    curator.publisher.unpublish(path)
    assert curator.manifests.get("family").items == ()
    assert curator.engine.status(item.info_hash or "") is None
    assert curator.publisher.published() == frozenset()
    assert curator.publisher.seeds() == []


def test_followed_file_is_hashed_once(curator: Curator) -> None:
    data = os.urandom(5 * 2**20 + 3)
    path = curator.share / "growing.mkv"
    with path.open("wb") as out:
        for start in range(0, len(data), 2**20):
            out.write(data[start : start + 2**20])
            out.flush()
            curator.publisher.follow(path)
    item = curator.publisher.publish(path)
    assert item.sha256 == hashlib.sha256(data).hexdigest()
    assert curator.publisher.bytes_hashed == len(data)
    assert curator.engine.status(item.info_hash or "") is not None


def test_a_large_file_is_listed_before_its_sha256_which_a_later_version_adds(
    curator: Curator, tmp_path: Path
) -> None:
    """Listed after its pieces and XXH3 (two SHA-1 threads, no SHA-256 on the way); the
    SHA-256 follows from a background pass in a new version, and the full hash cache
    row with it: publishing it again reads nothing."""
    curator.publisher.first_pass_min = 0  # the rule for files of 64 MiB and more
    path = random_file(curator.share / "big.mkv", 3 * 2**20 + 5, seed=11)
    data = path.read_bytes()
    item = curator.publisher.publish(path)
    assert (item.sha256, item.xxh3) == (None, xxhash.xxh3_128(data).hexdigest())
    assert curator.publisher.wait_digests(TIMEOUT)
    later = curator.manifests.get("default")
    assert later.version == 2  # 1: the item, 2: its SHA-256
    (got,) = later.items
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert (got.info_hash, got.xxh3, got.added_at) == (item.info_hash, item.xxh3, item.added_at)
    assert curator.store.catalog_entry("default", "big.mkv").item["sha256"] == got.sha256
    read = curator.publisher.bytes_hashed
    assert read == 2 * len(data)  # the first pass, then the SHA-256 pass
    assert curator.publisher.publish(path) == got  # from the hash cache: no read, no version
    assert curator.publisher.bytes_hashed == read
    assert curator.manifests.get("default").version == later.version

    with running(make_config(tmp_path, "client")) as client:  # the first version's torrent
        torrent = curator.publisher.torrent_bytes(item.info_hash or "")
        assert torrent is not None
        dest = tmp_path / "downloads"
        port = curator.engine.listen_port
        ih = client.engine.add_download(torrent, dest, [("127.0.0.1", port)])
        client.engine.wait_until(ih, TorrentState.SEEDING, TIMEOUT)
    assert (dest / "big.mkv").read_bytes() == data


def test_a_file_changed_before_its_sha256_pass_gets_none(curator: Curator) -> None:
    """The background pass hashes the file that was published or nothing: another size
    or XXH3 (here the file was rewritten, same size) leaves the item without a SHA-256."""
    curator.publisher.first_pass_min = 0
    path = random_file(curator.share / "a.mkv", 2**20, seed=12)
    curator.publisher.close()  # the background thread stopped: the pass never starts
    item = curator.publisher.publish(path)
    assert item.sha256 is None
    publisher = Publisher(curator.config, curator.store, curator.engine, curator.manifests)
    try:
        # what a restart finds: listed without a SHA-256, hashed again in the background
        assert publisher.wait_digests(TIMEOUT)
        (got,) = curator.manifests.get("default").items
        assert got.sha256 == sha256_of(path)
    finally:
        publisher.close()
    random_file(path, 2**20, seed=13)  # rewritten in place
    curator.store.save_catalog(
        dataclasses.replace(
            curator.store.catalog_entry("default", "a.mkv"), item=item.to_json()
        )  # listed without its SHA-256 again
    )
    publisher = Publisher(curator.config, curator.store, curator.engine, curator.manifests)
    try:
        assert publisher.wait_digests(TIMEOUT)
        assert curator.store.catalog_entry("default", "a.mkv").item.get("sha256") is None
    finally:
        publisher.close()


def test_refused_inputs(curator: Curator, tmp_path: Path) -> None:
    empty = curator.share / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(PublishError, match="empty"):
        curator.publisher.publish(empty)
    outside = random_file(tmp_path / "outside.mkv", 10, seed=7)
    with pytest.raises(PublishError, match="not inside a share"):
        curator.publisher.publish(outside)
    (curator.share / "link.mkv").symlink_to(outside)
    with pytest.raises(PublishError, match=r"link\.mkv is a symbolic link"):
        curator.publisher.publish(curator.share / "link.mkv")
    with pytest.raises(PublishError, match="share folder itself"):
        curator.publisher.publish(curator.share)
    assert curator.manifests.get("default").version == 0


def test_publish_command_posts_to_the_curator(curator: Curator, tmp_path: Path) -> None:
    from meshmedia.http import ManifestServer  # noqa: PLC0415

    path = random_file(curator.share / "Films" / "film.mkv", 200_000, seed=8)
    state = str(curator.config.state_dir)
    no_token = run_meshmedia(
        "publish", str(path), env={"MESHMEDIA_STATE_DIR": str(tmp_path), "MESHMEDIA_TOKEN": ""}
    )
    assert no_token.returncode == 1
    assert "no write token" in no_token.stderr
    (curator.config.state_dir / "token").write_text("s3cret\n")
    down = run_meshmedia(
        "publish", str(path), "--state-dir", state, "--url", f"http://127.0.0.1:{free_port()}"
    )
    assert down.returncode == 1
    assert "cannot reach the curator" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1

    server = ManifestServer(
        curator.config, curator.manifests, curator.publisher, curator.engine.snapshot, "s3cret"
    ).start()
    try:
        env = {"MESHMEDIA_PORT": str(server.port), "MESHMEDIA_HOST": "127.0.0.1"}
        refused = run_meshmedia("publish", str(path), env={**env, "MESHMEDIA_TOKEN": "wrong"})
        assert refused.returncode == 1
        assert "the curator refused (401)" in refused.stderr
        done = run_meshmedia(
            "publish", str(path), "--group", "family", "--title", "A Film",
            "--state-dir", state, env={**env, "MESHMEDIA_TOKEN": ""},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (item,) = curator.manifests.get("family").items
        assert done.stdout.strip() == item.torrent
        assert (item.title, item.path) == ("A Film", "Films/film.mkv")
        bad = run_meshmedia("publish", str(path), "--nope", env=env)
        assert bad.returncode == 2
        assert "No such option" in bad.stderr
    finally:
        server.close()


def test_a_folder_whose_file_names_clients_would_refuse_is_not_published(
    curator: Curator,
) -> None:
    """Folder items carry per-file paths and hashes (`files`) that every client checks
    like item paths; a name no client would accept is refused at publishing, by name."""
    show = curator.share / "Odd"
    random_file(show / "ok.mkv", 1000, seed=5)
    random_file(show / "bad\\name.mkv", 1000, seed=6)
    with pytest.raises(PublishError, match=r"files\[0\]: path contains a backslash"):
        curator.publisher.publish(show)
    assert "Odd" not in curator.items()
