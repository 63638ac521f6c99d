"""Where a client's files live, how they are verified, and how they come into place.

Downloads go to `<download-dir>/.meshmedia/incomplete/<info_hash>/`; Jellyfin
ignores dot folders. A finished download is verified (size, SHA-256) and only
then renamed into `<download-dir>/<path>` by the engine (rename_file +
move_storage), so nothing exists at a final path before it is verified.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .errors import ManifestError
from .manifest import check_relative_path

log = logging.getLogger(__name__)

STAGING = ".meshmedia"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Digests:
    """SHA-256 and XXH3-128 (hex) of one file."""

    sha256: str
    xxh3: str


def digests(path: Path) -> Digests:
    """Hash a file in one read pass."""
    sha, fast = hashlib.sha256(), xxhash.xxh3_128()
    with path.open("rb") as src:
        while block := src.read(_BLOCK):
            sha.update(block)
            fast.update(block)
    return Digests(sha.hexdigest(), fast.hexdigest())


def xxh3_of(path: Path) -> str:
    """XXH3-128 of a file (the fast first check)."""
    fast = xxhash.xxh3_128()
    with path.open("rb") as src:
        while block := src.read(_BLOCK):
            fast.update(block)
    return fast.hexdigest()


def staging_dir(download_dir: Path) -> Path:
    """`<download-dir>/.meshmedia`."""
    return download_dir / STAGING


def incomplete_dir(download_dir: Path, info_hash: str) -> Path:
    """Where a torrent downloads before it is verified."""
    return staging_dir(download_dir) / "incomplete" / info_hash


def final_path(download_dir: Path, path: str) -> Path:
    """`<download-dir>/<path>`, refusing unsafe paths and symlinked escapes."""
    check_relative_path(path)
    if path.split("/", 1)[0] == STAGING:
        raise ManifestError(f"path {path!r} lies in the staging folder {STAGING}")
    target = download_dir / path
    root = download_dir.resolve()
    if not target.parent.resolve().is_relative_to(root):
        raise ManifestError(f"path {path!r} leads outside the download dir through a symlink")
    return target


def is_folder(files: Sequence[tuple[str, int]]) -> bool:
    """True for a folder torrent (its files lie under the torrent's name)."""
    return any("/" in name for name, _ in files)


def placed_files(final: Path, files: Sequence[tuple[str, int]]) -> list[tuple[Path, int]]:
    """The final path of each torrent file: the file itself, or `<final>/<rest>` for a folder."""
    if not is_folder(files):
        return [(final, files[0][1])]
    return [(final / name.split("/", 1)[1], size) for name, size in files]


def renames_for(files: Sequence[tuple[int, str, int]], final: Path) -> dict[int, str]:
    """Renames by file index (relative to the new save path `final.parent`) that land at
    `final`; only the files whose name changes. `files` holds (index, name, size)."""
    pairs = [(name, size) for _, name, size in files]
    if not is_folder(pairs):
        wanted = {files[0][0]: final.name}
    else:
        wanted = {i: f"{final.name}/{name.split('/', 1)[1]}" for i, name, _ in files}
    current = {i: name for i, name, _ in files}
    return {i: name for i, name in wanted.items() if current[i] != name}


def matches(path: Path, size: int | None, sha256: str | None, xxh3: str | None) -> bool | None:
    """Whether the file at `path` is the item: False on any mismatch, None when unknowable.

    Size first, then XXH3 (fast), then SHA-256. Without a hash the answer is None.
    """
    try:
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
        if xxh3 and xxh3_of(path) != xxh3.lower():
            return False
        if sha256:
            return digests(path).sha256 == sha256.lower()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return False
    return True if xxh3 else None


def link_for_adoption(final: Path, staging: Path, name: str) -> Path:
    """Hard-link a file already in place to `<staging>/<name>`, where the engine checks it.

    The engine then finds every piece present and seeds without downloading; the
    later relocation renames the link onto the same file.
    """
    staging.mkdir(parents=True, exist_ok=True)
    link = staging / name
    if link.exists():
        link.unlink()
    os.link(final, link)
    return link


def space_problem(download_dir: Path, needed: int, min_free: int) -> str | None:
    """A message when `needed` more bytes would leave less than `min_free` free, else None."""
    download_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(download_dir).free
    if free - needed >= min_free:
        return None
    return (
        f"not enough disk space in {download_dir}: {human(free)} free, the download needs "
        f"{human(needed)} and {human(min_free)} must stay free (--min-free)"
    )


def is_disk_full(message: str) -> bool:
    """True when an engine error message means the disk is full."""
    return os.strerror(errno.ENOSPC).lower() in message.lower() or "enospc" in message.lower()


def move_aside(path: Path, download_dir: Path) -> Path:
    """Move a file that is in the way into `.meshmedia/replaced/<time>/` and return it."""
    rel = path.relative_to(download_dir)
    target = staging_dir(download_dir) / "replaced" / time.strftime("%Y%m%d-%H%M%S") / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    log.warning("moved %s, which was in the way, to %s", path, target)
    return target


def remove_tree(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def human(size: float) -> str:
    """`1.5 GiB`-style size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
