"""The hashes of the files to publish: from the hash cache, a follower, or one read pass.

`SourceHasher` keeps one `IncrementalHasher` per growing file (`follow`), each
on its own background thread, and hands it to `publish` once the file is
complete, so only the tail is hashed then. Finished hashes go to the hash cache
keyed by (dev, inode, size, mtime_ns, piece_size): a restart, a rename or an
unchanged file costs no read at all, and a changed size or mtime always misses.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISLNK, S_ISREG

from meshmedia.engine import SourceFile
from meshmedia.errors import PublishError
from meshmedia.hash_child import Hashed, Seen
from meshmedia.hashing import FileHashes, FirstPass, IncrementalHasher, piece_size_for
from meshmedia.store import HashRecord, Store

log = logging.getLogger(__name__)


class _Follower:
    """One growing file, hashed on a background thread whenever it is poked."""

    def __init__(self, path: Path) -> None:
        self.hasher = IncrementalHasher(path)
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name=f"follow-{path.name[:20]}", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> IncrementalHasher:
        """Stop the thread (an update under way yields at once) and return the hasher."""
        self._stopped = True
        self._wake.set()
        return self.hasher

    def join(self) -> None:
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopped:
                return
            self._wake.clear()
            try:
                self.hasher.update()
            except Exception as exc:  # the file may vanish; publish will tell
                log.warning("cannot follow %s: %s", self.hasher.path, exc)


class SourceHasher:
    """Hashes for the publisher: cache first, then a follower's state, then a full pass."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._followers: dict[Path, _Follower] = {}
        self._bytes = 0
        self._local = threading.local()  # .later: hash cache rows this thread saves later

    @property
    def bytes_hashed(self) -> int:
        """Bytes read for hashing so far (finished and abandoned hashers)."""
        with self._lock:
            return self._bytes

    def follow(self, path: Path) -> None:
        """Hash what is on disk of a growing file, in the background; returns at once."""
        with self._lock:
            follower = self._followers.get(path)
            if follower is None:
                follower = self._followers[path] = _Follower(path)
        follower.poke()

    def drop(self, path: Path) -> None:
        """Forget the followers of `path` and of everything under it."""
        with self._lock:
            gone = [p for p in self._followers if p == path or p.is_relative_to(path)]
            followers = [self._followers.pop(p) for p in gone]
        for follower in followers:
            self._finish_quietly(follower)

    @contextmanager
    def saving_together(self) -> Iterator[None]:
        """Within, this thread's hash cache rows wait for save_waiting() (or the end) and
        are written in one transaction: one commit for each of 5,000 new files cost
        0.15-0.3 ms each (the rows only spare hashing again; none is needed to publish)."""
        self._local.later = []
        try:
            yield
        finally:
            self.save_waiting()
            self._local.later = None

    def save_waiting(self) -> None:
        """Write the hash cache rows this thread holds back (saving_together)."""
        records: list[HashRecord] | None = getattr(self._local, "later", None)
        if records:
            self._store.save_many_hashes(records)
            self._local.later = []

    def pending(self) -> list[tuple[Path, int]]:
        """(path, bytes hashed so far) of every followed file."""
        with self._lock:
            return [(p, f.hasher.hashed) for p, f in sorted(self._followers.items())]

    def close(self) -> None:
        """Stop every follower."""
        with self._lock:
            followers = list(self._followers.values())
            self._followers.clear()
        for follower in followers:
            self._finish_quietly(follower)

    def sources(
        self, source: Path, root: Path | None = None, *, first_pass: bool = False
    ) -> list[SourceFile]:
        """The hashed regular files of a file or a folder (dot-files skipped).

        `first_pass`: a single file neither cached nor followed gets only its pieces
        and XXH3 (`FirstPass`; its `sha256` is "", to come from curator/digests.py).

        `source` is reached from `root` (its share folder; default its parent)
        without following a symbolic link; links and names that are not UTF-8
        inside a folder are skipped with a warning naming them, and a file
        swapped for another between the walk and the read is refused.
        """
        folder, found = regular_files(source, root or source.parent)
        if not folder:
            ((name, st),) = found
            if st.st_size == 0:
                raise PublishError(f"{source} is empty; there is nothing to publish")
            return [SourceFile(name, source, *self._hashes(source, None, st, first_pass))]
        found = [(name, st) for name, st in found if st.st_size > 0]
        if not found:
            raise PublishError(f"{source} holds no non-empty files; there is nothing to publish")
        piece = piece_size_for(sum(st.st_size for _, st in found))
        return [
            SourceFile(name, source.parent / name, *self._hashes(source.parent / name, piece, st))
            for name, st in found
        ]

    def file_sources(
        self, path: Path, st: os.stat_result, ready: Hashed | None = None
    ) -> list[SourceFile]:
        """sources() of one regular file the caller reached as regular_files() does and
        saw as `st` (its lstat): the walk is not made again. `ready`: its hashes from the
        hashing child, checked as this thread's own would be."""
        return [SourceFile(path.name, path, *self._hashes(path, None, st, ready=ready))]

    def _hashes(
        self,
        path: Path,
        piece_size: int | None,
        before: os.stat_result,
        first: bool = False,
        ready: Hashed | None = None,
    ) -> tuple[FileHashes, bool]:
        """The hashes at `piece_size` (None: the rule for its own size) of the file the
        walk saw as `before`, and whether they were read just now from a file that did
        not change meanwhile (then the bytes on disk are known to match them)."""
        piece = piece_size or piece_size_for(before.st_size)
        if ready is not None and _key(ready.final_stat) != _key(before):
            # The child read ahead: the file changed or was replaced since. Its answer is
            # for another version; this thread hashes the one the walk found.
            ready = None
        # The child's hashes of this very version are as good as the cache's.
        cached = None if ready else self._store.cached_hashes(*_key(before), piece)
        if cached is not None:
            log.debug("hash cache hit for %s", path)
            return _from_record(cached), False
        with self._lock:
            follower = self._followers.pop(path, None)
        hasher: IncrementalHasher | FirstPass | Hashed
        if follower is not None:
            hasher = follower.stop()
        elif ready is not None:
            hasher = ready
        else:
            hasher = FirstPass(path) if first else IncrementalHasher(path, piece_size)
        if piece_size is not None and follower is not None:
            self._finish_quietly(follower)  # followed at another piece size: start afresh
            hasher = IncrementalHasher(path, piece_size)
        try:
            hashes = hasher.finish()
        finally:
            if follower is not None:
                follower.join()
            with self._lock:
                self._bytes += hasher.bytes_read
        after = hasher.final_stat
        if after is None or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            # A folder on the way was swapped for a link: what was read is another file.
            raise PublishError(f"{path} was replaced while it was published; not published")
        unchanged = _key(after) == _key(before) and hashes.size == after.st_size
        # A first pass's row is saved once its SHA-256 is known (curator/digests.py); in
        # a batch (saving_together) the rows are written in one transaction at its end.
        later: list[HashRecord] | None = getattr(self._local, "later", None)
        if unchanged and hashes.sha256 and later is not None:
            later.append(_to_record(after, hashes))
        elif unchanged and hashes.sha256:
            self._store.save_hashes(_to_record(after, hashes))
        return hashes, unchanged

    def _finish_quietly(self, follower: _Follower) -> None:
        follower.stop().close()
        follower.join()
        with self._lock:
            self._bytes += follower.hasher.bytes_read


