"""The client's placement: adopt what is already in place, verify a finished download, move it.

`Placer` owns the end of an item's journey: the files at its final path
(`download_dir / item.path`) and the staging folder its torrent downloads into.
Every file it moves goes where `placement.targets_for` says (the item's path
and libtorrent's sanitised names, inside the item's folder, no link followed);
a torrent whose own names are unsafe is refused outright. A folder item is
placed only into a folder of its own: one holding files meshmedia did not place
is an error for that item, never a merge. What it placed is recorded file by
file in the store. It reports what went wrong as a `Problem` and leaves the
item's bookkeeping (failed, placed) to `SyncClient`.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from meshmedia.engine import Engine
from meshmedia.errors import EngineError, ManifestError, MeshmediaError
from meshmedia.hashing import file_digests, xxh3_of
from meshmedia.jellyfin import JellyfinNotifier
from meshmedia.manifest import Item
from meshmedia.store import PlacedFile, Store
from meshmedia.torrentinfo import read_torrent, torrent_files

from .items import Problem
from .placement import (
    Target,
    foreign_content,
    incomplete_dir,
    link_for_adoption,
    make_dirs,
    matches,
    move_aside,
    record_of,
    refuse_links,
    remove_tree,
    still_placed,
    targets_for,
    unsafe_names,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InPlace:
    """An item's files found verified at its final path (`check_in_place`, a worker's job),
    with how each looked when the check began, so that adopting them later (on the main
    loop) can tell whether any was replaced, written or touched meanwhile."""

    files: tuple[tuple[str, Path], ...]  # (path inside the item, the file)
    stats: tuple[tuple[int, int, int, int], ...]  # (dev, ino, size, mtime_ns) of each
    began: int  # time.time_ns() when the check began

    def unchanged(self) -> bool:
        """True when every file is still the one checked, untouched since the check began."""
        try:
            now = tuple(_identity(path) for _, path in self.files)
        except OSError:
            return False
        return now == self.stats and all(st[3] < self.began for st in self.stats)


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class Placer:
    """Adopts files already in place and moves verified downloads into place."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        download_dir: Path,
        notifier: JellyfinNotifier | None = None,
    ) -> None:
        """Place under `download_dir` the downloads of `engine`; tell `notifier` of each."""
        self.engine = engine
        self.store = store
        self.download_dir = download_dir
        self.notifier = notifier
        self._adopted: set[str] = set()  # info hashes seeded from files already in place
        self._names: dict[str, str] = {}  # info hash -> its torrent's name, from the engine
        self._lock = threading.Lock()  # `place` runs on workers, `adopt` on the main loop

    # -- already in place ------------------------------------------------------------
    def in_place(self, item: Item, final: Path) -> list[tuple[str, Path]] | None:
        """The item's files already at `final`, verified, as (path inside the item, file);
        None when they are not all there (then it must be downloaded)."""
        try:
            mode = os.lstat(final).st_mode
        except OSError:
            return None
        if stat.S_ISREG(mode) and item.files is None:
            ok = matches(final, item.size, item.sha256, item.xxh3) is True
            return [("", final)] if ok else None
        return self._folder_in_place(item, final) if stat.S_ISDIR(mode) else None

    def _folder_in_place(self, item: Item, final: Path) -> list[tuple[str, Path]] | None:
        if item.files is not None:
            found = [(e.path, final / e.path) for e in item.files]
            checks = zip(found, item.files, strict=True)
            if not all(matches(path, e.size, e.sha256, e.xxh3) is True for (_, path), e in checks):
                return None
        else:
            records = self._records(item)
            if not records or not all(still_placed(self.download_dir, r) for r in records):
                return None
            found = [(self._inner(item, r.rel), self.download_dir / r.rel) for r in records]
        listed = {self._rel(path) for _, path in found}
        if foreign_content(final, self.download_dir, lambda rel: rel in listed) is not None:
            return None
        return found

    def check_in_place(self, item: Item, final: Path) -> InPlace | None:
        """`in_place`, remembering how each file looked (slow: it hashes; a worker's job)."""
        began = time.time_ns()
        found = self.in_place(item, final)
        if found is None:
            return None
        try:
            stats = tuple(_identity(path) for _, path in found)
        except OSError:
            return None
        return InPlace(tuple(found), stats, began)

    def learn_name(self, ih: str, data: bytes) -> None:
        """Remember the name of torrent `data` (the engine's, with names that pass the path
        rule) for the next adoption of `ih`: a magnet's item names no file, and linking
        its folder under the item's own name (Series, of a torrent named Show) left the
        engine to download it all again."""
        if self.names_problem(data) is None:
            with self._lock:
                self._names[ih] = read_torrent(data).name

    def adopt(self, found: InPlace, final: Path, ih: str, name: str | None) -> bool:
        """Link the verified files found at `final` into the staging folder, unless one
        changed since it was checked; True if done."""
        if not found.unchanged():
            log.info("%s changed while it was checked: downloading it instead", final)
            return False
        with self._lock:
            learned = self._names.pop(ih, None)
        top = name or learned or final.name
        for inner, path in found.files:
            link_for_adoption(self.download_dir, path, ih, f"{top}/{inner}" if inner else top)
        with self._lock:
            self._adopted.add(ih)
        log.info("%s is already in place and verified: adopting it", final)
        return True

    def backfill(self, url: str, item: Item, ih: str, final: Path) -> None:
        """Record the files of an item placed before files were recorded, as they are
        now, when the engine seeds them from their final place (libtorrent checked them)."""
        if self._records(item):
            return
        status = self.engine.status(ih)
        if status is None or os.path.normpath(status.save_path) != os.path.normpath(final.parent):
            return
        try:
            targets = targets_for(self.engine.indexed_files(ih), final)
        except ManifestError:
            return
        sums = {e.path: e.sha256 for e in item.files or ()}
        sums.setdefault("", item.sha256 or "")
        present = [t for t in targets if os.path.lexists(t.path(final))]
        self._record(url, item, final, present, {t.inner: sums.get(t.inner, "") for t in present})
        log.info("recorded the %d files of %s placed earlier", len(present), final)

    # -- a finished download -----------------------------------------------------------
    @staticmethod
    def names_problem(data: bytes) -> Problem | None:
        """A Problem when a torrent's own file names are unsafe (`..`, absolute, links)."""
        try:
            reason = unsafe_names(torrent_files(data))
        except EngineError as exc:
            reason = str(exc)
        return Problem(reason, retry=False) if reason else None

    def place(self, url: str, item: Item, ih: str, final: Path) -> Problem | None:
        """Verify a finished download and rename it into place; None when placed.

        A download that is not the item (or whose names are unsafe) is deleted.
        """
        status = self.engine.status(ih)
        save_path = Path(status.save_path) if status else incomplete_dir(self.download_dir, ih)
        data = self.engine.torrent_bytes(ih)
        try:
            problem = self.names_problem(data) if data is not None else None
            targets = targets_for(self.engine.indexed_files(ih), final)
        except ManifestError as exc:
            problem = Problem(str(exc), retry=False)
        if problem is None:
            verified = self._verify(item, ih, save_path, targets)
            problem = verified if isinstance(verified, Problem) else None
        if problem is not None:
            log.error("%s: %s; deleting the download", item.path, problem)
            self.discard(ih, save_path)
            return problem
        assert isinstance(verified, dict)
        problem = self._clear_way(item, final, save_path, targets, verified)
        if problem is not None:
            return problem
        try:
            self._move(ih, final, targets)
        except MeshmediaError as exc:
            return Problem(f"cannot move into place: {exc}")
        self._record(url, item, final, targets, verified)
        remove_tree(incomplete_dir(self.download_dir, ih))  # leftovers: empty folders, links
        with self._lock:
            self._adopted.discard(ih)
        status = self.engine.status(ih)
        fetched = status.total_download if status else 0
        log.info("placed %s (%d bytes downloaded by this process)", final, fetched)
        if self.notifier is not None:
            self.notifier.notify(final)
        return None

    def discard(self, ih: str, save_path: Path) -> None:
        """Drop a torrent; its files too, but only from the staging folder."""
        staging = incomplete_dir(self.download_dir, ih)
        self.engine.remove(ih, delete_files=os.path.normpath(save_path) == str(staging))
        remove_tree(staging)

    def _verify(
        self, item: Item, ih: str, save_path: Path, targets: list[Target]
    ) -> Problem | dict[str, str]:
        """The SHA-256 of each file by its path inside the item ("" when not known), or
        what is wrong.

        Every byte was checked by libtorrent against the SHA-1 piece hashes of the
        info dict, which the manifest names by its info hash; the whole-file check
        on top is the cheapest the item names: XXH3 (0.2-0.25 s per GiB) against
        what changed after the piece checks (storage, placement, disk), else
        SHA-256 (1.0-1.15 s per GiB, the earlier format's only hash), else the
        SHA-256 is computed for the record. native_notes/hashing.md, "Verifying
        a download".
        """
        problem = _shape_problem(item, targets)
        if problem is not None:
            return problem
        expected = {e.path: e for e in item.files or ()}
        with self._lock:
            adopted = ih in self._adopted
        found: dict[str, str] = {}
        for target in targets:
            want = expected.get(target.inner)
            sha, fast = (want.sha256, want.xxh3) if want else (item.sha256, item.xxh3)
            if adopted and sha:  # verified by check_in_place() before it was linked
                found[target.inner] = sha
                continue
            label = f"{target.inner}: " if target.inner else ""
            if fast:
                got_fast = xxh3_of(save_path / target.name)
                if got_fast != fast.lower():
                    return Problem(f"{label}XXH3 mismatch: expected {fast}, got {got_fast}")
                found[target.inner] = (sha or "").lower()
                continue
            got = file_digests(save_path / target.name)
            if sha and got.sha256 != sha.lower():
                return Problem(f"{label}SHA-256 mismatch: expected {sha}, got {got.sha256}")
            found[target.inner] = got.sha256
        return found

    def _clear_way(
        self,
        item: Item,
        final: Path,
        save_path: Path,
        targets: list[Target],
        verified: dict[str, str],
    ) -> Problem | None:
        """Make sure the final path is free or the item's own; move aside a stranger's
        single file (never overwritten), refuse a folder that is not the item's."""
        try:
            refuse_links(self.download_dir, item.path)
        except ManifestError as exc:
            return Problem(str(exc))
        records = {r.rel: r for r in self._records(item)}
        sources = {self._rel(t.path(final)): save_path / t.name for t in targets}
        sums = {self._rel(t.path(final)): verified[t.inner] for t in targets}

        def ours(rel: str) -> bool:
            path = self.download_dir / rel
            source = sources.get(rel)
            if source is not None and source.exists() and path.samefile(source):
                return True
            if rel in records and still_placed(self.download_dir, records[rel]):
                return True
            return rel in sums and matches(path, None, sums[rel], None) is True

        try:
            mode: int | None = os.lstat(final).st_mode
        except FileNotFoundError:
            mode = None
        if targets[0].inner == "":
            if mode is not None and stat.S_ISDIR(mode):
                return Problem(f"a folder is in the way at {final}")
            if mode is not None and not ours(item.path):
                move_aside(final, self.download_dir)
            return None
        if mode is not None and not stat.S_ISDIR(mode):
            return Problem(f"{final} is in the way: a folder item needs a folder of its own")
        if mode is not None and (stranger := foreign_content(final, self.download_dir, ours)):
            return Problem(
                f"{final} already holds {stranger!r}, which meshmedia did not place: a folder "
                "item is placed only into a folder of its own (move it away, or change the path)"
            )
        return None

    def _move(self, ih: str, final: Path, targets: list[Target]) -> None:
        """Create the folders (no link followed), then rename and move the torrent."""
        folders = {self._rel(t.path(final).parent) for t in targets}
        for folder in sorted(folders):
            make_dirs(self.download_dir, "" if folder == "." else folder)
        renames = {t.index: t.new_name for t in targets if t.name != t.new_name}
        self.engine.relocate(ih, final.parent, renames)

    def _record(
        self, url: str, item: Item, final: Path, targets: list[Target], verified: dict[str, str]
    ) -> None:
        records = [
            record_of(
                url, item.path, self.download_dir, self._rel(t.path(final)), verified[t.inner]
            )
            for t in targets
        ]
        self.store.save_placed_files(records)

    def _records(self, item: Item) -> list[PlacedFile]:
        return self.store.placed_files_at(item.path)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.download_dir).as_posix()

    @staticmethod
    def _inner(item: Item, rel: str) -> str:
        return rel[len(item.path) + 1 :] if rel != item.path else ""


def _shape_problem(item: Item, targets: list[Target]) -> Problem | None:
    """What makes the torrent's files not the item's, before any byte is hashed."""
    total = sum(t.size for t in targets)
    if item.size is not None and total != item.size:
        return Problem(f"size mismatch: expected {item.size} bytes, the torrent has {total}")
    folder = targets[0].inner != ""
    if not folder and item.files is not None:
        return Problem("the item lists files but its torrent is a single file", retry=False)
    if folder and item.files is None and item.sha256:
        reason = "a sha256 cannot describe a folder torrent (per-file hashes go in files)"
        return Problem(reason, retry=False)
    listed = {e.path for e in item.files or ()}
    inners = {t.inner for t in targets}
    if item.files is not None and listed != inners:
        missing, extra = sorted(listed - inners)[:3], sorted(inners - listed)[:3]
        reason = f"the torrent's files are not the item's (missing {missing}, extra {extra})"
        return Problem(reason, retry=False)
    return None
