"""Resume data helpers: the files a torrent has on disk and whether they still match.

libtorrent's resume data for an incomplete torrent records no file sizes or
mtimes, so a file truncated while the daemon was down would be trusted. We keep
our own (size, mtime_ns) per file next to the resume data and force a recheck
when the disk disagrees.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import libtorrent as lt

MISSING = (-1, 0)


def file_paths(ti: Any, renamed: dict[int, str] | None = None) -> list[tuple[int, str, int]]:
    """(index, path relative to save_path, size) of every real (non-pad) file."""
    if ti is None:
        return []
    fs = ti.layout()  # the original names; renames come in `renamed`
    renamed = renamed or {}
    result = []
    for index in range(fs.num_files()):
        if fs.file_flags(index) & lt.file_storage.flag_pad_file:
            continue
        result.append((index, renamed.get(index, fs.file_path(index)), fs.file_size(index)))
    return result


def file_stats(save_path: str, paths: list[tuple[int, str, int]]) -> tuple[tuple[int, int], ...]:
    """(size, mtime_ns) of each file in `paths`; MISSING for a file that is not there."""
    stats = []
    for _index, rel, _size in paths:
        try:
            st = os.stat(Path(save_path) / rel)
        except OSError:
            stats.append(MISSING)
            continue
        stats.append((st.st_size, st.st_mtime_ns))
    return tuple(stats)


def is_complete(params: Any) -> bool:
    """True when resume params say every piece is there (or the torrent is in seed mode)."""
    if params.flags & lt.torrent_flags.seed_mode:
        return True
    pieces = list(params.have_pieces)
    return (
        bool(pieces)
        and params.ti is not None
        and all(pieces)
        and (len(pieces) == params.ti.num_pieces())
    )


def needs_recheck(
    saved: tuple[tuple[int, int], ...], current: tuple[tuple[int, int], ...], complete: bool
) -> bool:
    """Whether the files on disk no longer match what the resume data was saved against.

    A complete torrent must match exactly. An incomplete one may have been
    written to after its last save (the daemon was killed mid-download): a newer
    mtime with the same size is expected; a smaller or missing file, a changed
    size or an older mtime is not.
    """
    if not saved:
        return False
    if len(saved) != len(current):
        return True
    for (old_size, old_mtime), (size, mtime) in zip(saved, current, strict=True):
        if (size, mtime) == MISSING and (old_size, old_mtime) != MISSING:
            return True
        if complete and (size, mtime) != (old_size, old_mtime):
            return True
        if not complete and (size != old_size or mtime < old_mtime):
            # a partial file that grew is fine only when it was sparse-allocated smaller
            if size > old_size and mtime >= old_mtime:
                continue
            return True
    return False
