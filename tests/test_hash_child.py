"""The hashing child (issue 15): small files of a large round are hashed by a child
process ahead of the publisher; every answer is checked, and anything the child cannot
answer (or a child that is gone) is hashed by the caller."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
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


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller waits for every answer (these tests check answers, not pacing)."""
    monkeypatch.setattr(hash_child, "WAIT_SECONDS", 30.0)


@pytest.mark.usefixtures("patient")
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


@pytest.mark.usefixtures("patient")
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


def test_an_answer_for_another_version_of_the_file_is_not_used(tmp_path: Path) -> None:
    """The child reads ahead: an answer whose file (dev, inode) or version (size, mtime)
    is not what the caller's walk found is dropped, and the caller hashes the file as it
    is (review of 63649ce: a file appended to was listed with its old digest, one renamed
    over was refused)."""
    path = random_file(tmp_path / "a.bin", 10_000)
    old = IncrementalHasher(path).finish()
    with path.open("ab") as out:
        out.write(b"more")
    st = os.lstat(path)
    now = IncrementalHasher(path).finish()
    stale = [
        Seen(st.st_dev, st.st_ino + 1, st.st_size, st.st_mtime_ns),  # another file
        Seen(st.st_dev, st.st_ino, 10_000, st.st_mtime_ns - 1),  # an older version
    ]
    with Store.in_state_dir(tmp_path / "state") as store:
        hasher = SourceHasher(store)
        (first,) = hasher.file_sources(path, st, Hashed(old, stale[0], 10_000))
        assert first.hashes == now
        assert first.fresh  # read here, just now
        (second,) = hasher.file_sources(path, st, Hashed(old, stale[1], 10_000))
        assert second.hashes == now  # from the cache row the first one saved
        same = Hashed(now, Seen(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), 10_004)
        (source,) = hasher.file_sources(path, st, same)
        assert source.hashes == now
        assert source.fresh
        assert hasher.bytes_hashed == 2 * 10_004  # read here once, by the child once
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, now.piece_size)
        assert store.cached_hashes(*key) is not None


def _slow_python(tmp_path: Path, stuck_after: int, seconds: float) -> str:
    """A "python" for HashChild whose child sleeps `seconds` on each file from the
    `stuck_after`-th on (the real child otherwise)."""
    script = tmp_path / "slow-python"
    code = (
        "import time, meshmedia.hash_child as h; o = h.hash_one; n = [0]\n"
        "def slow(p, l):\n"
        "    n[0] += 1\n"
        f"    if n[0] > {stuck_after}: time.sleep({seconds})\n"
        "    return o(p, l)\n"
        "h.hash_one = slow; h.main()\n"
    )
    (tmp_path / "slow.py").write_text(code)
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'slow.py'}\n")
    script.chmod(0o755)
    return str(script)


def test_a_slow_child_does_not_set_the_callers_pace(tmp_path: Path) -> None:
    """A child at 0.1 s a file: the caller waits WAIT_SECONDS once, then hashes what has
    no answer yet itself (160 files took 16 s when it waited for each answer)."""
    paths = _files(tmp_path / "f", 160)
    child = HashChild(python=_slow_python(tmp_path, 16, 0.1))  # its first request fast
    try:
        _take_all(child, paths[:ROUND_MIN])
        assert child.up
        started = time.monotonic()
        answers = _take_all(child, paths)
        took = time.monotonic() - started
    finally:
        child.close()
    assert took < 8, took
    assert sum(a is not None for a in answers) < 80


def test_a_stuck_child_with_long_names_never_blocks_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names of many-byte characters, a child that answers once and then hangs on a file:
    requests in flight stay under AHEAD_BYTES (bytes, not characters) and writes never
    block, so the caller goes on; after ANSWER_SECONDS of silence the child is stopped
    (review of 63649ce: 63-emoji folder names blocked the publisher in write())."""
    monkeypatch.setattr(hash_child, "ANSWER_SECONDS", 2.0)
    folder = tmp_path.joinpath(*[("\U0001f600" * 60)] * 8)  # 1,928 bytes of names
    paths = _files(folder, 200)
    child = HashChild(python=_slow_python(tmp_path, 16, 600))
    try:
        _take_all(child, paths[:ROUND_MIN])  # up: it answered its first request
        assert child.up
        ahead = child.lookahead([os.fspath(p) for p in paths])
        assert ahead is not None
        started = time.monotonic()
        for path in paths:
            if ahead.take(path) is None:
                IncrementalHasher(path).finish()
            time.sleep(0.01)  # the caller's own work: 2 s of it in all
        assert ahead.broken  # silent for ANSWER_SECONDS
        ahead.close()
        assert time.monotonic() - started < 20
    finally:
        child.close()
    assert child.pid is None


def test_a_child_that_exits_at_start_is_not_started_again_and_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "dying-python"
    script.write_text("#!/bin/sh\necho no >&2\nexit 1\n")
    script.chmod(0o755)
    paths = _files(tmp_path / "f", ROUND_MIN)
    child = HashChild(python=str(script))
    spawned = set()
    with caplog.at_level(logging.WARNING, logger="meshmedia.hash_child"):
        for _ in range(10):
            child.warm(ROUND_MIN)
            if child._proc is not None:
                spawned.add(child._proc.pid)
            time.sleep(0.1)
            _take_all_or_none(child, paths)
    assert len(spawned) <= hash_child.DEATHS
    assert "exited 3 times before answering" in caplog.text
    assert child.lookahead([os.fspath(p) for p in paths]) is None


def _take_all_or_none(child: HashChild, paths: list[Path]) -> None:
    ahead = child.lookahead([os.fspath(p) for p in paths])
    if ahead is not None:
        for path in paths:
            ahead.take(path)
        ahead.close()


def test_the_child_runs_in_the_root_folder_not_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-m puts the working directory first on sys.path: a curator started in a folder a
    share's user can write to must not run an xxhash.py left there."""
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "xxhash.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    monkeypatch.chdir(evil)
    paths = _files(tmp_path / "f", ROUND_MIN)
    child = HashChild()
    try:
        answers = _take_all(child, paths)
        answers += _take_all(child, paths)
    finally:
        child.close()
    assert any(a is not None for a in answers)
    assert not (tmp_path / "ran").exists()
