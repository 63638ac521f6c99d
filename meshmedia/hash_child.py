"""Hashing small files in a child process, ahead of the publisher, during a burst.

In a burst of small files the publishing thread hashes a file, then builds its torrent,
seeds and lists it; hashing was a third of that thread's time, and a thread pool cannot
take it over (the threads trade the GIL: two hashing threads made a 5,000-file burst
slower, 4.5 s to 5.6 s). A child process hashes the next files of the round on the other
core meanwhile. It is only ever a shortcut: the publisher checks every answer as it checks
its own hashing (the file read is the one its walk found, unchanged) and hashes a file
itself whenever the child has no answer, failed or is gone.

The child reads length-prefixed JSON frames on stdin (the files to hash) and answers
one frame per request on stdout; it only ever reads files, never writes one.
"""

from __future__ import annotations

import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from .hashing import FileHashes, IncrementalHasher

log = logging.getLogger(__name__)

LARGEST = 1024 * 1024
"""The child hashes files below this size; a larger file's hashing threads release the
GIL on their large buffers, so the publishing thread hashes it as fast itself."""
CHUNK = 16  # files in one request (fewer when their names are long)
AHEAD = 64  # files asked ahead of the publisher
AHEAD_BYTES = 16 * 1024
"""Request bytes written and not answered: a quarter of a pipe's 64 KiB, so a write to a
child that is stuck on a file never fills the pipe (and is non-blocking all the same)."""
WAIT_SECONDS = 0.02
"""How long the publisher waits for the answer it needs before it hashes the file itself
(a chunk of 16 small files takes the child 3 ms). After one such miss it does not wait
again until the child answers: a child at 0.1 s a file set the publisher's pace."""
DEATHS = 3  # children that exit before their first answer: then the curator hashes alone
ROUND_MIN = 64
"""A round of fewer files is hashed in the publishing thread: the child takes 70 ms to
start (its imports), the time of about 100 small files' whole publishing."""
IDLE_SECONDS = 30.0  # the child exits after this long without a round
ANSWER_SECONDS = 30.0  # a child silent this long while asked is stopped (a hung disk)
DRAIN_SECONDS = 0.5  # at a round's end, for the answers still due
_FRAME = struct.Struct("!I")
_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "HOME", "SYSTEMROOT")


@dataclass(frozen=True)
class Seen:
    """The identity and state of the file the child read (from its fstat after reading)."""

    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int


@dataclass
class Hashed:
    """A file the child hashed, shaped as a finished hasher for SourceHasher."""

    hashes: FileHashes
    final_stat: Seen
    bytes_read: int

    def finish(self) -> FileHashes:
        """The hashes the child computed."""
        return self.hashes

    def close(self) -> None:
        """Nothing to release: the child closed the file."""


