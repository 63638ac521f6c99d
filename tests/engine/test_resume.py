"""Resume data's own rules: which restored torrent must be rechecked, and what is complete.

Real libtorrent objects (torrent_info, add_torrent_params) and real files; the
engine-level behaviour (no rehash at restart, a truncated seed rechecked) is in
test_engine.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from meshmedia.engine import Engine, TorrentState
from meshmedia.engine.building import SourceFile, build_torrent
from meshmedia.engine.certificates import PRIVATE_FLAGS
from meshmedia.engine.resume import (
    COUNTERS_INTERVAL,
    IF_COUNTERS_CHANGED,
    IF_MODIFIED_BUT_COUNTERS,
    MISSING,
    ResumeData,
    file_paths,
    file_stats,
    is_complete,
    needs_recheck,
    real_names,
)
from meshmedia.groups import GroupAuthority
from meshmedia.hashing import hash_file
from meshmedia.store import ResumeRecord, Store
from tests.helpers import make_config, random_file, wait_for
from tests.hostile import hand_built

PIECE = 16 * 1024


def torrent_of(root: Path, files: dict[str, int], pad: bool = False) -> lt.torrent_info:
    """A v1 torrent of `files` (name relative to `root` -> size), hashed."""
    fs = lt.file_storage()
    for name, size in files.items():
        random_file(root / name, size, seed=size)
        fs.add_file(name, size)
    flags = 0 if pad else lt.create_torrent.v1_only  # a hybrid torrent pads files to pieces
    ct = lt.create_torrent(fs, PIECE, flags=flags)
    lt.set_piece_hashes(ct, str(root))
    return lt.torrent_info(ct.generate())


SAVED = ((100, 5_000), (200, 7_000))


@pytest.mark.parametrize(
    ("current", "complete", "expected"),
    [
        (SAVED, True, False),  # as saved
        (SAVED, False, False),
        (((100, 5_000),), True, True),  # a file fewer
        ((*SAVED, (1, 1)), False, True),  # a file more
        (((100, 5_000), MISSING), True, True),  # a file gone
        (((100, 5_000), MISSING), False, True),
        (((100, 5_001), (200, 7_000)), True, True),  # touched: complete must match exactly
        (((101, 5_000), (200, 7_000)), True, True),
        (((100, 5_001), (200, 7_000)), False, False),  # written after the last save: fine
        (((150, 5_001), (200, 7_000)), False, False),  # grew (sparse, then written): fine
        (((150, 5_000), (200, 7_000)), False, False),  # grew at the same mtime
        (((99, 5_001), (200, 7_000)), False, True),  # shrank
        (((100, 4_999), (200, 7_000)), False, True),  # older
        (((150, 4_999), (200, 7_000)), False, True),  # grew but older
        (((150, 5_001), (199, 7_000)), False, True),  # one grew, a later one shrank
    ],
)
def test_needs_recheck(
    current: tuple[tuple[int, int], ...], complete: bool, expected: bool
) -> None:
    assert needs_recheck(SAVED, current, complete) is expected


def test_a_file_missing_then_as_missing_is_no_change() -> None:
    assert needs_recheck((MISSING,), (MISSING,), complete=False) is False
    assert needs_recheck((MISSING, (1, 2)), (MISSING, (1, 2)), complete=True) is False
    assert needs_recheck((MISSING,), ((0, 1),), complete=False) is False  # appeared, grew
    assert needs_recheck((), ((1, 1),), complete=True) is False  # nothing saved to compare


def test_file_paths_skip_pads_and_apply_renames(tmp_path: Path) -> None:
    ti = torrent_of(tmp_path, {"Show/a.mkv": 20_000, "Show/b.mkv": 5_000}, pad=True)
    paths = file_paths(ti)
    assert [(p, s) for _, p, s in paths] == [("Show/a.mkv", 20_000), ("Show/b.mkv", 5_000)]
    assert ti.layout().num_files() > len(paths)  # the pad file was there, and skipped
    assert [index for index, _, _ in paths] == [0, 2]  # libtorrent's indexes, pad at 1
    renamed = file_paths(ti, {0: "TV/a.mkv", 1: "TV/pad"})
    assert [p for _, p, _ in renamed] == ["TV/a.mkv", "Show/b.mkv"]
    assert file_paths(None) == []


def test_file_stats_reads_size_and_mtime_or_missing(tmp_path: Path) -> None:
    random_file(tmp_path / "a.bin", 1234)
    os.utime(tmp_path / "a.bin", ns=(1, 777_000_000_000))
    paths = [(0, "a.bin", 1234), (1, "gone.bin", 10)]
    assert file_stats(str(tmp_path), paths) == ((1234, 777_000_000_000), MISSING)
    after = [(1, "gone.bin", 10), (0, "a.bin", 1234)]  # a missing file is no end of the list
    assert file_stats(str(tmp_path), after) == (MISSING, (1234, 777_000_000_000))
    assert file_stats(str(tmp_path), []) == ()


def test_is_complete_follows_the_pieces_and_seed_mode(tmp_path: Path) -> None:
    ti = torrent_of(tmp_path, {"one/a.bin": 3 * PIECE})
    atp = lt.add_torrent_params()
    atp.ti = ti
    assert is_complete(atp) is False  # no pieces known
    atp.have_pieces = [True, True, True]
    assert is_complete(atp) is True
    atp.have_pieces = [True, False, True]
    assert is_complete(atp) is False
    atp.have_pieces = [True, True]  # fewer than the torrent has
    assert is_complete(atp) is False
    atp.have_pieces = []
    atp.flags |= lt.torrent_flags.seed_mode
    assert is_complete(atp) is True
    bare = lt.add_torrent_params()
    bare.have_pieces = [True]
    assert is_complete(bare) is False  # pieces but no metadata
    small = lt.add_torrent_params()
    small.ti = torrent_of(tmp_path / "small", {"b.bin": 1_000})  # a torrent of one piece
    small.have_pieces = [True]
    assert is_complete(small) is True


# -- the names libtorrent changes on loading (review12 finding 4) ---------------------
LONG = "L" * 246 + ".mkv"  # libtorrent 2.1.1 cuts a name over 240 bytes
BIDI = "a\u200eb.mkv"  # and drops bidirectional-text controls


def built(root: Path, files: dict[str, int]) -> tuple[bytes, lt.torrent_info]:
    """The `.torrent` bytes of `files` (written under `root`) and libtorrent's view of it."""
    entries = []
    for name, size in files.items():
        random_file(root / name, size, seed=size)
        entries.append(lt.create_file_entry(name, size))
    ct = lt.create_torrent(entries, PIECE, lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, str(root))
    data = lt.bencode(ct.generate())
    return data, lt.torrent_info(data)


