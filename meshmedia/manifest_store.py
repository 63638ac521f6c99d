"""The curator's manifests: one JSON file per group, written atomically.

Every real change bumps the version and `updated_at`; a change that changes
nothing does not. Readers can block in `wait_for_change` until a group's
manifest has an ETag other than the one they hold (the server's long-poll).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .config import GROUP_RE
from .errors import ManifestError
from .manifest import Item, Manifest, parse_manifest, utc_now
from .signing import SigningKey

log = logging.getLogger(__name__)


def check_group(group: str) -> str:
    """Return `group` if it is a valid group name (it becomes a file name)."""
    if not isinstance(group, str) or GROUP_RE.match(group) is None:
        raise ManifestError(
            f"group {group!r:.80} is not valid: letters, digits, '.', '_' or '-', at most 64"
        )
    return group


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path`: temp file, fsync, rename, fsync the folder."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ManifestStore:
    """The manifests of every group, cached in memory, one `<group>.json` each on disk."""

    def __init__(self, folder: Path, signer: SigningKey | None = None) -> None:
        """Use (and create) `folder`; files are read lazily, on first use.

        With a `signer`, every version written carries its ed25519 signature.
        """
        self.folder = Path(folder)
        self._signer = signer
        self.folder.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, Manifest] = {}
        self._changed = threading.Condition(threading.Lock())

    def _file(self, group: str) -> Path:
        return self.folder / f"{check_group(group)}.json"

    def _load(self, group: str) -> Manifest:
        """The cached manifest of `group`; read from disk the first time. Lock held."""
        cached = self._cache.get(group)
        if cached is not None:
            return cached
        path = self._file(group)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            manifest = Manifest(group, 0, "", ())
        except OSError as exc:
            raise ManifestError(f"cannot read {path}: {exc.strerror}") from exc
        else:
            manifest = self._parse_file(path, group, data)
        self._cache[group] = manifest
        return manifest

    @staticmethod
    def _parse_file(path: Path, group: str, data: bytes) -> Manifest:
        try:
            manifest, rejected = parse_manifest(data)
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from exc
        for bad in rejected:
            log.warning("manifest %s: skipping %s", path, bad)
        if manifest.group != group:
            log.warning("manifest %s names group %r; using %r", path, manifest.group, group)
            manifest = replace(manifest, group=group)
        return manifest

    def get(self, group: str) -> Manifest:
        """The manifest of `group` (version 0, no items, when none exists)."""
        with self._changed:
            return self._load(check_group(group))

    def exists(self, group: str) -> bool:
        """True when `group` has a manifest in memory or on disk."""
        with self._changed:
            return group in self._cache or self._file(group).is_file()

    def groups(self) -> list[str]:
        """The groups that have a manifest, sorted."""
        with self._changed:
            on_disk = {p.stem for p in self.folder.glob("*.json") if GROUP_RE.match(p.stem)}
            return sorted(on_disk | {g for g, m in self._cache.items() if m.version > 0})

    def _commit(self, old: Manifest, items: list[Item]) -> Manifest:
        """Write `items` as the next version of `old` unless nothing changed. Lock held."""
        if tuple(items) == old.items:
            return old
        new = replace(old, version=old.version + 1, updated_at=utc_now(), items=tuple(items))
        if self._signer is not None:
            new = replace(new, extra={**new.extra, **self._signer.sign(new.to_json())})
        write_atomic(self._file(old.group), new.dumps())
        self._cache[old.group] = new
        self._changed.notify_all()
        log.info("manifest %s: version %d, %d items", new.group, new.version, len(new.items))
        return new

    def upsert(self, group: str, items: Iterable[Item]) -> Manifest:
        """Merge `items` by path: replace the item at the same path, append new ones."""
        return self.update(group, items)

    def remove(self, group: str, paths: Iterable[str]) -> Manifest:
        """Drop the items at `paths` (unknown paths are ignored)."""
        return self.update(group, (), paths)

    def update(self, group: str, items: Iterable[Item], remove: Iterable[str] = ()) -> Manifest:
        """Drop the items at `remove` and merge `items` by path, in one new version.

        One version for both keeps a move from ever showing neither path.
        """
        gone = set(remove)
        with self._changed:
            old = self._load(check_group(group))
            merged = {item.path: item for item in old.items if item.path not in gone}
            for item in items:
                previous = merged.get(item.path)
                merged[item.path] = _with_added_at(item, previous)
            return self._commit(old, list(merged.values()))

    def replace(self, group: str, items: Iterable[Item]) -> Manifest:
        """Make `items` the whole item list (added_at kept for paths already listed)."""
        with self._changed:
            old = self._load(check_group(group))
            new: dict[str, Item] = {}
            for item in items:
                new[item.path] = _with_added_at(item, old.item_for(item.path))
            return self._commit(old, list(new.values()))

    def wait_for_change(self, group: str, etag: str | None, timeout: float) -> Manifest:
        """Block until the manifest's ETag differs from `etag` (or `timeout` passes)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            check_group(group)
            while True:
                manifest = self._load(group)
                left = deadline - time.monotonic()
                if etag is None or manifest.etag != etag or left <= 0:
                    return manifest
                self._changed.wait(left)


def _with_added_at(item: Item, previous: Item | None) -> Item:
    """`item` with an `added_at`: its own, the previous item's at that path, or now."""
    if item.added_at is not None:
        return item
    stamp = previous.added_at if previous is not None and previous.added_at else utc_now()
    return replace(item, added_at=stamp)
