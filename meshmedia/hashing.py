"""One read pass per file: v1 SHA-1 piece hashes, SHA-256 and XXH3-128 of the whole file.

Every consumer of the bytes (the whole-file digests, and one SHA-1 stream per
candidate piece size) runs on its own worker thread; hashlib and xxhash release
the GIL on large buffers, so the two cores hash in parallel while the reader
fills the next buffer. `IncrementalHasher` follows a file that is still being
written: each call to `update()` hashes what is on disk, so `finish()` after
the last write only hashes the tail. See native_notes/hashing.md for the
piece-size rule and the look-ahead that keeps the tail small when a growing
file crosses a piece-size step.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

import xxhash

from .errors import PublishError

log = logging.getLogger(__name__)

MIN_PIECE = 256 * 1024
MAX_PIECE = 16 * 1024 * 1024
TARGET_PIECES = 2048
CHUNK = 8 * 1024 * 1024  # one read; a ring of RING buffers is in flight
RING = 4
LOOKAHEAD = 0.5  # start hashing at the next piece size at this fraction of the step
INLINE = 1024 * 1024
"""A first read this small is hashed on the calling thread: handing 100 KB to two worker
threads (started for it) cost more than hashing it (2.6 ms vs 0.2 ms a file)."""


def piece_size_for(size: int) -> int:
    """The piece size for a torrent of `size` bytes: 1024 to 2048 pieces, 256 KiB..16 MiB.

    The next power of two of size/2048, clamped; it only changes when the size
    doubles, which keeps re-hashing rare while a file grows.
    """
    wanted = max(1, -(-size // TARGET_PIECES))
    piece = 1 << (wanted - 1).bit_length()
    return max(MIN_PIECE, min(MAX_PIECE, piece))


def step_limit(piece_size: int) -> int:
    """The largest size that still gets `piece_size` (sizes above it get a larger piece)."""
    return piece_size * TARGET_PIECES if piece_size < MAX_PIECE else 1 << 62


@dataclass(frozen=True)
class FileHashes:
    """The hashes of one file: v1 piece hashes at `piece_size`, SHA-256 and XXH3-128 (hex)."""

    size: int
    piece_size: int
    pieces: tuple[bytes, ...]
    sha256: str
    xxh3: str


class _Consumer:
    """One ordered consumer of file bytes, fed on its own worker thread."""

    def __init__(self) -> None:
        self.scheduled = 0  # bytes handed to the worker so far
        # Made on the first hand-off: a file of one inline read never uses it, and two
        # executors made for each of 5,000 small files were 4.5% of a burst's GIL time.
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, data: memoryview) -> Future[None]:
        """Feed `data` on this consumer's worker thread, after what was handed before."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash")
        return self._pool.submit(self.feed, data)

    def feed(self, data: memoryview) -> None:
        raise NotImplementedError

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait)


class _WholeFile(_Consumer):
    def __init__(self) -> None:
        super().__init__()
        self.sha256 = hashlib.sha256()
        self.xxh3 = xxhash.xxh3_128()

    def feed(self, data: memoryview) -> None:
        self.sha256.update(data)
        self.xxh3.update(data)


class _Pieces(_Consumer):
    """SHA-1 of consecutive pieces of one size."""

    def __init__(self, piece_size: int) -> None:
        super().__init__()
        self.piece_size = piece_size
        self.pieces: list[bytes] = []
        self.current = hashlib.sha1()  # noqa: S324 - BitTorrent v1 pieces are SHA-1
        self.filled = 0

    def feed(self, data: memoryview) -> None:
        while data:
            take = min(len(data), self.piece_size - self.filled)
            self.current.update(data[:take])
            self.filled += take
            data = data[take:]
            if self.filled == self.piece_size:
                self.pieces.append(self.current.digest())
                self.current = hashlib.sha1()  # noqa: S324
                self.filled = 0

    def digests(self) -> tuple[bytes, ...]:
        """All piece hashes, the partial last piece included."""
        tail = (self.current.digest(),) if self.filled else ()
        return (*self.pieces, *tail)


