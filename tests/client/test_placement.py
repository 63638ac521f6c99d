"""placement.py's rules on real files: records, deletion, adoption links, space, names."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import xxhash

from meshmedia.client.placement import (
    STAGING,
    delete_placed,
    final_path,
    foreign_content,
    incomplete_dir,
    is_disk_full,
    link_for_adoption,
    make_dirs,
    matches,
    move_aside,
    record_of,
    refuse_links,
    remove_tree,
    space_problem,
    staging_dir,
    still_placed,
    targets_for,
    unsafe_names,
    xxh3_of,
)
from meshmedia.config import format_size as human
from meshmedia.errors import ManifestError
from meshmedia.hashing import file_digests as digests
from meshmedia.torrentinfo import TorrentFile
from tests.helpers import random_file

URL = "http://c/manifest/default.json"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_digests_are_sha256_and_xxh3_over_several_blocks(tmp_path: Path) -> None:
    path = random_file(tmp_path / "a.bin", (1 << 20) * 2 + 5)
    data = path.read_bytes()
    got = digests(path)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.xxh3 == xxhash.xxh3_128(data).hexdigest()
    assert xxh3_of(path) == got.xxh3


def test_staging_folders(tmp_path: Path) -> None:
    assert staging_dir(tmp_path) == tmp_path / STAGING
    assert incomplete_dir(tmp_path, "ab" * 20) == tmp_path / ".meshmedia/incomplete" / ("ab" * 20)


def test_final_path_refuses_the_staging_folder_only_at_the_top(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="staging folder"):
        final_path(tmp_path, ".meshmedia/x.mkv")
    assert final_path(tmp_path, "a/.meshmedia/x.mkv") == tmp_path / "a/.meshmedia/x.mkv"
    assert final_path(tmp_path, ".meshmediax/x.mkv") == tmp_path / ".meshmediax/x.mkv"


def test_matches_lowercases_the_expected_hashes(tmp_path: Path) -> None:
    path = random_file(tmp_path / "a.bin", 1000)
    got = digests(path)
    assert matches(path, 1000, got.sha256.upper(), got.xxh3.upper()) is True
    assert matches(path, None, None, got.xxh3) is True
    assert matches(path, 1000, None, None) is None  # no hash: cannot say
    assert matches(path, 1000, got.sha256, "0" * 32) is False
    assert matches(tmp_path / "gone", 1000, got.sha256, None) is False
    os.symlink(path, tmp_path / "link")
    assert matches(tmp_path / "link", 1000, got.sha256, None) is False


def test_a_placed_file_is_recognised_until_it_changes(tmp_path: Path) -> None:
    path = random_file(tmp_path / "Film" / "a.mkv", 5000)
    record = record_of(URL, "Film", tmp_path, "Film/a.mkv", sha(path))
    assert (record.url, record.item_path, record.rel, record.size) == (
        URL,
        "Film",
        "Film/a.mkv",
        5000,
    )
    assert record.ino == path.stat().st_ino
    assert still_placed(tmp_path, record) is True
    copy = tmp_path / "copy"
    shutil.copy(path, copy)
    os.replace(copy, path)  # restored from a backup: another inode, the same bytes
    assert still_placed(tmp_path, record) is True
    without_hash = record.__class__(**{**record.__dict__, "sha256": ""})
    assert still_placed(tmp_path, without_hash) is False  # another inode and nothing to check
    path.write_bytes(b"y" * 5000)  # the same size, other bytes
    assert still_placed(tmp_path, record) is False
    path.write_bytes(b"short")
    assert still_placed(tmp_path, record) is False
    path.unlink()
    assert still_placed(tmp_path, record) is False
    path.mkdir()
    assert still_placed(tmp_path, record) is False


def test_foreign_content_names_the_first_stranger(tmp_path: Path) -> None:
    folder = tmp_path / "Show"
    random_file(folder / "e1.mkv", 10)
    random_file(folder / "S1" / "e2.mkv", 10)
    ours = {"Show/e1.mkv", "Show/S1/e2.mkv"}
    assert foreign_content(folder, tmp_path, ours.__contains__) is None
    random_file(folder / "S1" / "notes.txt", 3)
    assert foreign_content(folder, tmp_path, ours.__contains__) == "S1/notes.txt"
    (folder / "S1" / "notes.txt").unlink()
    os.symlink(folder / "e1.mkv", folder / "S1" / "link.mkv")
    assert foreign_content(folder, tmp_path, lambda rel: True) == "S1/link.mkv"


def test_delete_placed_deletes_only_what_is_still_as_placed(tmp_path: Path) -> None:
    keep = random_file(tmp_path / "Show" / "S1" / "edited.mkv", 100)
    gone = random_file(tmp_path / "Show" / "S1" / "e1.mkv", 100)
    records = [
        record_of(URL, "Show", tmp_path, "Show/S1/e1.mkv", sha(gone)),
        record_of(URL, "Show", tmp_path, "Show/S1/edited.mkv", sha(keep)),
        record_of(URL, "Show", tmp_path, "Show/S1/e1.mkv", sha(gone)).__class__(
            URL, "Show", "Show/never.mkv", 1, "", 0, 0, 0
        ),
    ]
    keep.write_bytes(b"e" * 100)  # the user's now
    assert delete_placed(tmp_path, "Show", records) == ["Show/S1/edited.mkv"]
    assert not gone.exists()
    assert keep.exists()
    keep.unlink()
    assert delete_placed(tmp_path, "Show", records[:1]) == []
    assert not (tmp_path / "Show").exists()  # emptied folders go, up to the item's own
    assert tmp_path.exists()


def test_delete_placed_keeps_folders_with_other_files_and_never_follows_links(
    tmp_path: Path,
) -> None:
    placed = random_file(tmp_path / "Show" / "e1.mkv", 10)
    random_file(tmp_path / "Show" / "mine.txt", 1)
    record = record_of(URL, "Show", tmp_path, "Show/e1.mkv", sha(placed))
    assert delete_placed(tmp_path, "Show", [record]) == []
    assert (tmp_path / "Show" / "mine.txt").exists()
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    random_file(outside / "e1.mkv", 10)
    shutil.rmtree(tmp_path / "Show")
    os.symlink(outside, tmp_path / "Show")
    try:
        assert delete_placed(tmp_path, "Show", [record]) == ["Show/e1.mkv"]
        assert (outside / "e1.mkv").exists()
    finally:
        shutil.rmtree(outside)


def test_delete_placed_leaves_a_replaced_symlink(tmp_path: Path) -> None:
    placed = random_file(tmp_path / "a.mkv", 10)
    record = record_of(URL, "a.mkv", tmp_path, "a.mkv", sha(placed))
    placed.unlink()
    os.symlink("/etc/hostname", placed)
    assert delete_placed(tmp_path, "a.mkv", [record]) == ["a.mkv"]
    assert placed.is_symlink()


def test_link_for_adoption_hard_links_into_staging(tmp_path: Path) -> None:
    final = random_file(tmp_path / "Film" / "a.mkv", 100)
    ih = "cd" * 20
    link = link_for_adoption(tmp_path, final, ih, "a.mkv")
    assert link == incomplete_dir(tmp_path, ih) / "a.mkv"
    assert link.stat().st_ino == final.stat().st_ino
    again = link_for_adoption(tmp_path, final, ih, "a.mkv")  # a stale link is replaced
    assert again.stat().st_ino == final.stat().st_ino
    inner = link_for_adoption(tmp_path, final, ih, "Top/inner.mkv")
    assert inner == incomplete_dir(tmp_path, ih) / "Top" / "inner.mkv"
    assert inner.stat().st_ino == final.stat().st_ino


def test_space_problem_keeps_min_free(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert space_problem(tmp_path / "new", 0, 0) is None
    assert (tmp_path / "new").is_dir()
    assert space_problem(tmp_path, free // 4, 0) is None
    message = space_problem(tmp_path, 1 << 50, 0)
    assert message is not None
    assert f"not enough disk space in {tmp_path}" in message
    assert "1024.0 TiB" in message
    assert space_problem(tmp_path, 0, 1 << 50) is not None
    assert space_problem(tmp_path, free // 4, free // 4) is None
    assert space_problem(tmp_path, free // 2, free // 2 + (1 << 30)) is not None


def test_is_disk_full() -> None:
    assert is_disk_full(f"write failed: {os.strerror(errno.ENOSPC)}")
    assert is_disk_full("storage error ENOSPC")
    assert is_disk_full(os.strerror(errno.ENOSPC).upper())
    assert not is_disk_full("permission denied")


def test_move_aside_keeps_the_relative_path(tmp_path: Path) -> None:
    top = random_file(tmp_path / "a.mkv", 5)
    moved = move_aside(top, tmp_path)
    assert moved.parent.parent == tmp_path / ".meshmedia" / "replaced"
    assert moved.name == "a.mkv"
    assert moved.stat().st_size == 5
    assert not top.exists()
    inner = random_file(tmp_path / "Show" / "S1" / "e.mkv", 5)
    moved = move_aside(inner, tmp_path)
    assert moved.relative_to(tmp_path).parts[:2] == (".meshmedia", "replaced")
    assert moved.relative_to(tmp_path).parts[3:] == ("Show", "S1", "e.mkv")
    assert moved.stat().st_size == 5


def test_remove_tree(tmp_path: Path) -> None:
    random_file(tmp_path / "d" / "x" / "f", 1)
    remove_tree(tmp_path / "d")
    assert not (tmp_path / "d").exists()
    random_file(tmp_path / "f", 1)
    remove_tree(tmp_path / "f")
    assert not (tmp_path / "f").exists()
    target = random_file(tmp_path / "target" / "keep", 1)
    os.symlink(tmp_path / "target", tmp_path / "link")
    remove_tree(tmp_path / "link")  # the link goes, never what it points to
    assert not (tmp_path / "link").is_symlink()
    assert target.exists()
    remove_tree(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024**2 - 1, "1024.0 KiB"),
        (1024**2, "1.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (1024**4, "1.0 TiB"),
        (5 * 1024**5, "5120.0 TiB"),
    ],
)
def test_human(size: int, text: str) -> None:
    assert human(size) == text


def entry(path: str, pad: bool = False, symlink: bool = False) -> TorrentFile:
    return TorrentFile(index=0, path=path, size=1, pad=pad, symlink=symlink)


def test_unsafe_names() -> None:
    assert unsafe_names([entry("Show/a.mkv"), entry("Show/b.mkv")]) is None
    assert unsafe_names([entry("a.mkv"), entry("../x", pad=True)]) is None  # pads are not placed
    assert "'..' segment" in (unsafe_names([entry("Show/../x")]) or "")
    assert "names a file 'Show/..'" in (unsafe_names([entry("Show/..")]) or "")
    assert "symbolic link" in (unsafe_names([entry("Show/l", symlink=True)]) or "")
    assert "twice" in (unsafe_names([entry("Show/a"), entry("Show/a")]) or "")
    both = unsafe_names([entry("Show/a"), entry("Show/a/b")])
    assert both == "the torrent names 'Show/a/b' and 'Show/a': one inside the other"
    deep = unsafe_names([entry("T/a/b/c"), entry("T/a/b")])
    assert deep == "the torrent names 'T/a/b' and 'T/a/b/c': one inside the other"
    assert unsafe_names([entry("T/ab"), entry("T/a/b")]) is None


def test_targets_for_names_each_file_and_its_new_name(tmp_path: Path) -> None:
    final = tmp_path / "TV" / "My Show"
    targets = targets_for([(0, "Show/e1.mkv", 5), (2, "Show/S1/e2.mkv", 7)], final)
    assert [(t.index, t.inner, t.new_name, t.size) for t in targets] == [
        (0, "e1.mkv", "My Show/e1.mkv", 5),
        (2, "S1/e2.mkv", "My Show/S1/e2.mkv", 7),
    ]
    assert targets[1].path(final) == final / "S1" / "e2.mkv"
    [single] = targets_for([(3, "x.mkv", 9)], tmp_path / "Film.mkv")
    assert (single.index, single.inner, single.new_name, single.path(tmp_path / "f")) == (
        3, "", "Film.mkv", tmp_path / "f",
    )  # fmt: skip
    with pytest.raises(ManifestError, match="no files"):
        targets_for([], final)
    with pytest.raises(ManifestError, match="several files but no folder"):
        targets_for([(0, "a", 1), (1, "b", 1)], final)
    with pytest.raises(ManifestError, match="outside the torrent's folder"):
        targets_for([(0, "Show/a", 1), (1, "b", 1)], final)
    with pytest.raises(ManifestError, match="leads outside"):
        targets_for([(0, "Show/a", 1), (1, "Other/a", 1)], final)  # twice the same rest


def test_foreign_content_never_walks_into_a_linked_folder(tmp_path: Path) -> None:
    folder = tmp_path / "Show"
    random_file(folder / "e1.mkv", 10)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", folder / "linked")
    assert foreign_content(folder, tmp_path, lambda rel: True) == "linked"


def test_delete_placed_goes_on_past_a_kept_or_refused_file(tmp_path: Path) -> None:
    """One file kept (changed, or behind a link) never stops the others' deletion."""
    media = tmp_path / "media"
    changed = random_file(media / "Show" / "a.mkv", 100)
    linked = random_file(media / "Show" / "Sub" / "b.mkv", 100)
    placed = random_file(media / "Show" / "c.mkv", 100)
    records = [
        record_of(URL, "Show", media, "Show/a.mkv", sha(changed)),
        record_of(URL, "Show", media, "Show/Sub/b.mkv", sha(linked)),
        record_of(URL, "Show", media, "Show/c.mkv", sha(placed)),
    ]
    changed.write_bytes(b"x" * 100)
    outside = tmp_path / "outside"
    (media / "Show" / "Sub").rename(outside)
    (media / "Show" / "Sub").symlink_to(outside)
    assert delete_placed(media, "Show", records) == ["Show/a.mkv", "Show/Sub/b.mkv"]
    assert not placed.exists()
    assert (outside / "b.mkv").exists()