SYMLINK_RULE = "meshmedia publishes regular files only and never follows a symbolic link"


def symlink_on(path: Path, roots: Iterable[Path]) -> Path | None:
    """The first symbolic link on `path` below the root (a share folder, as configured
    or resolved) it lies in, or None. Links above the share folder are the user's own."""
    for root in roots:
        if path.is_relative_to(root):
            current = root
            for part in path.relative_to(root).parts:
                current = current / part
                if current.is_symlink():
                    return current
            return None
    return None


def not_utf8(name: str) -> bool:
    """True for a name decoded from bytes that are not UTF-8 (lone surrogates in it)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def regular_files(
    source: Path, root: Path, root_fd: int | None = None
) -> tuple[bool, list[tuple[str, os.stat_result]]]:
    """(is a folder, [(name relative to source's parent, lstat)]) of the regular files
    at `source`, reached from `root` (or `root_fd`, an fd of it) with no symbolic link
    followed on the way (each folder is opened relative to the one before, O_NOFOLLOW)."""
    parts = source.relative_to(root).parts
    if not parts:
        raise PublishError(f"{source} is a share folder itself; publish a file or folder in it")
    parent = _open_folder(root, parts[:-1], root_fd)
    try:
        st = _lstat(source, parts[-1], parent)
        if S_ISREG(st.st_mode):
            return False, [(source.name, st)]
        if not S_ISDIR(st.st_mode):
            raise PublishError(f"{source} is not a file or a folder")
        folder = _step(parent, source, parts[-1])
    finally:
        os.close(parent)
    try:
        return True, sorted(_walk(source, folder), key=lambda f: source.parent / f[0])
    finally:
        os.close(folder)


def _lstat(path: Path, name: str, dir_fd: int) -> os.stat_result:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise PublishError(f"cannot read {path}: {exc.strerror}") from exc
    if S_ISLNK(st.st_mode):
        raise PublishError(f"{path} is a symbolic link; {SYMLINK_RULE}")
    if not_utf8(name):
        raise PublishError(f"{named(path)}: {NOT_UTF8}")
    return st


def _open_folder(root: Path, parts: Sequence[str], root_fd: int | None = None) -> int:
    """An fd of root/parts, each folder opened below the last without following a link."""
    try:
        fd = os.dup(root_fd) if root_fd is not None else os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise PublishError(f"cannot read {root}: {exc.strerror}") from exc
    try:
        for index, part in enumerate(parts):
            step = _step(fd, root.joinpath(*parts[: index + 1]), part)
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(fd: int, path: Path, name: str) -> int:
    """The folder `name` below the open folder `fd` (`path`), refused when it is a link."""
    _lstat(path, name, fd)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as exc:  # swapped for a link or a file since the lstat
        raise PublishError(f"cannot read {path}: {exc.strerror}") from exc


def _walk(source: Path, folder_fd: int) -> Iterator[tuple[str, os.stat_result]]:
    """The regular files under an open folder; links and odd names skipped with a warning."""
    for folder, dirs, files, fd in os.fwalk(".", dir_fd=folder_fd, follow_symlinks=False):
        here = PurePosixPath(source.name) / folder
        keep = []
        for name in sorted(dirs + files):
            if name.startswith("."):
                continue
            path = source.parent / here / name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            if S_ISLNK(st.st_mode):
                log.warning("skipping symbolic link %s: %s", path, SYMLINK_RULE)
            elif not_utf8(name):
                log.warning("skipping %s: %s", named(path), NOT_UTF8)
            elif S_ISDIR(st.st_mode):
                keep.append(name)
            elif S_ISREG(st.st_mode):
                yield (here / name).as_posix(), st
            else:
                log.warning("skipping %s: not a regular file", path)
        dirs[:] = keep  # fwalk descends into these only


NOT_UTF8 = "its name is not valid UTF-8, so no client could store it; rename it (e.g. convmv)"


def named(path: Path) -> str:
    """A path whose name may not be UTF-8, as its exact bytes."""
    return repr(os.fsencode(path))


def _key(st: os.stat_result | Seen) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _from_record(record: HashRecord) -> FileHashes:
    pieces = tuple(record.pieces[i : i + 20] for i in range(0, len(record.pieces), 20))
    return FileHashes(record.size, record.piece_size, pieces, record.sha256, record.xxh3)


def _to_record(st: os.stat_result | Seen, hashes: FileHashes) -> HashRecord:
    return HashRecord(
        *_key(st), hashes.piece_size, hashes.sha256, hashes.xxh3, b"".join(hashes.pieces)
    )
