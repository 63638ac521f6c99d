"""The Placer on its own, with real parts: a real libtorrent engine, a real store, real files.

A "finished download" here is a torrent the engine seeds from its staging folder
(`incomplete_dir`), exactly where a download finishes; `place` then verifies and
relocates it. Adoption is `check_in_place` on files put at the final path by hand.
The whole journey through a curator and SyncClient is in test_client.py.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt
import pytest
import xxhash

from meshmedia.client.place import InPlace, Placer
from meshmedia.client.placement import incomplete_dir, record_of
from meshmedia.engine import Engine
from meshmedia.engine.snapshots import TorrentState
from meshmedia.manifest import Item
from meshmedia.store import Store
from tests.helpers import make_config, wait_for
from tests.hostile import hand_built

URL = "http://c/manifest/default.json"
PIECE = 16 * 1024


class Notes:
    """A JellyfinNotifier stand-in that only records the paths it is told of (the real
    notifier against a stand-in Jellyfin is tested in tests/jellyfin)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def notify(self, path: Path) -> None:
        self.paths.append(path)


@dataclass
class Rig:
    """A Placer over a real engine and store, in one test's folders."""

    placer: Placer
    engine: Engine
    store: Store
    media: Path
    notes: Notes


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    config = make_config(tmp_path, "client")
    store = Store.in_state_dir(config.state_dir)
    engine = Engine(config, store)
    notes = Notes()
    media = config.download_dir
    media.mkdir(parents=True, exist_ok=True)
    placer = Placer(engine, store, media, notes)  # type: ignore[arg-type]
    try:
        yield Rig(placer, engine, store, media, notes)
    finally:
        engine.close()
        store.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_of(n: int, size: int) -> bytes:
    return bytes((n + i) % 251 for i in range(size))


def torrent(source: Path, name: str) -> tuple[bytes, str]:
    """A v1 torrent of the file or folder `source / name`, and its info hash."""
    root = source / name
    paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    entries = [
        lt.create_file_entry(p.relative_to(source).as_posix(), p.stat().st_size) for p in paths
    ]
    ct = lt.create_torrent(entries, PIECE, lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, str(source))
    info = lt.torrent_info(ct.generate())
    return lt.bencode(ct.generate()), str(info.info_hash())


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def lay_out(root: Path, name: str, files: dict[str, bytes]) -> None:
    """`files` under `root / name`; the key "" is a single file named `name`."""
    if "" in files:
        write(root, {name: files[""]})
    else:
        write(root / name, files)


def finished(rig: Rig, tmp_path: Path, name: str, files: dict[str, bytes]) -> tuple[str, bytes]:
    """A download of `files` (under `name`) finished in its staging folder; its info hash."""
    source = tmp_path / "source"
    lay_out(source, name, files)
    data, ih = torrent(source, name)
    staging = incomplete_dir(rig.media, ih)
    lay_out(staging, name, files)
    rig.engine.add_seed(data, staging, verified=True)
    return ih, data


def single_item(path: str, data: bytes, ih: str, **fields: object) -> Item:
    values: dict[str, object] = {"sha256": sha(data), "size": len(data)}
    values.update(fields)
    return Item("t", f"magnet:?xt=urn:btih:{ih}", path, **values)  # type: ignore[arg-type]


def folder_item(path: str, files: dict[str, bytes], ih: str, listed: bool = True) -> Item:
    entries = [
        {"path": rel, "size": len(data), "sha256": sha(data)} for rel, data in sorted(files.items())
    ]
    extra = {"files": entries} if listed else {}
    size = sum(len(d) for d in files.values())
    return Item("t", f"magnet:?xt=urn:btih:{ih}", path, size=size, extra=extra)


def ready(rig: Rig, ih: str) -> None:
    wait_for(
        lambda: (s := rig.engine.status(ih)) is not None and s.state == TorrentState.SEEDING,
        timeout=30,
    )