def test_real_names_are_the_torrents_own_where_only_they_are_on_disk(tmp_path: Path) -> None:
    data, ti = built(tmp_path, {LONG: 20_000})
    assert ti.layout().file_path(0) != LONG  # libtorrent's own name is another
    assert real_names(data, ti, tmp_path) == {0: LONG}
    assert real_names(data, ti, tmp_path / "elsewhere") == {}  # not on disk: nothing to fix
    (tmp_path / ti.layout().file_path(0)).write_bytes(b"x")
    assert real_names(data, ti, tmp_path) == {}  # libtorrent's name is there too: its own


def test_real_names_in_a_folder_rename_only_the_changed_files(tmp_path: Path) -> None:
    data, ti = built(tmp_path, {f"Show/{BIDI}": 20_000, "Show/plain.mkv": 10_000})
    assert real_names(data, ti, tmp_path) == {0: f"Show/{BIDI}"}
    plain, plain_ti = built(tmp_path / "p", {"Show/plain.mkv": 10_000})
    assert real_names(plain, plain_ti, tmp_path / "p") == {}


def test_real_names_never_lead_out_of_the_save_path(tmp_path: Path) -> None:
    """A hand-made torrent naming `Show/../x.mkv` (libtorrent: `Show/_/x.mkv`) finds a
    file at `x.mkv` beside the folder: it is never renamed onto it."""
    hostile = hand_built(b"Show", [([b"..", BIDI.encode()], b"a" * 100), ([b"ok"], b"b" * 100)])
    ti = lt.torrent_info(hostile.data)
    (tmp_path / "save" / "Show").mkdir(parents=True)  # so that `Show/..` resolves
    (tmp_path / "save" / BIDI).write_bytes(b"a" * 100)  # what `Show/../` reaches
    (tmp_path / "save" / "Show" / BIDI).write_bytes(b"a" * 100)  # `Show//`, `Show/./`
    assert real_names(hostile.data, ti, tmp_path / "save") == {}
    for parts in ([b"", BIDI.encode()], [b".", BIDI.encode()]):
        odd = hand_built(b"Show", [(parts, b"a" * 100), ([b"ok"], b"b" * 100)])
        assert real_names(odd.data, lt.torrent_info(odd.data), tmp_path / "save") == {}


def test_real_names_of_names_that_are_not_utf8_are_libtorrents(tmp_path: Path) -> None:
    odd = hand_built(b"Show", [([b"\xff\xfe.mkv"], b"a" * 100), ([b"ok"], b"b" * 100)])
    ti = lt.torrent_info(odd.data)
    assert real_names(odd.data, ti, tmp_path) == {}


