"""The hashing child (issue 15): small files of a large round are hashed by a child
process ahead of the publisher; every answer is checked, and anything the child cannot
answer (or a child that is gone) is hashed by the caller."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from meshmedia import hash_child
from meshmedia.curator.sources import SourceHasher
from meshmedia.errors import PublishError
from meshmedia.hash_child import LARGEST, ROUND_MIN, HashChild, Hashed, Seen
from meshmedia.hashing import IncrementalHasher, open_regular
from meshmedia.store import Store
from tests.helpers import random_file


def _files(folder: Path, count: int) -> list[Path]:
    return [random_file(folder / f"{k:03d}.bin", 1 + 9_973 * k % 900_000) for k in range(count)]


def _take_all(child: HashChild, paths: list[Path]) -> list[Hashed | None]:
    """Take each answer as the publisher does: hashing a file itself when there is none."""
    ahead = child.lookahead([os.fspath(p) for p in paths])
    assert ahead is not None
    answers = []
    try:
        for path in paths:
            answers.append(ahead.take(path))
            if answers[-1] is None:
                with contextlib.suppress(PublishError):
                    IncrementalHasher(path).finish()
        return answers
    finally:
        ahead.close()


def _wait_for_answers(child: HashChild, paths: list[Path]) -> None:
    """Run one round so the child is up (its first answers may come after the first takes)."""
    _take_all(child, paths)


def test_the_child_hashes_each_file_as_the_publisher_would(tmp_path: Path) -> None:
    paths = _files(tmp_path, ROUND_MIN + 16)
    odd = tmp_path / os.fsdecode(b"caf\xe9.bin")  # not UTF-8: travels as surrogates
    random_file(odd, 5_000)
    paths.append(odd)
    child = HashChild()
    try:
        _wait_for_answers(child, paths)
        answers = _take_all(child, paths)
    finally:
        child.close()
    assert all(a is not None for a in answers)
    for path, answer in zip(paths, answers, strict=True):
        assert answer is not None
        assert answer.finish() == IncrementalHasher(path).finish()
        st = os.stat(path)
        assert answer.final_stat == Seen(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        assert answer.bytes_read == st.st_size


def test_the_child_answers_nothing_for_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    paths = _files(tmp_path / "plain", ROUND_MIN)
    (tmp_path / "link").symlink_to(paths[0])
    os.mkfifo(tmp_path / "fifo")  # a plain open() of it would wait for a writer forever
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty").touch()
    random_file(tmp_path / "large", LARGEST)
    odd = [tmp_path / n for n in ("link", "fifo", "folder", "empty", "large", "missing")]
    child = HashChild()
    try:
        _wait_for_answers(child, paths)
        answers = _take_all(child, [*paths, *odd])
    finally:
        child.close()
    assert all(a is not None for a in answers[: len(paths)])
    assert answers[len(paths) :] == [None] * len(odd)


def test_a_fifo_swapped_in_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    started = time.monotonic()
    with pytest.raises(PublishError, match="not a regular file"):
        open_regular(tmp_path / "fifo")
    with pytest.raises(PublishError, match="not a regular file"):
        IncrementalHasher(tmp_path / "fifo").finish()
    assert time.monotonic() - started < 5


def test_a_small_round_starts_no_child(tmp_path: Path) -> None:
    paths = _files(tmp_path, ROUND_MIN - 1)
    child = HashChild()
    assert child.lookahead([os.fspath(p) for p in paths]) is None
    assert child.pid is None


def test_a_child_killed_mid_round_leaves_the_rest_to_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _files(tmp_path, 4 * ROUND_MIN)
    child = HashChild()
    try:
        _wait_for_answers(child, paths[:ROUND_MIN])
        first = child.pid
        assert first is not None
        ahead = child.lookahead([os.fspath(p) for p in paths])
        assert ahead is not None
        assert ahead.take(paths[0]) is not None
        os.kill(first, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="meshmedia.hash_child"):
            answers = [ahead.take(p) for p in paths[1:]]
            ahead.close()
        assert ahead.broken
        assert answers[-1] is None  # asked after the kill: nobody answered it
        assert "the hashing child failed" in caplog.text
        # the next round has a child again
        answers = _take_all(child, paths)
        assert child.pid not in (None, first)
        assert any(a is not None for a in answers)
    finally:
        child.close()
    assert child.pid is None


def test_no_child_can_start_so_the_caller_hashes_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _files(tmp_path, ROUND_MIN)
    child = HashChild(python=str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.WARNING, logger="meshmedia.hash_child"):
        assert child.lookahead([os.fspath(p) for p in paths]) is None
    assert "cannot start the hashing child" in caplog.text
    assert child.lookahead([os.fspath(p) for p in paths]) is None  # not tried again


def test_an_idle_child_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hash_child, "IDLE_SECONDS", 0.2)
    paths = _files(tmp_path, ROUND_MIN)
    child = HashChild()
    _take_all(child, paths)
    pid = child.pid
    assert pid is not None
    deadline = time.monotonic() + 10
    while child.pid is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.pid is None
    while time.monotonic() < deadline:  # reaped, not left a zombie
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the idle child {pid} was not reaped")


def test_the_childs_answer_for_another_file_is_refused(tmp_path: Path) -> None:
    """The answer must be for the file the caller's walk found (its dev and inode): one
    for a file swapped in meanwhile is refused, as the caller's own hashing would be."""
    path = random_file(tmp_path / "a.bin", 10_000)
    st = os.lstat(path)
    hashes = IncrementalHasher(path).finish()
    other = Hashed(hashes, Seen(st.st_dev, st.st_ino + 1, st.st_size, st.st_mtime_ns), 10_000)
    with Store.in_state_dir(tmp_path / "state") as store:
        hasher = SourceHasher(store)
        with pytest.raises(PublishError, match="replaced"):
            hasher.file_sources(path, st, other)
        same = Hashed(hashes, Seen(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), 10_000)
        (source,) = hasher.file_sources(path, st, same)
        assert source.hashes == hashes
        assert source.fresh
        assert store.cached_hashes(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                   hashes.piece_size) is not None  # fmt: skip
        # a file that changed between the walk and the child's read is not taken as fresh
        later = Hashed(hashes, Seen(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns + 1), 1)
        (changed,) = hasher.file_sources(path, st, later)
        assert not changed.fresh
        assert hasher.bytes_hashed == 20_001  # the refused answer was read too