class HashChild:
    """The curator's hashing child: started for the first large round, stopped after
    IDLE_SECONDS without one, restarted as needed. Used by one thread at a time."""

    def __init__(self, python: str = sys.executable) -> None:
        self._python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._timer: threading.Timer | None = None
        self._failed = False  # cannot run: the publisher hashes everything itself
        self._deaths = 0  # children in a row that exited before their first answer
        self.up = False  # the running child has answered: it is past its start

    @property
    def pid(self) -> int | None:
        """The running child's process id, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def warm(self, count: int) -> None:
        """`count` files wait for a round: start the child now if that round will use it,
        so that it is up (55 ms) when the round begins."""
        if count < ROUND_MIN or self._failed:
            return
        with self._lock:
            if self._running() is not None and self._timer is None:
                self._arm()

    def lookahead(self, paths: Sequence[str]) -> Lookahead | None:
        """A round's look-ahead over `paths` (in the order the publisher takes them), or
        None when the round is small or no child can run."""
        if len(paths) < ROUND_MIN or self._failed:
            return None
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            proc = self._running()
        return None if proc is None else Lookahead(self, proc, paths)

    def done(self, lookahead: Lookahead) -> None:
        """The round is over: keep the child (if well) for IDLE_SECONDS."""
        with self._lock:
            if lookahead.broken:
                self._stop()
                return
            self._arm()

    def close(self) -> None:
        """Stop the child (it exits on the end of its input)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._stop()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(IDLE_SECONDS, self.close)
        self._timer.daemon = True
        try:
            self._timer.start()
        except RuntimeError:  # no thread to be had: the child stays until the next round
            self._timer = None

    def _running(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self._exited(self._proc)
        self._proc, self.up = None, False
        if self._failed:
            return None
        env = {k: v for k, v in os.environ.items() if k in _ENV}  # no secret of ours
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # -m puts the working directory first on sys.path: "/" (and -P where there is
        # one), not a folder where a share's user could leave an xxhash.py.
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        try:
            self._proc = subprocess.Popen(
                [self._python, *safe_path, "-m", "meshmedia.hash_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,  # unbuffered: select() on it tells the truth
                env=env,
                cwd="/",
                close_fds=True,
            )
        except OSError as exc:
            log.warning("cannot start the hashing child (%s): hashing in the curator", exc)
            self._failed = True
            return None
        assert self._proc.stdin is not None
        os.set_blocking(self._proc.stdin.fileno(), False)  # writes wait in select, bounded
        return self._proc

    def _exited(self, proc: subprocess.Popen[bytes]) -> None:
        """A child is gone: one that never answered counts towards DEATHS."""
        if self.up:
            self._deaths = 0
            return
        self._deaths += 1
        if self._deaths >= DEATHS:
            log.warning(
                "the hashing child exited %d times before answering (status %s): "
                "hashing in the curator",
                self._deaths, proc.returncode,
            )  # fmt: skip
            self._failed = True

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # in uninterruptible I/O: reaped next time
                log.warning("the hashing child %d does not exit", proc.pid)
                return
        self._exited(proc)


class Lookahead:
    """One round's files, hashed by the child ahead of the publisher's thread."""

    def __init__(self, owner: HashChild, proc: subprocess.Popen[bytes], paths: Sequence[str]):
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._owner = owner
        self._to = proc.stdin.fileno()
        self._from = proc.stdout.fileno()
        self._paths = list(paths)
        self._index = {p: k for k, p in reversed(list(enumerate(self._paths)))}
        self._asked = 0  # the next file to ask for
        self._answers: dict[int, Hashed | None] = {}
        self._chunks: list[tuple[int, int, int]] = []  # unanswered: (first, files, bytes)
        self._in_flight = 0  # request bytes in them
        self._heard_at = time.monotonic()  # the child's last answer (or the round's start)
        self._missed = False  # an answer did not come in WAIT_SECONDS: only poll until one does
        self.broken = False
        self.used = 0  # answers taken

    def take(self, path: Path) -> Hashed | None:
        """The child's hashes of `path`, or None: then the caller hashes it itself."""
        if self.broken:
            return None
        k = self._index.get(os.fspath(path))
        if k is None:
            return None
        try:
            self._ask(k)
            while self._chunks and self._chunks[0][0] <= k:
                if not self._await():
                    return None
                self._receive()
        except (OSError, ValueError, EOFError, TypeError) as exc:
            log.warning("the hashing child failed (%s): hashing in the curator", exc)
            self.broken = True
            return None
        for old in [j for j in self._answers if j < k]:
            del self._answers[old]
        answer = self._answers.pop(k, None)
        self.used += answer is not None
        return answer

    def _await(self) -> bool:
        """True when an answer can be read now (after at most WAIT_SECONDS); OSError when
        the child has been silent for ANSWER_SECONDS while asked."""
        wait = WAIT_SECONDS if self._owner.up and not self._missed else 0.0
        if _readable(self._from, wait):
            return True
        self._missed = True
        if time.monotonic() - self._heard_at > ANSWER_SECONDS:
            raise OSError(f"no answer in {ANSWER_SECONDS:.0f} s")
        return False

    def _ask(self, k: int) -> None:
        """Ask for the files from `k` on, up to AHEAD past it and AHEAD_BYTES in flight.
        Until the child has answered once, one request only: a child still starting would
        otherwise hash every file the caller hashes meanwhile before it reached the ones
        still to come."""
        self._asked = max(self._asked, k)  # never a file the caller has taken
        while self._asked < len(self._paths) and self._asked < k + AHEAD:
            if self._chunks and not self._owner.up:
                return
            chunk = self._paths[self._asked : self._asked + CHUNK]
            payload = _encode([LARGEST, chunk])
            while len(chunk) > 1 and len(payload) > AHEAD_BYTES // 2:  # long names
                chunk = chunk[: len(chunk) // 2]
                payload = _encode([LARGEST, chunk])
            if self._chunks and self._in_flight + len(payload) > AHEAD_BYTES:
                return
            _write(self._to, payload)
            self._chunks.append((self._asked, len(chunk), len(payload)))
            self._in_flight += len(payload)
            self._asked += len(chunk)

    def _receive(self) -> None:
        answers = _decode(_read(self._from))
        first, size, sent = self._chunks.pop(0)
        if not isinstance(answers, list) or len(answers) != size:
            raise ValueError("an answer of the wrong shape")
        self._in_flight -= sent
        for offset, answer in enumerate(answers):
            self._answers[first + offset] = _hashed(answer)
        self._heard_at, self._missed = time.monotonic(), False
        self._owner.up = True

    def close(self) -> None:
        """The round is over: read the answers still due (a child that cannot give them in
        DRAIN_SECONDS is stopped, so that the next round starts clean)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            while self._chunks and not self.broken:
                if not _readable(self._from, max(0.0, deadline - time.monotonic())):
                    log.debug("the hashing child is %d requests behind: stopped", len(self._chunks))
                    self.broken = True
                    break
                self._receive()
        except (OSError, ValueError, EOFError, TypeError) as exc:
            log.warning("the hashing child failed (%s)", exc)
            self.broken = True
        log.info("the hashing child hashed %d of a round's %d files", self.used, len(self._paths))
        self._owner.done(self)


def _hashed(answer: Any) -> Hashed | None:
    if answer is None:
        return None
    size, piece, pieces, sha256, xxh3, read, dev, ino, st_size, mtime = answer
    joined = bytes.fromhex(pieces)
    split = tuple(joined[i : i + 20] for i in range(0, len(joined), 20))
    seen = Seen(int(dev), int(ino), int(st_size), int(mtime))
    return Hashed(FileHashes(int(size), int(piece), split, str(sha256), str(xxh3)), seen, int(read))


def _readable(fd: int, timeout: float = 0.0) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


def _encode(value: object) -> bytes:
    # A name that is not UTF-8 travels as the lone surrogates it decoded to (surrogatepass),
    # and other characters as themselves: a JSON escape of each made a name 6 times longer.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


def _decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def _write(fd: int, payload: bytes) -> None:
    """Write a frame to a non-blocking fd, waiting at most ANSWER_SECONDS for room."""
    data = memoryview(_FRAME.pack(len(payload)) + payload)
    deadline = time.monotonic() + ANSWER_SECONDS
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise OSError("the hashing child takes no more requests") from None


def _read(fd: int) -> bytes:
    """One frame from `fd` (the child's answer), each part within ANSWER_SECONDS."""
    (size,) = _FRAME.unpack(_exactly(fd, _FRAME.size))
    return _exactly(fd, size)


def _exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        if not _readable(fd, ANSWER_SECONDS):
            raise OSError(f"an answer cut short for {ANSWER_SECONDS:.0f} s")
        part = os.read(fd, left)
        if not part:
            raise EOFError("the other end of the hashing child's pipe is gone")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


# -- the child ---------------------------------------------------------------


def hash_one(path: str, largest: int) -> list[Any] | None:
    """The answer for one file: its hashes and what its fstat said after the read, or None
    for anything but a regular file below `largest` bytes, or one that could not be read."""
    try:
        st = os.lstat(path)
        if not S_ISREG(st.st_mode) or not 0 < st.st_size < largest:
            return None
        hasher = IncrementalHasher(Path(path))
        hashes = hasher.finish()
        seen = hasher.final_stat
    except Exception:  # the publisher hashes it itself and says why
        return None
    if seen is None:
        return None
    return [
        hashes.size, hashes.piece_size, b"".join(hashes.pieces).hex(), hashes.sha256, hashes.xxh3,
        hasher.bytes_read, seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns,
    ]  # fmt: skip


def main() -> int:
    """Answer requests until stdin ends."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = source.read(_FRAME.size)  # blocks between rounds; b"" once the curator closes
        if len(head) < _FRAME.size:
            return 0
        (size,) = _FRAME.unpack(head)
        request = source.read(size)
        if len(request) < size:
            return 0
        largest, paths = _decode(request)
        answer = _encode([hash_one(p, largest) for p in paths])
        sink.write(_FRAME.pack(len(answer)) + answer)
        sink.flush()


if __name__ == "__main__":
    sys.exit(main())