def open_regular(path: Path) -> int:
    """A read-only fd of the regular file at `path`; PublishError for anything else.

    A file swapped for a symbolic link after it was checked is never read (O_NOFOLLOW);
    one swapped for a FIFO is opened at once and refused (O_NONBLOCK), where a plain open
    held the publishing thread until something wrote to the FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PublishError(f"{path} is a symbolic link; not read") from None
        raise PublishError(f"cannot read {path}: {exc.strerror}") from exc
    if not S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PublishError(f"{path} is not a regular file; not read")
    return fd


class IncrementalHasher:
    """Hash a file in one pass, following it while it grows.

    `update()` hashes every byte on disk now (call it as often as you like, from
    any thread); `finish()` hashes the rest and returns FileHashes for the size
    the file has then. Writes are assumed to be appends: a truncation or a
    replaced file starts over, an in-place overwrite of hashed bytes is not seen.
    Give `piece_size` to fix it; otherwise it follows `piece_size_for(size)`.
    """

    def __init__(
        self, path: Path, piece_size: int | None = None, *, lookahead: float | None = None
    ) -> None:
        self.path = Path(path)
        self.bytes_read = 0
        self._fixed = piece_size
        self._lookahead = LOOKAHEAD if lookahead is None else lookahead
        self._lock = threading.Lock()
        self._fd = -1
        self._whole: _WholeFile | None = None
        self._streams: dict[int, _Pieces] = {}
        self._ring: list[bytearray] = []  # allocated while the file is open
        self._inflight: list[list[Future[None]]] = [[] for _ in range(RING)]
        self._slot = 0
        self._finishing = False
        self.final_stat: os.stat_result | None = None  # of the file finish() read

    # -- public --------------------------------------------------------------
    @property
    def hashed(self) -> int:
        """Bytes publish can reuse: read for the whole-file digests and for the SHA-1
        pieces at the current piece size (handed to the hashing threads)."""
        whole = self._whole
        if whole is None:
            return 0
        primary = self._streams.get(self._fixed or piece_size_for(whole.scheduled))
        return min(whole.scheduled, primary.scheduled) if primary else 0

    def update(self) -> int:
        """Hash what is on disk now, until caught up with the file's size; return that size."""
        with self._lock:
            if self._finishing:
                return self.hashed
            return self._catch_up(final=False)

    def finish(self) -> FileHashes:
        """Hash the rest of the (now complete) file and return its hashes; then close."""
        self._finishing = True  # an update() running on another thread yields the lock
        with self._lock:
            try:
                size = self._catch_up(final=True)
                self._drain()
                self.final_stat = os.fstat(self._fd)
                if self.final_stat.st_size != size:
                    raise PublishError(f"{self.path} changed while it was hashed")
                return self._result(size)
            finally:
                self._close()

    def close(self) -> None:
        """Stop following and release the file and the worker threads."""
        with self._lock:
            self._close()

    def __enter__(self) -> IncrementalHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------
    def _open(self) -> int:
        """The size on disk; (re)opens the file and starts over when it was replaced."""
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            raise PublishError(f"cannot read {self.path}: {exc.strerror}") from exc
        if self._fd >= 0:
            old = os.fstat(self._fd)
            seen = self._whole.scheduled if self._whole else 0
            if (old.st_dev, old.st_ino) != (st.st_dev, st.st_ino) or st.st_size < seen:
                log.info("%s was replaced or truncated; hashing it again", self.path)
                self._close()
        if self._fd < 0:
            self._fd = open_regular(self.path)
            self._whole = _WholeFile()
            self._streams = {}
            self._ring = [bytearray() for _ in range(RING)]  # grown to the reads made
        return int(os.fstat(self._fd).st_size)

    def _plan(self, size: int, final: bool) -> _Pieces:
        """Keep the SHA-1 streams the size calls for: its piece size and maybe the next one."""
        piece = self._fixed or piece_size_for(size)
        wanted = {piece}
        limit = step_limit(piece)
        if not final and not self._fixed and size > self._lookahead * limit and piece < MAX_PIECE:
            wanted.add(piece * 2)
        for old in set(self._streams) - wanted:
            self._streams.pop(old).close(wait=False)
        for new in wanted - set(self._streams):
            self._streams[new] = _Pieces(new)
        return self._streams[piece]

    def _catch_up(self, final: bool) -> int:
        while True:
            size = self._open()
            primary = self._plan(size, final)
            assert self._whole is not None
            everyone: list[_Consumer] = [self._whole, *self._streams.values()]
            self._advance([self._whole, primary], everyone, size, budget=1 << 62)
            if final:
                return size
            if self._finishing:
                return self.hashed
            ahead = [s for s in self._streams.values() if s.scheduled < size]
            if ahead:  # a look-ahead stream catches up, a few chunks at a time
                self._advance(ahead, everyone, size, budget=8)
            elif self._open() == size:
                return size

    def _advance(
        self, leaders: Sequence[_Consumer], everyone: Sequence[_Consumer], size: int, budget: int
    ) -> None:
        """Read chunks from the lowest offset of `leaders` up to `size`.

        Every consumer at the same offset shares the read; a chunk stops where a
        consumer further ahead waits, so that one joins the next read.
        """
        while budget > 0:
            start = min(c.scheduled for c in leaders)
            if start >= size:
                return
            later = [c.scheduled for c in everyone if c.scheduled > start]
            end = min([start + CHUNK, size, *later])
            group = [c for c in everyone if c.scheduled == start]
            self._read_and_feed(start, end, group)
            budget -= 1

    def _read_and_feed(self, start: int, end: int, group: list[_Consumer]) -> None:
        slot = self._slot
        self._slot = (slot + 1) % RING
        for fut in self._inflight[slot]:
            fut.result()
        if len(self._ring[slot]) < end - start:
            # A zeroed 4 x 8 MiB ring cost a 100 KB file 14 ms, ten times its hashing
            # (1,000 small files: 14.6 s); each buffer now grows to the largest read.
            self._ring[slot] = bytearray(min(CHUNK, max(end - start, 2 * len(self._ring[slot]))))
        view = memoryview(self._ring[slot])[: end - start]
        got = os.preadv(self._fd, [view], start)
        if got != end - start:
            raise PublishError(f"{self.path} shrank while it was hashed")
        self.bytes_read += got
        if start == 0 and got <= INLINE:  # nothing fed before, so the order holds
            for c in group:
                c.feed(view)
        else:
            self._inflight[slot] = [c.submit(view) for c in group]
        for c in group:
            c.scheduled = end

    def _drain(self) -> None:
        for slot in self._inflight:
            for fut in slot:
                fut.result()
            slot.clear()

    def _result(self, size: int) -> FileHashes:
        assert self._whole is not None
        piece = self._fixed or piece_size_for(size)
        return FileHashes(
            size=size,
            piece_size=piece,
            pieces=self._streams[piece].digests(),
            sha256=self._whole.sha256.hexdigest(),
            xxh3=self._whole.xxh3.hexdigest(),
        )

    def _close(self) -> None:
        for slot in self._inflight:
            for fut in slot:
                fut.cancel()
            slot.clear()
        consumers = [*self._streams.values(), *([self._whole] if self._whole else [])]
        for c in consumers:
            c.close()
        self._streams, self._whole, self._ring = {}, None, []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FirstPass:
    """The hashes a torrent and a first manifest version need, of a complete file: SHA-1
    pieces on two threads and XXH3-128 on the reading one; no SHA-256 (`sha256` is "").

    One SHA-1 stream was the long pole of the one-pass `IncrementalHasher` (1.2 s per
    GiB, SHA-256 1.15 s beside it); two streams over alternate chunks 0.68 s
    (benchmarks/curator_hash.py). The SHA-256 follows on a background pass
    (curator/digests.py). Same interface as IncrementalHasher's finish().
    """

    def __init__(self, path: Path, piece_size: int | None = None) -> None:
        self.path = Path(path)
        self.bytes_read = 0
        self._fixed = piece_size
        self.final_stat: os.stat_result | None = None

    def finish(self) -> FileHashes:
        """Hash the whole file once and return its hashes (sha256 "")."""
        fd = open_regular(self.path)
        try:
            return self._hash(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing is held between calls (for SourceHasher, like IncrementalHasher)."""

    def _hash(self, fd: int) -> FileHashes:
        size = os.fstat(fd).st_size
        piece = self._fixed or piece_size_for(size)
        span = piece * max(1, CHUNK // piece)  # a read holds whole pieces
        fast = xxhash.xxh3_128()
        chunks = self._pieces(fd, size, piece, span, fast)
        self.final_stat = os.fstat(fd)
        if self.final_stat.st_size != size:
            raise PublishError(f"{self.path} changed while it was hashed")
        pieces = tuple(d for chunk in chunks for d in chunk)
        return FileHashes(size, piece, pieces, "", fast.hexdigest())

    def _pieces(
        self, fd: int, size: int, piece: int, span: int, fast: xxhash.xxh3_128
    ) -> list[tuple[bytes, ...]]:
        """The piece digests of each chunk of `span` bytes; XXH3 fed in order meanwhile.

        Each worker reads its own chunk (the copy from the page cache runs on both
        cores) and hashes its pieces; this thread feeds each chunk to XXH3 in order
        once it is read, and hands a buffer on once both are done with it.
        """
        count = -(-size // span)
        digests: list[tuple[bytes, ...]] = [()] * count
        ring = [bytearray(min(span, size)) for _ in range(min(RING, count))]
        reads: list[Future[memoryview]] = [Future() for _ in range(count)]

        def read(index: int) -> memoryview:
            start = index * span
            view = memoryview(ring[index % len(ring)])[: min(span, size - start)]
            if os.preadv(fd, [view], start) != len(view):
                raise PublishError(f"{self.path} shrank while it was hashed")
            return view

        def work(index: int) -> None:
            try:
                view = read(index)
            except BaseException as exc:
                reads[index].set_exception(exc)
                raise
            reads[index].set_result(view)
            digests[index] = tuple(
                hashlib.sha1(view[at : at + piece]).digest()  # noqa: S324 - v1 pieces
                for at in range(0, len(view), piece)
            )

        if count == 1:  # two threads started for one chunk cost more than they save
            work(0)
            fast.update(reads[0].result())
            self.bytes_read += size
            return digests
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sha1") as pool:
            tasks = [pool.submit(work, index) for index in range(len(ring))]
            for index in range(count):
                view = reads[index].result()
                fast.update(view)
                self.bytes_read += len(view)
                tasks[index].result()  # its pieces are hashed: the buffer is free again
                if index + len(ring) < count:
                    tasks.append(pool.submit(work, index + len(ring)))
        return digests


def hash_file(path: Path, piece_size: int | None = None) -> FileHashes:
    """Hash a complete file in one pass (piece size from `piece_size_for` unless given)."""
    return IncrementalHasher(path, piece_size).finish()


@dataclass(frozen=True)
class Digests:
    """SHA-256 and XXH3-128 (hex) of one whole file."""

    sha256: str
    xxh3: str


BLOCK = 1 << 20  # a verification read (one thread: files the client checks one by one)


def file_digests(path: Path) -> Digests:
    """SHA-256 and XXH3-128 of a whole file in one read pass (a client's verification)."""
    sha, fast = hashlib.sha256(), xxhash.xxh3_128()
    with path.open("rb") as src:
        while block := src.read(BLOCK):
            sha.update(block)
            fast.update(block)
    return Digests(sha.hexdigest(), fast.hexdigest())


def new_xxh3() -> Any:
    """A fresh XXH3-128 hasher (`update`, `hexdigest`): the one place xxhash is imported."""
    return xxhash.xxh3_128()


def xxh3_of(path: Path) -> str:
    """XXH3-128 of a whole file (the fast first check)."""
    fast = xxhash.xxh3_128()
    with path.open("rb") as src:
        while block := src.read(BLOCK):
            fast.update(block)
    return fast.hexdigest()