def test_delete_placed_removes_empty_folders_only_inside_the_item(tmp_path: Path) -> None:
    media = tmp_path / "media"
    placed = random_file(media / "TV" / "Show" / "S1" / "e1.mkv", 10)
    record = record_of(URL, "TV/Show", media, "TV/Show/S1/e1.mkv", sha(placed))
    assert delete_placed(media, "TV/Show", [record]) == []
    assert not (media / "TV" / "Show").exists()
    assert (media / "TV").is_dir()  # the user's folder, empty now, stays
    assert media.is_dir()


def test_matches_a_missing_file_is_no_match(tmp_path: Path) -> None:
    assert matches(tmp_path / "nothing", None, "ab" * 32, None) is False
    assert matches(tmp_path / "nothing", 5, None, None) is False


def test_foreign_content_looks_past_the_item_folders(tmp_path: Path) -> None:
    """Thirty folders of the item's and one stranger beside them: the stranger is found
    whatever order the folder is listed in."""
    for n in range(30):
        random_file(tmp_path / "Show" / f"S{n:02}" / "e.mkv", 1)
    random_file(tmp_path / "Show" / "stranger.txt", 1)
    found = foreign_content(tmp_path / "Show", tmp_path, lambda rel: rel.endswith("e.mkv"))
    assert found == "stranger.txt"