# -- restoring: what cannot be restored is dropped, never fatal -----------------------
def test_unreadable_or_unknown_resume_data_is_dropped_at_start(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        with Engine(config, store) as engine:
            ih = engine.add_seed(built(tmp_path / "src", {"a.bin": 20_000})[0], tmp_path / "src")
        (record,) = store.load_resume()
        assert record.info_hash == ih
        store.save_resume(ResumeRecord("ab" * 20, b"not bencoded", "seed", ()))
        store.save_resume(ResumeRecord("cd" * 20, record.data, "mystery", record.files))
        store.delete_resume(ih)
        with Engine(config, store) as engine:
            assert engine.snapshot().torrents == ()
        assert store.load_resume() == []
    finally:
        store.close()


def test_a_saved_seed_is_restored_with_its_role(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        data, _ = built(tmp_path / "src", {"a.bin": 20_000})
        with Engine(config, store) as engine:
            ih = engine.add_seed(data, tmp_path / "src", verified=True)
        (record,) = store.load_resume()
        assert (record.info_hash, record.role) == (ih, "seed")
        assert record.files == file_stats(str(tmp_path / "src"), [(0, "a.bin", 20_000)])
        with Engine(config, store) as engine:
            status = engine.status(ih)
            assert status is not None
            assert status.save_path.rstrip("/") == str(tmp_path / "src")
    finally:
        store.close()


def test_saving_all_gives_up_after_its_timeout_when_a_save_never_comes(tmp_path: Path) -> None:
    """close() waits for every torrent's save, but only `timeout` seconds: here a second
    ResumeData over the engine's real torrents, which no save alert ever reaches."""
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        data, _ = built(tmp_path / "src", {"a.bin": 20_000})
        with Engine(config, store) as engine:
            engine.add_seed(data, tmp_path / "src", verified=True)
            lonely = ResumeData(engine._table, store)
            done = threading.Event()
            worker = threading.Thread(target=lambda: (lonely.save_all(0.2), done.set()))
            worker.daemon = True
            worker.start()
            assert done.wait(30)  # a bound on the wait, far above the 0.2 s it needs
    finally:
        store.close()


class _Recorded:
    """A real torrent handle whose save requests are recorded on their way through."""

    def __init__(self, handle: Any, asked: list[int]) -> None:
        self._handle, self._asked = handle, asked

    def need_save_resume_data(self, flags: int) -> bool:
        return bool(self._handle.need_save_resume_data(flags))

    def save_resume_data(self, flags: int) -> None:
        self._asked.append(int(flags))
        self._handle.save_resume_data(flags)


class _RecordingTable:
    """The engine's TorrentTable as a ResumeData's tick sees it, its handles recorded."""

    def __init__(self, table: Any, asked: list[int]) -> None:
        self._table, self._asked = table, asked

    def handles(self) -> dict[str, Any]:
        return {ih: _Recorded(h, self._asked) for ih, h in self._table.handles().items()}

    def take_touched(self) -> dict[str, Any]:
        return {ih: _Recorded(h, self._asked) for ih, h in self._table.take_touched().items()}


def test_counters_alone_wait_a_whole_interval_from_the_start(tmp_path: Path) -> None:
    """The first counters pass is COUNTERS_INTERVAL after start-up, not at it: a seed
    whose counters alone changed is not saved by a new ResumeData's first tick (a daemon
    started every few minutes would save every seed each time), and is by a due pass."""
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        data, _ = built(tmp_path / "src", {"a.bin": 20_000})
        with Engine(config, store) as engine:
            ih = engine.add_seed(data, tmp_path / "src", verified=True)
            engine._resume.save_all(30)
            handle = engine._table.handle(ih)
            wait_for(lambda: handle.need_save_resume_data(IF_COUNTERS_CHANGED), timeout=30)
            asked: list[int] = []
            fresh = ResumeData(_RecordingTable(engine._table, asked), store)  # type: ignore[arg-type]

            def counters_asked() -> int:  # a touched seed is asked, but not for its counters
                return sum(1 for flags in asked if flags & IF_COUNTERS_CHANGED)

            fresh.tick()
            assert counters_asked() == 0
            fresh._next_counters -= COUNTERS_INTERVAL  # the pass is due
            fresh.tick()
            assert counters_asked() == 1
            wait_for(lambda: handle.need_save_resume_data(IF_COUNTERS_CHANGED), timeout=30)
            fresh.tick()  # and the next one is a whole interval away again
            assert counters_asked() == 1
    finally:
        store.close()


def test_saving_all_returns_once_every_torrent_is_stored(tmp_path: Path) -> None:
    """close() waits for the saves it asked for, not for its timeout: save_all(300)
    returns as soon as each torrent's resume data is in the store."""
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        one, _ = built(tmp_path / "one", {"a.bin": 20_000})
        two, _ = built(tmp_path / "two", {"b.bin": 30_000})
        with Engine(config, store) as engine:
            ihs = {engine.add_seed(one, tmp_path / "one"), engine.add_seed(two, tmp_path / "two")}
            for record in store.load_resume():
                store.delete_resume(record.info_hash)
            done = threading.Event()
            worker = threading.Thread(target=lambda: (engine._resume.save_all(300), done.set()))
            worker.daemon = True
            worker.start()
            assert done.wait(30)  # a bound far below the 300 s it would wait for nothing
            assert {r.info_hash for r in store.load_resume()} == ihs
    finally:
        store.close()


def test_a_save_libtorrent_refuses_ends_the_wait_for_it(tmp_path: Path) -> None:
    """A save_resume_data_failed_alert (here "not modified since the last save", as a
    tick's save can get when another save came first) is an answer too: whoever waits
    for that torrent's save (save_all, at close) waits no longer."""
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        data, _ = built(tmp_path / "src", {"a.bin": 20_000})
        with Engine(config, store) as engine:
            ih = engine.add_seed(data, tmp_path / "src", verified=True)
            resume = engine._resume
            resume.save_all(30)
            with resume._cond:
                resume._unsaved = {ih}  # as save_all has it while it waits
            engine._table.handle(ih).save_resume_data(IF_MODIFIED_BUT_COUNTERS)
            with resume._cond:
                assert resume._cond.wait_for(lambda: not resume._unsaved, 30)
    finally:
        store.close()


def test_a_restored_private_torrent_is_off_the_dht_and_lsd_and_started_whatever_it_saved(
    tmp_path: Path,
) -> None:
    """A private group's torrent comes back with DHT and LSD off and not paused even when
    its saved flags say otherwise (resume data of an older version, or saved while it
    was added paused); a restored seed is seeding."""
    group = GroupAuthority.open(tmp_path / "curator-state", "family")
    src = random_file(tmp_path / "src" / "a.mkv", 100_000)
    torrent = build_torrent([SourceFile(src.name, src, hash_file(src))], group.ca_pem).data
    config = make_config(tmp_path, "curator")
    store = Store.in_state_dir(config.state_dir)
    try:
        with Engine(config, store) as engine:
            ih = engine.add_seed(torrent, src.parent, verified=True, private_ca=group.ca_pem)
        (record,) = store.load_resume()
        atp = lt.read_resume_data(record.data)
        atp.flags &= ~PRIVATE_FLAGS
        atp.flags |= lt.torrent_flags.paused | lt.torrent_flags.auto_managed
        data = bytes(lt.write_resume_data_buf(atp))
        store.save_resume(ResumeRecord(ih, data, record.role, record.files))
        with Engine(config, store) as engine:
            flags = engine._table.handle(ih).flags()
            assert flags & PRIVATE_FLAGS == PRIVATE_FLAGS
            assert not flags & (lt.torrent_flags.paused | lt.torrent_flags.auto_managed)
            wait_for(
                lambda: (s := engine.status(ih)) is not None and s.state == TorrentState.SEEDING
            )
    finally:
        store.close()


def test_renamed_files_keep_their_new_names_after_a_restart(tmp_path: Path) -> None:
    """A placed download's files are renamed into place (relocate); after a restart the
    engine still names them by their new names (what placing and backfill look at)."""
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        data, _ = built(tmp_path / "src", {"a.bin": 20_000})
        with Engine(config, store) as engine:
            ih = engine.add_seed(data, tmp_path / "src", verified=True)
            engine.relocate(ih, tmp_path / "dest", {0: "b.bin"})
            assert engine.indexed_files(ih) == [(0, "b.bin", 20_000)]
        with Engine(config, store) as engine:
            assert engine.indexed_files(ih) == [(0, "b.bin", 20_000)]
            assert (tmp_path / "dest" / "b.bin").stat().st_size == 20_000
    finally:
        store.close()


def test_a_ticks_save_is_stored_without_an_error_before_any_save_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new seed's resume data is saved by a tick, long before close() asks for all:
    stored, and nothing on the alert thread fails on the way (nobody waits for it)."""
    config = make_config(tmp_path)
    store = Store.in_state_dir(config.state_dir)
    try:
        data, _ = built(tmp_path / "src", {"a.bin": 20_000})
        with caplog.at_level("ERROR"), Engine(config, store) as engine:
            ih = engine.add_seed(data, tmp_path / "src", verified=True)
            wait_for(lambda: ih in {r.info_hash for r in store.load_resume()}, timeout=30)
            errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            assert errors == []
    finally:
        store.close()
