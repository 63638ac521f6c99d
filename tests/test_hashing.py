"""hashing: one pass gives what hashlib and xxhash give separately; incremental == one-shot."""

from __future__ import annotations

import hashlib
import random
import threading
import tracemalloc
from pathlib import Path

import pytest
import xxhash

from meshmedia import hashing
from meshmedia.errors import PublishError
from meshmedia.hashing import MIN_PIECE, FileHashes, IncrementalHasher, hash_file, piece_size_for


def expected(data: bytes, piece_size: int) -> FileHashes:
    """The hashes computed separately, the slow obvious way."""
    pieces = tuple(
        hashlib.sha1(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size)
    )
    return FileHashes(
        size=len(data),
        piece_size=piece_size,
        pieces=pieces,
        sha256=hashlib.sha256(data).hexdigest(),
        xxh3=xxhash.xxh3_128(data).hexdigest(),
    )


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scale the piece-size rule down (16 KiB .. 256 KiB, 8 pieces per step) for quick files."""
    monkeypatch.setattr(hashing, "MIN_PIECE", 16 * 1024)
    monkeypatch.setattr(hashing, "MAX_PIECE", 256 * 1024)
    monkeypatch.setattr(hashing, "TARGET_PIECES", 8)
    monkeypatch.setattr(hashing, "CHUNK", 48 * 1024)


@pytest.mark.parametrize(
    "size",
    [1, MIN_PIECE - 1, MIN_PIECE, MIN_PIECE + 1, 9 * MIN_PIECE + 12345],
)
def test_one_pass_equals_separate_hashes(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hash_file(path) == expected(data, MIN_PIECE)


def test_many_pieces_across_read_chunks(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(hashing.CHUNK * 2 + 777)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hash_file(path, 64 * 1024) == expected(data, 64 * 1024)
    assert len(hash_file(path, 64 * 1024).pieces) == -(-len(data) // (64 * 1024))


@pytest.mark.parametrize("size", [1, 16 * 1024, 100_000, 48 * 1024 * 9 + 5, 3 * 1024 * 1024 + 1])
def test_a_first_pass_gives_the_pieces_and_xxh3_of_one_pass_without_sha256(
    tmp_path: Path, size: int, small_steps: None
) -> None:
    """Pieces over two threads and alternate reads (past the ring of 4 buffers), the
    XXH3 in order on the reading thread: the same as the one-pass hasher's."""
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    first = hashing.FirstPass(path)
    got = first.finish()
    want = expected(data, piece_size_for(size))
    assert got == FileHashes(want.size, want.piece_size, want.pieces, "", want.xxh3)
    assert first.bytes_read == size
    assert first.final_stat is not None
    assert first.final_stat.st_size == size


def test_piece_size_rule() -> None:
    assert piece_size_for(1) == 256 * 1024
    assert piece_size_for(512 << 20) == 256 * 1024
    assert piece_size_for((512 << 20) + 1) == 512 * 1024
    assert piece_size_for(1 << 30) == 512 * 1024
    assert piece_size_for(4 << 30) == 2 << 20
    assert piece_size_for(1 << 40) == 16 << 20
    for size in (600 << 20, 3 << 30, 20 << 30):
        assert 1024 < -(-size // piece_size_for(size)) <= 2048


def grow(path: Path, data: bytes, hasher: IncrementalHasher, seed: int) -> None:
    """Append `data` in random-sized writes, letting the hasher follow after each."""
    rnd = random.Random(seed)
    with path.open("ab") as out:
        offset = 0
        while offset < len(data):
            step = rnd.randint(1, len(data) // 6)
            out.write(data[offset : offset + step])
            out.flush()
            offset += step
            hasher.update()
            assert hasher.hashed <= offset


@pytest.mark.usefixtures("small_steps")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_one_shot_across_piece_steps(tmp_path: Path, seed: int) -> None:
    # 8 pieces per step: the file crosses the 128 KiB, 256 KiB and 512 KiB steps.
    data = random.Random(seed).randbytes(700 * 1024 + seed)
    path = tmp_path / "growing.bin"
    path.write_bytes(b"")
    hasher = IncrementalHasher(path)
    grow(path, data, hasher, seed)
    result = hasher.finish()
    assert result == hash_file(path)
    assert result == expected(data, hashing.piece_size_for(len(data)))


@pytest.mark.usefixtures("small_steps")
def test_finish_after_following_reads_only_the_tail(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(500 * 1024)  # 256 KiB..512 KiB: 64 KiB pieces
    path = tmp_path / "f.bin"
    path.write_bytes(data[:270_000])
    hasher = IncrementalHasher(path, lookahead=1.0)
    hasher.update()
    before = hasher.bytes_read
    with path.open("ab") as out:
        out.write(data[270_000:])
    result = hasher.finish()
    assert result == expected(data, hashing.piece_size_for(len(data)))
    # The size stayed in one piece-size step: only the new bytes were read.
    assert hasher.bytes_read - before == len(data) - 270_000


def test_truncated_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100_000)
    hasher = IncrementalHasher(path)
    hasher.update()
    path.write_bytes(b"b" * 5000)
    assert hasher.finish() == expected(b"b" * 5000, MIN_PIECE)


def test_replaced_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100_000)
    hasher = IncrementalHasher(path)
    hasher.update()
    other = tmp_path / "g.bin"
    other.write_bytes(b"c" * 200_000)
    other.replace(path)
    assert hasher.finish() == expected(b"c" * 200_000, MIN_PIECE)


def test_missing_file_is_a_publish_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="cannot read"):
        hash_file(tmp_path / "nope")


@pytest.mark.usefixtures("small_steps")
def test_update_from_another_thread_while_finishing(tmp_path: Path) -> None:
    data = random.Random(9).randbytes(600 * 1024)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    hasher = IncrementalHasher(path)
    threads = [threading.Thread(target=hasher.update) for _ in range(3)]
    for thread in threads:
        thread.start()
    result = hasher.finish()
    for thread in threads:
        thread.join(timeout=30)
    assert result == expected(data, hashing.piece_size_for(len(data)))
    assert hasher.update() == hasher.hashed  # after finish: a no-op, the file is not reopened


@pytest.mark.usefixtures("small_steps")
def test_lookahead_keeps_the_tail_small_across_a_step(tmp_path: Path) -> None:
    # 240,000 bytes: 32 KiB pieces (step up to 256 KiB); past half the step the
    # hasher also follows at 64 KiB, so ending at 300,000 (64 KiB pieces) reads
    # only the new bytes.
    data = random.Random(11).randbytes(300_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data[:240_000])
    hasher = IncrementalHasher(path, lookahead=0.5)
    hasher.update()
    before = hasher.bytes_read
    with path.open("ab") as out:
        out.write(data[240_000:])
    assert hasher.finish() == expected(data, 64 * 1024)
    assert hasher.bytes_read - before == 60_000


def test_a_small_file_is_hashed_without_the_whole_read_ring(tmp_path: Path) -> None:
    """A 100 KB file allocated (and zeroed) four 8 MiB read buffers: 14 ms a file, ten
    times its hashing, 73 s for a library of 5,000 such files."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(random.Random(3).randbytes(100_000))
    tracemalloc.start()
    try:
        hashes = hash_file(path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hashes.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < 2 * 1024 * 1024, peak  # 33.6 MB before