def test_move_aside_names_its_folder_by_the_time(tmp_path: Path) -> None:
    moved = move_aside(random_file(tmp_path / "a.mkv", 5), tmp_path)
    assert re.fullmatch(r"\d{8}-\d{6}", moved.parent.name), moved


def test_a_placed_file_replaced_by_a_folder_of_its_size_is_not_placed(tmp_path: Path) -> None:
    """A folder's st_size (4096 on ext4) can equal the file's: it is still not the file."""
    placed = random_file(tmp_path / "a.mkv", 4096)
    record = record_of(URL, "a.mkv", tmp_path, "a.mkv", sha(placed))
    placed.unlink()
    placed.mkdir()
    if os.lstat(placed).st_size != 4096:
        pytest.skip("this file system gives folders another size")
    assert still_placed(tmp_path, record) is False


def test_space_problem_makes_a_missing_download_dir_0755_whatever_the_umask(
    tmp_path: Path,
) -> None:
    media = tmp_path / "new" / "deeper" / "media"
    before = os.umask(0)
    try:
        assert space_problem(media, 0, 0) is None
    finally:
        os.umask(before)
    assert stat.S_IMODE(media.stat().st_mode) == 0o755


def test_matches_a_path_through_a_file_is_no_match(tmp_path: Path) -> None:
    """lstat fails with another error than "not found" (ENOTDIR): still no match."""
    digest = sha(random_file(tmp_path / "a.mkv", 10))
    assert matches(tmp_path / "a.mkv" / "x.mkv", 10, digest, None) is False
    assert matches(tmp_path / ("n" * 300), 10, digest, None) is False  # ENAMETOOLONG


