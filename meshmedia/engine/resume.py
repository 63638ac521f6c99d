"""Resume data: saved in the Store as torrents change, all of it at close, read back at start.

libtorrent's resume data for an incomplete torrent records no file sizes or
mtimes, so a file truncated while the daemon was down would be trusted. We keep
our own (size, mtime_ns) per file next to the resume data and force a recheck
when the disk disagrees.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import libtorrent as lt

from meshmedia.errors import EngineError
from meshmedia.store import ResumeRecord, Store
from meshmedia.torrentinfo import torrent_files

from .certificates import PRIVATE_FLAGS, torrent_ca
from .convert import hex_of, status_from_lt
from .table import Role, TorrentTable

log = logging.getLogger(__name__)

MISSING = (-1, 0)
COUNTERS_INTERVAL = 300.0
"""Seconds between saves for changed counters alone (bytes up/down, active time)."""

# libtorrent's resume_data_flags_t bits (the binding names only their union,
# `only_if_modified` = 248): an idle seed's counters change every second, so
# `only_if_modified` re-saved every torrent every second.
IF_COUNTERS_CHANGED = 8
IF_MODIFIED_BUT_COUNTERS = int(lt.torrent_handle.only_if_modified) & ~IF_COUNTERS_CHANGED


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


def real_names(torrent: bytes, ti: Any, save_path: Path) -> dict[int, str]:
    """The files whose names libtorrent changed on loading `torrent`, by index, with
    the names the `.torrent` gives them, when the file is on disk under that name in
    `save_path` and not under libtorrent's.

    libtorrent 2.1.1 cuts a name over 240 bytes to 240 (keeping the extension: a
    250-byte name, or 83 CJK characters = 253 bytes) and drops bidirectional-text
    controls (U+202E, U+200E); a seed then looked for a file that is not there
    and never served a byte (review12 finding 4).
    """
    if all(os.path.lexists(save_path / path) for _, path, _ in file_paths(ti)):
        # Every file is there under libtorrent's name: none can need a rename. One stat
        # a file, where parsing the .torrent first took 55 us of each seed added.
        return {}
    try:
        entries = torrent_files(torrent)
    except EngineError:
        return {}  # names that are not UTF-8: libtorrent's are the only ones there are
    fs = ti.layout()
    renames = {}
    for entry in entries:
        if entry.pad or entry.index >= fs.num_files():
            continue
        theirs = fs.file_path(entry.index).replace(os.sep, "/")
        if theirs != entry.path and _found_only_at(save_path, entry.path, theirs):
            renames[entry.index] = entry.path
    return renames


def _found_only_at(save_path: Path, ours: str, theirs: str) -> bool:
    parts = ours.split("/")
    if ours.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in ours:
        return False
    return os.path.isfile(save_path / ours) and not os.path.lexists(save_path / theirs)


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
    if params.ti is None:
        return False
    # the bitfield comes back rounded up to whole bytes: 11 pieces read as 16 flags
    count = params.ti.num_pieces()
    pieces = list(params.have_pieces)
    return count > 0 and len(pieces) >= count and all(pieces[:count])


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


class ResumeData:
    """Keeps every torrent's resume data in the Store: what changed, every `tick`; all
    of it at close; and brings the torrents back into a new session at start."""

    def __init__(self, table: TorrentTable, store: Store) -> None:
        """Save the resume data of `table`'s torrents into `store`."""
        self._table = table
        self._store = store
        self._cond = threading.Condition()
        self._unsaved: set[str] = set()
        self._gathered: list[ResumeRecord] = []  # saved by libtorrent, stored after the batch
        self._next_counters = time.monotonic() + COUNTERS_INTERVAL

    def tick(self) -> None:
        """Save the torrents whose progress, state, config or metadata changed (of those
        with a new status since the last tick), and every COUNTERS_INTERVAL also those
        whose transfer counters alone changed (of all)."""
        now = time.monotonic()
        counters = now >= self._next_counters
        if counters:
            self._next_counters = now + COUNTERS_INTERVAL
        which = IF_MODIFIED_BUT_COUNTERS | (IF_COUNTERS_CHANGED if counters else 0)
        # Between counter saves only torrents with a new status can have changed:
        # asking every one of 5,000 idle seeds took 0.1-1.2 s of each tick.
        if not counters:
            # A torrent with a new status has mostly changed: asking first
            # (need_save_resume_data, a round trip to libtorrent's network thread) held the
            # alert thread 0.26 s of a 5,000-seed burst, and the add alerts with it. One that
            # has not changed answers save_resume_data_failed_alert (on_save_failed).
            for handle in self._table.take_touched().values():
                handle.save_resume_data(lt.torrent_handle.save_info_dict | which)
            return
        for handle in self._table.handles().values():
            if handle.need_save_resume_data(which):
                handle.save_resume_data(lt.torrent_handle.save_info_dict | which)

    def save_all(self, timeout: float) -> None:
        """Ask for every torrent's resume data and wait (at most `timeout`) until stored."""
        pending = self._table.handles()
        with self._cond:
            self._unsaved = set(pending)
        for handle in pending.values():
            handle.save_resume_data(lt.torrent_handle.save_info_dict)
        with self._cond:
            if not self._cond.wait_for(lambda: not self._unsaved, timeout):
                log.warning("resume data not saved for %s", sorted(self._unsaved))

    def on_saved(self, alert: Any) -> None:
        """save_resume_data_alert: store the data with our own file sizes and mtimes."""
        params = alert.params
        ih = hex_of(params.info_hashes)
        data = lt.write_resume_data_buf(params)
        paths = file_paths(params.ti, dict(params.renamed_files))
        files = file_stats(params.save_path, paths)
        role = self._table.role(ih)
        if role is None:
            return  # removed meanwhile: do not bring it back
        self._gathered.append(ResumeRecord(ih, bytes(data), role.value, files))

    def store_gathered(self) -> None:
        """After a batch of alerts: store the resume data it brought in one transaction
        (one commit each cost 0.5 ms of the alert thread while 5,000 seeds were added)."""
        gathered, self._gathered = self._gathered, []
        records = [r for r in gathered if self._table.role(r.info_hash) is not None]
        if records:
            self._store.save_resumes(records)
            log.debug("saved the resume data of %d torrents", len(records))
        for record in gathered:
            self._done(record.info_hash)

    def on_save_failed(self, alert: Any) -> None:
        """save_resume_data_failed_alert: nothing to save (e.g. no metadata yet)."""
        ih = hex_of(alert.handle.info_hashes())
        log.debug("no resume data for %s: %s", ih, alert.message())
        self._done(ih)

    def _done(self, ih: str) -> None:
        with self._cond:
            self._unsaved.discard(ih)
            self._cond.notify_all()

    def restore(self, session: Any) -> None:
        """Add every torrent saved in the store to `session` (rechecking changed files)."""
        for record in self._store.load_resume():
            try:
                atp = lt.read_resume_data(record.data)
            except RuntimeError as exc:
                log.warning("dropping unreadable resume data of %s: %s", record.info_hash, exc)
                self._store.delete_resume(record.info_hash)
                continue
            self._restore_one(session, record, atp)
        log.info("restored %d torrents", len(self._table))

    def _restore_one(self, session: Any, record: ResumeRecord, atp: Any) -> None:
        try:
            role = Role(record.role)
        except ValueError:
            log.warning(
                "dropping resume data of %s: unknown role %r", record.info_hash, record.role
            )
            self._store.delete_resume(record.info_hash)
            return
        renamed = {int(k): str(v) for k, v in dict(atp.renamed_files).items()}
        current = file_stats(atp.save_path, file_paths(atp.ti, renamed))
        complete = is_complete(atp)
        recheck = needs_recheck(record.files, current, complete)
        if recheck:  # added with no pieces claimed, libtorrent checks the files it finds
            atp.flags &= ~lt.torrent_flags.seed_mode
            atp.have_pieces = []
            atp.verified_pieces = []
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        if torrent_ca(atp.ti):  # a private group's: whatever the saved flags say
            atp.flags |= PRIVATE_FLAGS
        self._table.expect(record.info_hash, role)
        try:
            handle = session.add_torrent(atp)
        except RuntimeError as exc:
            self._table.unexpect(record.info_hash)
            log.warning("cannot restore %s: %s", record.info_hash, exc)
            return
        if recheck:
            log.warning("files of %s changed while stopped: rechecking", record.info_hash)
        complete = complete and not recheck
        status = status_from_lt(handle.status())
        self._table.track(
            record.info_hash, handle, role, status, complete=complete, renamed=renamed
        )
