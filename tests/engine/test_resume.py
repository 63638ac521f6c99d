"""Resume data's own rules: which restored torrent must be rechecked, and what is complete.

Real libtorrent objects (torrent_info, add_torrent_params) and real files; the
engine-level behaviour (no rehash at restart, a truncated seed rechecked) is in
test_engine.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import libtorrent as lt
import pytest

from meshmedia.engine.resume import MISSING, file_paths, file_stats, is_complete, needs_recheck
from tests.helpers import random_file

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