def test_make_dirs_refuses_a_file_in_the_way_at_any_depth(tmp_path: Path) -> None:
    random_file(tmp_path / "media" / "a" / "b", 1)
    for rel in ("a/b", "a/b/c"):
        where = tmp_path / "media" / rel
        reason = f"cannot create {where}: 'b' is a symlink or not a folder (Not a directory)"
        with pytest.raises(ManifestError, match=f"^{re.escape(reason)}$"):
            make_dirs(tmp_path / "media", rel)
    assert (tmp_path / "media" / "a" / "b").is_file()


def test_make_dirs_creates_a_missing_nested_root_0755_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "new" / "deeper" / "media"
    before = os.umask(0)
    try:
        assert make_dirs(root, "Show/S1") == root / "Show/S1"
    finally:
        os.umask(before)
    for folder in (root, root / "Show", root / "Show" / "S1"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_remove_tree_deletes_what_it_can_and_never_raises(tmp_path: Path) -> None:
    """A file that cannot be deleted (an immutable folder: EPERM even for root) is left,
    the rest goes, and the caller (discarding a staging folder) goes on."""
    stuck = tmp_path / "d" / "stuck"
    random_file(stuck / "f", 1)
    random_file(tmp_path / "d" / "other" / "g", 1)
    if subprocess.run(["chattr", "+i", stuck], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not possible here")
    try:
        remove_tree(tmp_path / "d")
        assert (stuck / "f").exists()
        assert not (tmp_path / "d" / "other").exists()
    finally:
        subprocess.run(["chattr", "-i", stuck], check=True)


def test_make_dirs_keeps_the_staging_folder_private_whatever_the_umask(tmp_path: Path) -> None:
    """Everything under `.meshmedia` (any case: exFAT) is 0700, one made 0655 before too
    (any bit for others or the group is tightened); a `.meshmedia` below the top is a
    media folder like any other."""
    root = tmp_path / "media"
    (root / ".MeshMedia" / "old").mkdir(parents=True)
    os.chmod(root / ".MeshMedia" / "old", 0o655)
    before = os.umask(0)
    try:
        make_dirs(root, ".meshmedia/incomplete/" + "ab" * 20)
        make_dirs(root, ".MeshMedia/old/x")
        make_dirs(root, "Show/.meshmedia")
    finally:
        os.umask(before)
    private = [".meshmedia", ".meshmedia/incomplete", ".meshmedia/incomplete/" + "ab" * 20]
    private += [".MeshMedia", ".MeshMedia/old", ".MeshMedia/old/x"]
    for rel in private:
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o700, rel
    for rel in ("Show", "Show/.meshmedia"):
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o755, rel


def test_unsafe_names_checks_the_part_placed_below_the_item_on_its_own() -> None:
    """`Show/C:x.mkv` is a fine path, but what is placed is `<item>/C:x.mkv`: its rest
    starts with a drive letter, at any depth of the name; a pad file stops nothing."""
    for name in ("Show/C:x.mkv", "Show/C:x/y.mkv"):
        got = unsafe_names([entry(name)])
        assert got == f"the torrent names a file {name!r}: path starts with a drive letter"
    after_a_pad = unsafe_names([entry("a/b.mkv"), entry("a/p", pad=True), entry("a/../x")])
    assert after_a_pad == "the torrent names a file 'a/../x': path has a '..' segment"


def test_torrents_that_cannot_be_placed_are_refused_word_for_word(tmp_path: Path) -> None:
    final = tmp_path / "Final"
    cases: list[tuple[list[tuple[int, str, int]], str]] = [
        ([], "the torrent has no files"),
        ([(0, "a", 1), (1, "b", 1)], "the torrent has several files but no folder"),
        (
            [(0, "Show/a", 1), (1, "b", 1)],
            "the torrent's file 'b' cannot be placed: it lies outside the torrent's folder",
        ),
    ]
    for files, message in cases:
        with pytest.raises(ManifestError) as caught:
            targets_for(files, final)
        assert str(caught.value) == message


def test_final_path_refuses_anything_below_the_staging_folder(tmp_path: Path) -> None:
    for path in (".meshmedia", ".meshmedia/x.mkv", ".MeshMedia/incomplete/x.mkv"):
        with pytest.raises(ManifestError) as caught:
            final_path(tmp_path, path)
        assert str(caught.value) == f"path {path!r} lies in the staging folder .meshmedia"


def test_refuse_links_names_what_is_in_the_way_word_for_word(tmp_path: Path) -> None:
    random_file(tmp_path / "a", 1)
    with pytest.raises(ManifestError) as caught:
        refuse_links(tmp_path, "a/b")
    assert str(caught.value) == f"{tmp_path / 'a'} is in the way: it is not a folder"
    long = "n" * 300  # lstat: ENAMETOOLONG, neither found nor missing
    with pytest.raises(ManifestError) as caught:
        refuse_links(tmp_path, long)
    assert str(caught.value) == f"cannot look at {tmp_path / long}: File name too long"
