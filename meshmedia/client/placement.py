"""Where a client's files live, how they are verified, and how they come into place.

Downloads go to `<download-dir>/.meshmedia/incomplete/<info_hash>/`; Jellyfin
ignores dot folders. A finished download is verified (size, SHA-256, file by
file) and only then renamed into `<download-dir>/<path>` by the engine
(rename_file + move_storage), so nothing exists at a final path before it is
verified.

One rule holds for every path the client writes (`targets_for`, `refuse_links`,
`make_dirs`): it is computed from the manifest item's path and the file names
libtorrent sanitised, checked like an item path, and refused unless it lies
inside the item's own final folder; no symbolic link is followed on the way
(folders are created one at a time with `dir_fd` and `O_NOFOLLOW`, and every
existing component is checked with lstat). What the client placed is recorded
file by file (the store's placed_files), so that a folder is placed only into a
folder of its own and `--delete-removed` deletes only files it placed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshmedia.config import format_size
from meshmedia.errors import ManifestError
from meshmedia.hashing import file_digests, xxh3_of
from meshmedia.manifest import Nesting, PathSet, check_relative_path
from meshmedia.store import PlacedFile
from meshmedia.torrentinfo import TorrentFile

log = logging.getLogger(__name__)

STAGING = ".meshmedia"
MEDIA_DIR_MODE = 0o755  # and the umask: Jellyfin reads them; nobody else writes (finding 12)


def staging_dir(download_dir: Path) -> Path:
    """`<download-dir>/.meshmedia`."""
    return download_dir / STAGING


def incomplete_dir(download_dir: Path, info_hash: str) -> Path:
    """Where a torrent downloads before it is verified."""
    return staging_dir(download_dir) / "incomplete" / info_hash


def final_path(download_dir: Path, path: str) -> Path:
    """`<download-dir>/<path>`, refusing unsafe paths, the staging folder and any
    symbolic link on the way (the final path itself included)."""
    check_relative_path(path)
    if path.split("/", 1)[0].casefold() == STAGING:  # `.MeshMedia` is it on exFAT (finding 9)
        raise ManifestError(f"path {path!r} lies in the staging folder {STAGING}")
    refuse_links(download_dir, path)
    return download_dir / path


def refuse_links(root: Path, rel: str) -> None:
    """ManifestError when a component of `root/rel` that exists is a symlink, or a
    component above the last is not a folder (lstat each: nothing is followed)."""
    current = root
    parts = rel.split("/")
    for number, part in enumerate(parts, 1):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ManifestError(f"cannot look at {current}: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            raise ManifestError(f"{current} is a symlink; meshmedia does not write through links")
        if number < len(parts) and not stat.S_ISDIR(mode):
            raise ManifestError(f"{current} is in the way: it is not a folder")


def make_dirs(root: Path, rel: str) -> Path:
    """Create `root/rel` folder by folder without following a symlink; return it.

    Each component is opened with O_NOFOLLOW relative to its parent's descriptor,
    so a link planted anywhere on the way is refused (ManifestError), not followed.
    The staging folder and everything below it are 0700 whatever the umask; other
    folders 0755 less the umask.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    root.mkdir(mode=MEDIA_DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = [p for p in rel.split("/") if p]
        private = bool(parts) and parts[0].casefold() == STAGING
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700 if private else MEDIA_DIR_MODE, dir_fd=fd)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                where = root / rel
                raise ManifestError(
                    f"cannot create {where}: {part!r} is a symlink or not a folder ({exc.strerror})"
                ) from None
            os.close(fd)
            fd = child
            if private and os.fstat(fd).st_mode & 0o077:  # made by an older version, or umask
                os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return root / rel


@dataclass(frozen=True)
class Target:
    """Where one file of a torrent goes: its index, its name now (relative to the
    torrent's save path), its path inside the item (`""` for a single file), and
    its new name relative to the final folder's parent."""

    index: int
    name: str
    inner: str
    new_name: str
    size: int

    def path(self, final: Path) -> Path:
        """The file's final path."""
        return final / self.inner if self.inner else final