FOLDER = {"e1.mkv": data_of(1, 40_000), "sub/e2.mkv": data_of(2, 20_000)}


# -- verifying and placing a finished download ----------------------------------------
def test_a_verified_single_file_is_placed_recorded_and_announced(rig: Rig, tmp_path: Path) -> None:
    data = data_of(3, 50_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    final = rig.media / "Film" / "Film.mkv"
    item = single_item("Film/Film.mkv", data, ih)
    assert rig.placer.place(URL, item, ih, final) is None
    assert final.read_bytes() == data
    assert rig.notes.paths == [final]
    (record,) = rig.store.placed_files(URL, "Film/Film.mkv")
    assert (record.rel, record.sha256, record.size) == ("Film/Film.mkv", sha(data), len(data))
    assert record.ino == final.stat().st_ino
    assert not incomplete_dir(rig.media, ih).exists()
    status = rig.engine.status(ih)
    assert status is not None
    assert os.path.normpath(status.save_path) == str(final.parent)


def test_a_verified_folder_is_placed_file_by_file(rig: Rig, tmp_path: Path) -> None:
    ih, _ = finished(rig, tmp_path, "Show", FOLDER)
    ready(rig, ih)
    final = rig.media / "TV" / "My Show"
    assert rig.placer.place(URL, folder_item("TV/My Show", FOLDER, ih), ih, final) is None
    for rel, data in FOLDER.items():
        assert (final / rel).read_bytes() == data
    records = rig.store.placed_files(URL, "TV/My Show")
    assert sorted((r.rel, r.sha256) for r in records) == sorted(
        (f"TV/My Show/{rel}", sha(data)) for rel, data in FOLDER.items()
    )


@pytest.mark.parametrize(
    ("fields", "reason", "retry"),
    [
        ({"sha256": "ab" * 32}, "SHA-256 mismatch: expected " + "ab" * 32 + ", got ", True),
        ({"sha256": None, "xxh3": "cd" * 16}, "XXH3 mismatch: expected " + "cd" * 16, True),
        ({"size": 49_999}, "size mismatch: expected 49999 bytes, the torrent has 50000", True),
        (
            {"extra": {"files": [{"path": "a", "size": 50_000, "sha256": "ab" * 32}]}},
            "the item lists files but its torrent is a single file",
            False,
        ),
    ],
)
def test_a_download_that_is_not_the_item_is_deleted_with_the_reason(
    rig: Rig, tmp_path: Path, fields: dict[str, object], reason: str, retry: bool
) -> None:
    data = data_of(4, 50_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    final = rig.media / "a.bin"
    problem = rig.placer.place(URL, single_item("a.bin", data, ih, **fields), ih, final)
    assert problem is not None
    assert problem.reason.startswith(reason), problem.reason
    assert problem.retry is retry
    assert not final.exists()
    assert rig.engine.status(ih) is None
    assert not incomplete_dir(rig.media, ih).exists()
    assert rig.notes.paths == []
    assert rig.store.placed_files(URL, "a.bin") == []


def test_a_good_xxh3_alone_verifies(rig: Rig, tmp_path: Path) -> None:
    data = data_of(5, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    item = single_item("a.bin", data, ih, sha256=None, xxh3=xxhash.xxh3_128(data).hexdigest())
    assert rig.placer.place(URL, item, ih, rig.media / "a.bin") is None
    (record,) = rig.store.placed_files(URL, "a.bin")
    assert record.sha256 == ""  # no SHA-256 pass on the way: none known yet


def test_an_item_with_an_xxh3_is_verified_by_it_and_records_the_manifests_sha256(
    rig: Rig, tmp_path: Path
) -> None:
    """The pieces checked every byte against the info hash; the XXH3 is the whole-file
    check on top (a SHA-256 pass would cost 1 s per GiB more): the manifest's SHA-256
    is recorded as the file's, not recomputed."""
    data = data_of(6, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    item = single_item("a.bin", data, ih, xxh3=xxhash.xxh3_128(data).hexdigest())
    assert rig.placer.place(URL, item, ih, rig.media / "a.bin") is None
    (record,) = rig.store.placed_files(URL, "a.bin")
    assert record.sha256 == sha(data)
    assert (rig.media / "a.bin").read_bytes() == data


def test_a_download_changed_after_its_piece_checks_fails_its_xxh3_and_is_deleted(
    rig: Rig, tmp_path: Path
) -> None:
    """Bytes that differ from the item's after libtorrent's piece checks (here: seeded
    unchecked from a staging file with one byte flipped) are never placed: the XXH3
    catches them, with the SHA-256 the manifest gives left unread."""
    data = data_of(7, 30_000)
    source = tmp_path / "source"
    lay_out(source, "dl.bin", {"": data})
    torrent_data, ih = torrent(source, "dl.bin")
    corrupt = bytearray(data)
    corrupt[12_345] ^= 0xFF
    lay_out(incomplete_dir(rig.media, ih), "dl.bin", {"": bytes(corrupt)})
    rig.engine.add_seed(torrent_data, incomplete_dir(rig.media, ih), verified=True)
    ready(rig, ih)
    final = rig.media / "a.bin"
    item = single_item("a.bin", data, ih, xxh3=xxhash.xxh3_128(data).hexdigest())
    problem = rig.placer.place(URL, item, ih, final)
    assert problem is not None
    assert problem.reason.startswith("XXH3 mismatch: expected " + item.xxh3), problem.reason
    assert not final.exists()
    assert not incomplete_dir(rig.media, ih).exists()
    assert rig.store.placed_files(URL, "a.bin") == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("hash", "sub/e2.mkv: SHA-256 mismatch: expected " + "ab" * 32),
        (
            "missing",
            "the torrent's files are not the item's (missing ['zz.mkv'], extra ['sub/e2.mkv'])",
        ),
        ("sha256", "a sha256 cannot describe a folder torrent (per-file hashes go in files)"),
    ],
)
def test_a_folder_download_that_is_not_the_item_names_the_file(
    rig: Rig, tmp_path: Path, change: str, reason: str
) -> None:
    ih, _ = finished(rig, tmp_path, "Show", FOLDER)
    ready(rig, ih)
    item = folder_item("Show", FOLDER, ih)
    files = list(item.extra["files"])
    if change == "hash":
        files[1] = {**files[1], "sha256": "ab" * 32}
        item = Item(item.title, item.torrent, item.path, size=item.size, extra={"files": files})
    elif change == "missing":
        files[1] = {**files[1], "path": "zz.mkv"}
        item = Item(item.title, item.torrent, item.path, size=item.size, extra={"files": files})
    else:
        item = Item(item.title, item.torrent, item.path, sha256="ab" * 32, size=item.size)
    problem = rig.placer.place(URL, item, ih, rig.media / "Show")
    assert problem is not None
    if change == "hash":
        assert problem.reason.startswith(reason + ", got "), problem.reason
    else:
        assert problem.reason == reason
    assert problem.retry is (change == "hash")
    assert not (rig.media / "Show").exists()


def test_a_folder_download_with_other_files_names_three_of_each(rig: Rig, tmp_path: Path) -> None:
    """Four files listed and four others in the torrent: the reason names the first three
    of each, sorted (a folder of thousands would make a reason nobody reads)."""
    theirs = {f"{name}.mkv": data_of(n, 1_000) for n, name in enumerate("abcd")}
    ih, _ = finished(rig, tmp_path, "Show", theirs)
    ready(rig, ih)
    ours = {f"{name}.mkv": data_of(n, 1_000) for n, name in enumerate("wxyz")}
    problem = rig.placer.place(URL, folder_item("Show", ours, ih), ih, rig.media / "Show")
    assert problem is not None
    assert problem.reason == (
        "the torrent's files are not the item's (missing ['w.mkv', 'x.mkv', 'y.mkv'], "
        "extra ['a.mkv', 'b.mkv', 'c.mkv'])"
    )
    assert problem.retry is False


def test_a_strangers_file_at_the_final_path_is_moved_aside_not_overwritten(
    rig: Rig, tmp_path: Path
) -> None:
    data = data_of(6, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    final = rig.media / "a.bin"
    final.write_bytes(b"the user's own")
    assert rig.placer.place(URL, single_item("a.bin", data, ih), ih, final) is None
    assert final.read_bytes() == data
    kept = [p for p in (rig.media / ".meshmedia").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [b"the user's own"]


def test_the_items_own_file_at_the_final_path_is_not_moved_aside(rig: Rig, tmp_path: Path) -> None:
    data = data_of(7, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    final = rig.media / "a.bin"
    final.write_bytes(data)  # the same bytes (a copy, say): not a stranger's
    assert rig.placer.place(URL, single_item("a.bin", data, ih), ih, final) is None
    assert final.read_bytes() == data
    assert not (rig.media / ".meshmedia" / "replaced").exists()


def test_a_folder_in_the_way_of_a_single_file_is_refused(rig: Rig, tmp_path: Path) -> None:
    data = data_of(8, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    final = rig.media / "a.bin"
    (final / "x").mkdir(parents=True)
    problem = rig.placer.place(URL, single_item("a.bin", data, ih), ih, final)
    assert problem is not None
    assert problem.reason == f"a folder is in the way at {final}"
    assert (final / "x").is_dir()


def test_a_file_in_the_way_of_a_folder_is_refused(rig: Rig, tmp_path: Path) -> None:
    ih, _ = finished(rig, tmp_path, "Show", FOLDER)
    ready(rig, ih)
    final = rig.media / "Show"
    final.write_bytes(b"mine")
    problem = rig.placer.place(URL, folder_item("Show", FOLDER, ih), ih, final)
    assert problem is not None
    assert problem.reason == f"{final} is in the way: a folder item needs a folder of its own"
    assert final.read_bytes() == b"mine"


def test_a_folder_holding_only_the_items_files_is_placed_into(rig: Rig, tmp_path: Path) -> None:
    """The same bytes already there (a copy) or files recorded as placed are ours."""
    ih, _ = finished(rig, tmp_path, "Show", FOLDER)
    ready(rig, ih)
    final = rig.media / "Show"
    write(final, {"e1.mkv": FOLDER["e1.mkv"]})
    assert rig.placer.place(URL, folder_item("Show", FOLDER, ih), ih, final) is None
    assert sorted(p.name for p in final.rglob("*.mkv")) == ["e1.mkv", "e2.mkv"]


def test_a_recorded_file_changed_since_is_still_ours_in_the_folder(
    rig: Rig, tmp_path: Path
) -> None:
    ih, _ = finished(rig, tmp_path, "Show", FOLDER)
    ready(rig, ih)
    final = rig.media / "Show"
    write(final, {"old.mkv": b"placed by meshmedia before"})
    rig.store.save_placed_files([record_of(URL, "Show", rig.media, "Show/old.mkv", "")])
    assert rig.placer.place(URL, folder_item("Show", FOLDER, ih), ih, final) is None
    assert (final / "old.mkv").read_bytes() == b"placed by meshmedia before"


def test_a_strangers_file_in_the_folder_is_named_and_nothing_placed(
    rig: Rig, tmp_path: Path
) -> None:
    ih, _ = finished(rig, tmp_path, "Show", FOLDER)
    ready(rig, ih)
    final = rig.media / "Show"
    write(final, {"family.mkv": b"mine", "e1.mkv": b"not the item's e1"})
    problem = rig.placer.place(URL, folder_item("Show", FOLDER, ih), ih, final)
    assert problem is not None
    assert problem.reason.startswith(f"{final} already holds ")
    assert "which meshmedia did not place: a folder item is placed only into a folder" in (
        problem.reason
    )
    assert (final / "e1.mkv").read_bytes() == b"not the item's e1"
    assert not (final / "sub").exists()


def test_a_symlink_at_the_item_path_is_refused(rig: Rig, tmp_path: Path) -> None:
    data = data_of(9, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (rig.media / "Film").symlink_to(elsewhere)
    final = rig.media / "Film" / "a.bin"
    problem = rig.placer.place(URL, single_item("Film/a.bin", data, ih), ih, final)
    assert problem is not None
    assert "symlink" in problem.reason
    assert list(elsewhere.iterdir()) == []


# -- adopting what is already in place ------------------------------------------------
def test_a_single_file_in_place_is_found_and_adopted(rig: Rig, tmp_path: Path) -> None:
    data = data_of(10, 30_000)
    final = rig.media / "a.bin"
    final.write_bytes(data)
    item = single_item("a.bin", data, "ab" * 20)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    assert found.files == (("", final),)
    assert found.unchanged()
    assert rig.placer.adopt(found, final, "ab" * 20, "dl.bin") is True
    link = incomplete_dir(rig.media, "ab" * 20) / "dl.bin"
    assert link.stat().st_ino == final.stat().st_ino
    assert rig.placer.check_in_place(single_item("a.bin", b"other", "ab" * 20), final) is None


def test_a_folder_in_place_is_found_and_adopted_file_by_file(rig: Rig) -> None:
    final = rig.media / "Show"
    write(final, FOLDER)
    item = folder_item("Show", FOLDER, "cd" * 20)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    assert found.files == (("e1.mkv", final / "e1.mkv"), ("sub/e2.mkv", final / "sub/e2.mkv"))
    assert rig.placer.adopt(found, final, "cd" * 20, None) is True
    staging = incomplete_dir(rig.media, "cd" * 20)
    for rel in FOLDER:
        assert (staging / "Show" / rel).stat().st_ino == (final / rel).stat().st_ino


@pytest.mark.parametrize("spoil", ["hash", "missing", "stranger", "file"])
def test_a_folder_not_wholly_the_items_is_not_in_place(rig: Rig, spoil: str) -> None:
    final = rig.media / "Show"
    write(final, FOLDER)
    if spoil == "hash":
        (final / "sub/e2.mkv").write_bytes(data_of(3, 20_000))
    elif spoil == "missing":
        (final / "e1.mkv").unlink()
    elif spoil == "stranger":
        (final / "family.mkv").write_bytes(b"mine")
    else:
        for rel in FOLDER:
            (final / rel).unlink()
        (final / "sub").rmdir()
        final.rmdir()
        final.write_bytes(b"a file, not a folder")
    assert rig.placer.in_place(folder_item("Show", FOLDER, "cd" * 20), final) is None


def test_a_folder_without_a_file_list_is_in_place_by_its_records(rig: Rig) -> None:
    final = rig.media / "Show"
    write(final, FOLDER)
    item = folder_item("Show", FOLDER, "cd" * 20, listed=False)
    assert rig.placer.in_place(item, final) is None  # nothing recorded: it must download
    rows = [record_of(URL, "Show", rig.media, f"Show/{rel}", sha(d)) for rel, d in FOLDER.items()]
    rig.store.save_placed_files(rows)
    found = rig.placer.in_place(item, final)
    assert found is not None
    assert sorted(found) == sorted((rel, final / rel) for rel in FOLDER)
    (final / "family.mkv").write_bytes(b"mine")
    assert rig.placer.in_place(item, final) is None
    (final / "family.mkv").unlink()
    (final / "e1.mkv").write_bytes(b"changed")
    assert rig.placer.in_place(item, final) is None


def test_a_file_in_place_that_changes_after_its_check_is_not_adopted(rig: Rig) -> None:
    data = data_of(11, 30_000)
    final = rig.media / "a.bin"
    final.write_bytes(data)
    item = single_item("a.bin", data, "ab" * 20)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    final.unlink()
    final.write_bytes(data)  # the same bytes, another file
    assert not found.unchanged()
    assert rig.placer.adopt(found, final, "ab" * 20, None) is False
    assert not incomplete_dir(rig.media, "ab" * 20).exists()
    final.unlink()
    assert not found.unchanged()


def test_a_file_touched_while_it_was_checked_is_changed(tmp_path: Path) -> None:
    """The same inode, size and mtime, but written in the nanosecond the check began:
    it may have been written during the check."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"x")
    st = os.lstat(path)
    stats = ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),)
    assert InPlace((("", path),), stats, st.st_mtime_ns + 1).unchanged()
    assert not InPlace((("", path),), stats, st.st_mtime_ns).unchanged()
    assert not InPlace((("", path),), stats, st.st_mtime_ns - 1).unchanged()


def test_an_adopted_download_is_placed_onto_the_same_files(rig: Rig, tmp_path: Path) -> None:
    data = data_of(12, 40_000)
    source = tmp_path / "source"
    write(source, {"dl.bin": data})
    torrent_data, ih = torrent(source, "dl.bin")
    final = rig.media / "a.bin"
    final.write_bytes(data)
    inode = final.stat().st_ino
    item = single_item("a.bin", data, ih)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    assert rig.placer.adopt(found, final, ih, "dl.bin")
    rig.engine.add_seed(torrent_data, incomplete_dir(rig.media, ih), verified=True)
    ready(rig, ih)
    assert rig.placer.place(URL, item, ih, final) is None
    assert final.stat().st_ino == inode
    assert final.read_bytes() == data
    assert not (rig.media / ".meshmedia" / "replaced").exists()  # its own file, not moved aside


def test_discarding_a_torrent_seeded_in_place_keeps_its_files(rig: Rig, tmp_path: Path) -> None:
    """Only a staging folder's files are deleted with their torrent: a placed item's
    files are the user's library. The engine's close drains libtorrent's disk jobs,
    a deletion included, so the file's survival after it is a finished fact."""
    data = data_of(13, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    final = rig.media / "a.bin"
    assert rig.placer.place(URL, single_item("a.bin", data, ih), ih, final) is None
    rig.placer.discard(ih, rig.media)
    assert rig.engine.status(ih) is None
    rig.engine.close()
    assert final.read_bytes() == data


def test_discarding_a_download_deletes_its_staging_folder(rig: Rig, tmp_path: Path) -> None:
    data = data_of(14, 30_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    rig.placer.discard(ih, incomplete_dir(rig.media, ih))
    assert rig.engine.status(ih) is None
    assert not incomplete_dir(rig.media, ih).exists()


def test_a_file_in_place_with_only_an_xxh3_is_checked_by_it(rig: Rig) -> None:
    data = data_of(15, 30_000)
    final = rig.media / "a.bin"
    final.write_bytes(data)
    fast = xxhash.xxh3_128(data).hexdigest()
    item = single_item("a.bin", data, "ab" * 20, sha256=None, xxh3=fast)
    assert rig.placer.in_place(item, final) == [("", final)]
    wrong = single_item("a.bin", data, "ab" * 20, sha256=None, xxh3="cd" * 16)
    assert rig.placer.in_place(wrong, final) is None


def test_a_link_at_the_final_path_to_a_folder_of_the_items_files_is_not_in_place(
    rig: Rig, tmp_path: Path
) -> None:
    """Adopting through a link would seed (and later place into) a folder outside."""
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, FOLDER)
    (rig.media / "Show").symlink_to(elsewhere)
    item = folder_item("Show", FOLDER, "cd" * 20)
    assert rig.placer.in_place(item, rig.media / "Show") is None
    assert rig.placer.check_in_place(item, rig.media / "Show") is None


def test_unsafe_torrent_names_are_a_problem_that_retrying_cannot_help() -> None:
    hostile = hand_built(b"Show", [([b"..", b"x.mkv"], b"a" * 100), ([b"ok"], b"b" * 100)])
    problem = Placer.names_problem(hostile.data)
    assert problem is not None
    assert "Show/../x.mkv" in problem.reason
    assert problem.retry is False
    broken = Placer.names_problem(b"d4:infoi1ee")
    assert broken is not None
    assert broken.reason.startswith("not a valid .torrent file ("), broken.reason
    assert broken.retry is False
    fine = hand_built(b"Show", [([b"a.mkv"], b"a" * 100), ([b"b.mkv"], b"b" * 100)])
    assert Placer.names_problem(fine.data) is None


def test_placing_creates_only_the_items_folders_0755_whatever_the_umask(
    rig: Rig, tmp_path: Path
) -> None:
    """Jellyfin reads the folders; nobody else may write them (finding 12), even under
    umask 0, where libtorrent would make them 0777 had meshmedia not made them first."""
    top = data_of(16, 20_000)
    ih_top, _ = finished(rig, tmp_path / "one", "top.bin", {"": top})
    ih_show, _ = finished(rig, tmp_path / "two", "Show", FOLDER)
    ready(rig, ih_top)
    ready(rig, ih_show)
    before = os.umask(0)
    try:
        assert (
            rig.placer.place(
                URL, single_item("top.bin", top, ih_top), ih_top, rig.media / "top.bin"
            )
            is None
        )
        final = rig.media / "TV" / "My Show"
        assert (
            rig.placer.place(URL, folder_item("TV/My Show", FOLDER, ih_show), ih_show, final)
            is None
        )
    finally:
        os.umask(before)
    assert sorted(p.name for p in rig.media.iterdir()) == [".meshmedia", "TV", "top.bin"]
    for folder in (rig.media / "TV", final, final / "sub"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_a_finished_download_with_unsafe_names_is_deleted_not_placed(rig: Rig) -> None:
    """The names are checked again at placing (the torrent may have come with its
    metadata): `Show/../x.mkv` is refused even though libtorrent wrote `Show/_/x.mkv`."""
    hostile = hand_built(b"Show", [([b"..", b"x.mkv"], b"a" * 100), ([b"ok"], b"b" * 100)])
    staging = incomplete_dir(rig.media, hostile.info_hash)
    with warnings.catch_warnings():  # files(), not layout(): the names libtorrent writes
        warnings.simplefilter("ignore", DeprecationWarning)
        storage = lt.torrent_info(hostile.data).files()
    for index, payload in enumerate(hostile.payloads):
        write(staging, {storage.file_path(index): payload})
    ih = rig.engine.add_seed(hostile.data, staging, verified=True)
    ready(rig, ih)
    item = Item("t", f"magnet:?xt=urn:btih:{ih}", "Show", size=200)
    problem = rig.placer.place(URL, item, ih, rig.media / "Show")
    assert problem is not None
    assert "Show/../x.mkv" in problem.reason
    assert problem.retry is False
    assert not (rig.media / "Show").exists()
    assert rig.engine.status(ih) is None
    assert not staging.exists()


def test_a_file_where_a_folder_of_the_path_must_be_is_a_problem(rig: Rig, tmp_path: Path) -> None:
    data = data_of(17, 20_000)
    ih, _ = finished(rig, tmp_path, "dl.bin", {"": data})
    ready(rig, ih)
    (rig.media / "TV").write_bytes(b"a file named like the folder")
    final = rig.media / "TV" / "a.bin"
    problem = rig.placer.place(URL, single_item("TV/a.bin", data, ih), ih, final)
    assert problem is not None
    assert problem.reason == f"{rig.media / 'TV'} is in the way: it is not a folder"
    assert (rig.media / "TV").read_bytes() == b"a file named like the folder"


def test_a_later_download_of_an_adopted_torrent_is_verified_again(rig: Rig, tmp_path: Path) -> None:
    """Adoption skips hashing files checked in place; once placed, the torrent is no
    longer "adopted": downloaded again later (the file lost), every byte is hashed."""
    data = data_of(18, 40_000)
    source = tmp_path / "source"
    write(source, {"dl.bin": data})
    torrent_data, ih = torrent(source, "dl.bin")
    final = rig.media / "a.bin"
    final.write_bytes(data)
    item = single_item("a.bin", data, ih)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    assert rig.placer.adopt(found, final, ih, "dl.bin")
    rig.engine.add_seed(torrent_data, incomplete_dir(rig.media, ih), verified=True)
    ready(rig, ih)
    assert rig.placer.place(URL, item, ih, final) is None
    rig.placer.discard(ih, rig.media)
    final.unlink()
    corrupt = bytes(40_000)
    write(incomplete_dir(rig.media, ih), {"dl.bin": corrupt})
    rig.engine.add_seed(torrent_data, incomplete_dir(rig.media, ih), verified=True)
    ready(rig, ih)
    problem = rig.placer.place(URL, item, ih, final)
    assert problem is not None
    assert problem.reason.startswith("SHA-256 mismatch"), problem.reason
    assert not final.exists()


def test_a_magnet_items_files_are_adopted_under_the_torrents_own_name(
    rig: Rig, tmp_path: Path
) -> None:
    """A magnet's item names no file: its files in place (`Series`) are linked under the
    name the engine learnt from the torrent (`Show`), where the torrent looks for them;
    under `Series` the engine would download it all again. An unsafe torrent's name is
    not learnt: its files would be linked under the item's own name."""
    source = tmp_path / "source"
    write(source / "Show", FOLDER)
    data, ih = torrent(source, "Show")
    final = rig.media / "Series"
    write(final, FOLDER)
    item = folder_item("Series", FOLDER, ih)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    rig.placer.learn_name(ih, data)
    assert rig.placer.adopt(found, final, ih, None) is True
    staging = incomplete_dir(rig.media, ih)
    assert sorted(p.name for p in staging.iterdir()) == ["Show"]
    for rel in FOLDER:
        assert (staging / "Show" / rel).stat().st_ino == (final / rel).stat().st_ino
    hostile = hand_built(b"Evil", [([b"..", b"x.mkv"], b"a" * 100), ([b"ok"], b"b" * 100)])
    rig.placer.learn_name("ef" * 20, hostile.data)
    assert rig.placer.adopt(found, final, "ef" * 20, None) is True
    assert sorted(p.name for p in incomplete_dir(rig.media, "ef" * 20).iterdir()) == ["Series"]


def test_an_adopted_folder_is_placed_and_recorded_file_by_file(rig: Rig, tmp_path: Path) -> None:
    """Adoption skips hashing each file checked in place, every one of them: each is
    recorded with the manifest's SHA-256, onto the files that were there."""
    source = tmp_path / "source"
    write(source / "Show", FOLDER)
    data, ih = torrent(source, "Show")
    final = rig.media / "Show"
    write(final, FOLDER)
    item = folder_item("Show", FOLDER, ih)
    found = rig.placer.check_in_place(item, final)
    assert found is not None
    assert rig.placer.adopt(found, final, ih, "Show")
    rig.engine.add_seed(data, incomplete_dir(rig.media, ih), verified=True)
    ready(rig, ih)
    assert rig.placer.place(URL, item, ih, final) is None
    records = {r.rel: r.sha256 for r in rig.store.placed_files_at("Show")}
    assert records == {f"Show/{rel}": sha(d) for rel, d in FOLDER.items()}
