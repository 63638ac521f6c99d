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
from pathlib import Path

from .errors import PublishError
from .hashing import FileHashes, IncrementalHasher, piece_size_for
from .store import HashRecord, Store
from .torrents import SourceFile

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

    def sources(self, source: Path) -> list[SourceFile]:
        """The hashed files of a file or a folder (its regular files, dot-files skipped)."""
        if source.is_file():
            size = source.stat().st_size
            if size == 0:
                raise PublishError(f"{source} is empty; there is nothing to publish")
            return [SourceFile(source.name, source, *self._hashes(source, None))]
        if not source.is_dir():
            raise PublishError(f"{source} is not a file or a folder")
        found = sorted(
            p
            for p in source.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(source).parts)
            and p.stat().st_size > 0
        )
        if not found:
            raise PublishError(f"{source} holds no non-empty files; there is nothing to publish")
        piece = piece_size_for(sum(p.stat().st_size for p in found))
        return [
            SourceFile(
                f"{source.name}/{p.relative_to(source).as_posix()}",
                p,
                *self._hashes(p, piece),
            )
            for p in found
        ]

    def _hashes(self, path: Path, piece_size: int | None) -> tuple[FileHashes, bool]:
        """The file's hashes at `piece_size` (None: the rule for its own size), and
        whether they were read just now from a file that did not change meanwhile
        (then the bytes on disk are known to match them)."""
        before = _stat(path)
        piece = piece_size or piece_size_for(before.st_size)
        cached = self._store.cached_hashes(*_key(before), piece)
        if cached is not None:
            log.debug("hash cache hit for %s", path)
            return _from_record(cached), False
        with self._lock:
            follower = self._followers.pop(path, None)
        hasher = follower.stop() if follower else IncrementalHasher(path, piece_size)
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
        after = _stat(path)
        unchanged = _key(after) == _key(before) and hashes.size == after.st_size
        if unchanged:
            self._store.save_hashes(_to_record(after, hashes))
        return hashes, unchanged

    def _finish_quietly(self, follower: _Follower) -> None:
        follower.stop().close()
        follower.join()
        with self._lock:
            self._bytes += follower.hasher.bytes_read


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise PublishError(f"cannot read {path}: {exc.strerror}") from exc


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _from_record(record: HashRecord) -> FileHashes:
    pieces = tuple(record.pieces[i : i + 20] for i in range(0, len(record.pieces), 20))
    return FileHashes(record.size, record.piece_size, pieces, record.sha256, record.xxh3)


def _to_record(st: os.stat_result, hashes: FileHashes) -> HashRecord:
    return HashRecord(
        *_key(st), hashes.piece_size, hashes.sha256, hashes.xxh3, b"".join(hashes.pieces)
    )