def is_folder(files: Sequence[tuple[str, int]]) -> bool:
    """True for a folder torrent (its files lie under the torrent's name)."""
    return any("/" in name for name, _ in files)


def targets_for(files: Sequence[tuple[int, str, int]], final: Path) -> list[Target]:
    """The final place of each file `(index, name, size)` of a torrent, by the one rule.

    A single file becomes `final`; a folder torrent's `top/rest` becomes
    `final/rest`, where `rest` must pass the item-path check and stay inside
    `final` once normalised. ManifestError names the first file that does not.
    """
    if not files:
        raise ManifestError("the torrent has no files")
    if not is_folder([(name, size) for _, name, size in files]):
        if len(files) != 1:
            raise ManifestError("the torrent has several files but no folder")
        index, name, size = files[0]
        return [Target(index, name, "", final.name, size)]
    targets = []
    seen: set[str] = set()
    for index, name, size in files:
        _, sep, rest = name.partition("/")
        try:
            if not sep:
                raise ManifestError("it lies outside the torrent's folder")
            check_relative_path(rest)
        except ManifestError as exc:
            raise ManifestError(
                f"the torrent's file {name!r:.200} cannot be placed: {exc}"
            ) from None
        inside = os.path.normpath(final / rest)
        if not inside.startswith(os.path.normpath(final) + os.sep) or rest in seen:
            raise ManifestError(f"the torrent's file {name!r:.200} leads outside {final}")
        seen.add(rest)
        targets.append(Target(index, name, rest, f"{final.name}/{rest}", size))
    return targets


# -- what the client placed ---------------------------------------------------------
def record_of(url: str, item_path: str, download_dir: Path, rel: str, sha256: str) -> PlacedFile:
    """A placed-file record of `download_dir/rel` as it is on disk now."""
    st = os.lstat(download_dir / rel)
    return PlacedFile(url, item_path, rel, st.st_size, sha256, st.st_dev, st.st_ino, st.st_mtime_ns)


def still_placed(download_dir: Path, record: PlacedFile) -> bool:
    """True when `record`'s file is still the one placed: the same inode, size and
    mtime, or (after a copy or a restore) a regular file with the same SHA-256."""
    path = download_dir / record.rel
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != record.size:
        return False
    if (st.st_dev, st.st_ino, st.st_mtime_ns) == (record.dev, record.ino, record.mtime_ns):
        return True
    return bool(record.sha256) and file_digests(path).sha256 == record.sha256


def foreign_content(folder: Path, download_dir: Path, ours: Callable[[str], bool]) -> str | None:
    """The first thing in `folder` that is not the item's own, or None.

    Walked without following links; `ours(rel)` (rel to the download dir) says
    whether a regular file belongs; a symlink or special file never does.
    """
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                    continue
                regular = entry.is_file(follow_symlinks=False)
                if not regular or not ours(path.relative_to(download_dir).as_posix()):
                    return path.relative_to(folder).as_posix()
    return None


def delete_placed(download_dir: Path, item_path: str, records: Sequence[PlacedFile]) -> list[str]:
    """Delete the files of `records` that are still as placed; return those kept.

    A file changed since (edited, replaced) is the user's now and stays. Folders
    left empty are removed up to the item's own folder.
    """
    kept = []
    for record in records:
        path = download_dir / record.rel
        try:
            refuse_links(download_dir, record.rel)
        except ManifestError:
            kept.append(record.rel)
            continue
        if not still_placed(download_dir, record):
            if path.exists() or path.is_symlink():
                kept.append(record.rel)
            continue
        path.unlink()
        log.info("deleted %s (delete_removed)", path)
    top = download_dir / item_path
    for record in records:
        parent = (download_dir / record.rel).parent
        while parent != download_dir and (parent == top or parent.is_relative_to(top)):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    return kept


def matches(path: Path, size: int | None, sha256: str | None, xxh3: str | None) -> bool | None:
    """Whether the file at `path` is the item: False on any mismatch, None when unknowable.

    Size first, then XXH3 (fast), then SHA-256. Without a hash the answer is None.
    Only a regular file can match (a symlink is not followed).
    """
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size):
            return False
        if xxh3 and xxh3_of(path) != xxh3.lower():
            return False
        if sha256:
            return file_digests(path).sha256 == sha256.lower()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return False
    return True if xxh3 else None


def link_for_adoption(download_dir: Path, final: Path, info_hash: str, name: str) -> Path:
    """Hard-link a file already in place to `<staging>/<name>`, where the engine checks it.

    The engine then finds every piece present and seeds without downloading; the
    later relocation renames the link onto the same file. A symlink is never linked.
    """
    staging = incomplete_dir(download_dir, info_hash)
    check_relative_path(name)  # the one path rule: no `..`, nothing absolute (finding 1)
    link = staging / name
    if not os.path.normpath(link).startswith(os.path.normpath(staging) + os.sep):
        raise ManifestError(f"the adoption name {name!r:.200} leads outside {staging}")
    rel = link.relative_to(download_dir)
    make_dirs(download_dir, rel.parent.as_posix())
    if link.exists() or link.is_symlink():
        link.unlink()
    os.link(final, link, follow_symlinks=False)
    return link


def space_problem(download_dir: Path, needed: int, min_free: int) -> str | None:
    """A message when `needed` more bytes would leave less than `min_free` free, else None."""
    download_dir.mkdir(mode=MEDIA_DIR_MODE, parents=True, exist_ok=True)
    free = shutil.disk_usage(download_dir).free
    if free - needed >= min_free:
        return None
    return (
        f"not enough disk space in {download_dir}: {format_size(free)} free, the download needs "
        f"{format_size(needed)} and {format_size(min_free)} must stay free (--min-free)"
    )


def is_disk_full(message: str) -> bool:
    """True when an engine error message means the disk is full."""
    return os.strerror(errno.ENOSPC).lower() in message.lower() or "enospc" in message.lower()


def move_aside(path: Path, download_dir: Path) -> Path:
    """Move a file that is in the way into `.meshmedia/replaced/<time>/` and return it."""
    rel = path.relative_to(download_dir)
    folder = f"{STAGING}/replaced/{time.strftime('%Y%m%d-%H%M%S')}"
    target = download_dir / folder / rel
    make_dirs(download_dir, f"{folder}/{rel.parent.as_posix()}" if rel.parent.parts else folder)
    path.rename(target)
    log.warning("moved %s, which was in the way, to %s", path, target)
    return target


def remove_tree(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def unsafe_names(files: list[TorrentFile]) -> str | None:
    """Why the torrent's own file names cannot be placed as they are, or None.

    Every name must be a safe relative path (no `..`, no absolute name, no
    control characters: the rule item paths follow), name no symlink, and not
    nest with another (`a` and `a/b`).
    """
    names = PathSet("file")
    for entry in files:
        if entry.pad:
            continue
        try:
            check_relative_path(entry.path)
            if "/" in entry.path:  # placed as <item>/<rest>: the rest is checked on its own too
                check_relative_path(entry.path.split("/", 1)[1])
        except ManifestError as exc:
            return f"the torrent names a file {entry.path!r:.200}: {exc}"
        if entry.symlink:
            return f"the torrent makes {entry.path!r:.200} a symbolic link"
        if (overlap := names.overlap(entry.path)) is not None:
            if overlap.nesting is Nesting.SAME:
                return f"the torrent names {entry.path!r:.200} twice"
            other = overlap.other
            return f"the torrent names {entry.path!r:.200} and {other!r:.200}: one inside the other"
        names.take(entry.path, entry.index)
    return None
