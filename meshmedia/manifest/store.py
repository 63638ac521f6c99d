"""The curator's manifests: one JSON file per group, written atomically.

Every real change bumps the version and `updated_at`; a change that changes
nothing does not. Readers can block in `wait_for_change` until a group's
manifest has an ETag other than the one they hold (the server's long-poll).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from operator import methodcaller
from pathlib import Path

from meshmedia.config import GROUP_RE
from meshmedia.errors import ManifestError
from meshmedia.private_files import private_dir

from .durability import BLOCK, Flusher, VersionBook, write_atomic
from .format import Item, Manifest, PathSet, parse_manifest, utc_now
from .signing import SigningKey

log = logging.getLogger(__name__)


def check_group(group: str) -> str:
    """Return `group` if it is a valid group name (it becomes a file name)."""
    if not isinstance(group, str) or GROUP_RE.match(group) is None:
        raise ManifestError(
            f"group {group!r:.80} is not valid: letters, digits, '.', '_' or '-', at most 64"
        )
    return group


class ManifestStore:
    """The manifests of every group, cached in memory, one `<group>.json` each on disk.

    A new version is served from memory at once and written to disk in the
    background (durability.py); `flush()` and `close()` wait for that, and
    the HTTP routes call `flush()` before they acknowledge a change. Versions
    never go backwards, even when a crash loses the last file written.
    """

    def __init__(self, folder: Path, signer: SigningKey | None = None) -> None:
        """Use (and create) `folder`; files are read lazily, on first use.

        With a `signer`, every version written carries its ed25519 signature.
        """
        self.folder = Path(folder)
        self._signer = signer
        private_dir(self.folder)
        self._cache: dict[str, Manifest] = {}
        # path -> item of each cached manifest, in its order: an update copies it (C)
        # instead of rebuilding it item by item (0.9 ms of each publish at 3,000 items)
        self._index: dict[str, dict[str, Item]] = {}
        self._base: dict[str, int] = {}
        self._peers: list[str] | None = None  # what every new version advertises
        self._changed = threading.Condition(threading.Lock())
        self._book = VersionBook(self.folder)
        self._flusher: Flusher | None = Flusher(self._book)

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
            manifest = self._parse_or_set_aside(path, group, data)
        mark = self._book.mark(group)
        if mark > manifest.version:
            manifest = self._continue_above(manifest, mark)
        self._base[group] = manifest.version
        self._cache[group] = manifest
        self._index[group] = {item.path: item for item in manifest.items}
        return manifest

    def _continue_above(self, manifest: Manifest, mark: int) -> Manifest:
        """After an unclean stop, the items on disk as version `mark + 1`, written now.

        Versions up to `mark` may have been served before the crash (a watcher publish
        is served before it is on disk): serving the older file as it is would make
        the version go backwards for clients that saw a later one. Lock held.
        """
        version = mark + 1
        log.warning(
            "manifest %s: not closed cleanly (version %d on disk, up to %d reserved);"
            " serving its %d items as version %d",
            manifest.group,
            manifest.version,
            mark,
            len(manifest.items),
            version,
        )
        self._book.record({manifest.group: version + BLOCK - 1})
        new = self._stamped(manifest, version, manifest.items)
        write_atomic(self._file(manifest.group), new.dumps())
        return new

    def _stamped(self, old: Manifest, version: int, items: tuple[Item, ...]) -> Manifest:
        """`old` with these items as `version`, dated now and signed when there is a key."""
        new = replace(old, version=version, updated_at=utc_now(), items=items)
        if self._signer is not None:
            # signed over dumps() of the manifest without its signature: the items' cached
            # JSON; canonical_bytes(to_json()) serialised all 5,000 items for each version
            # (16% of the curator's CPU while 5,000 files were published)
            bare = replace(new, extra={k: v for k, v in new.extra.items() if k != "signature"})
            signature = self._signer.signature_of(bare.dumps())
            new = replace(bare, extra={**bare.extra, "signature": signature})
        return new

    def _parse_or_set_aside(self, path: Path, group: str, data: bytes) -> Manifest:
        """Parse a manifest file; one that is not a manifest (a crash can leave an empty
        file) is renamed to `<name>.broken` and the group starts from no items."""
        try:
            return self._parse_file(path, group, data)
        except ManifestError as exc:
            aside = path.with_name(path.name + ".broken")
            path.replace(aside)
            log.error("%s; renamed it to %s, the group starts empty", exc, aside.name)
            return Manifest(group, 0, "", ())

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
            cached = self._cache.get(group)
            return (cached is not None and cached.version > 0) or self._file(group).is_file()

    def groups(self) -> list[str]:
        """The groups that have a manifest, sorted."""
        with self._changed:
            on_disk = {p.stem for p in self.folder.glob("*.json") if GROUP_RE.match(p.stem)}
            return sorted(on_disk | {g for g, m in self._cache.items() if m.version > 0})

    def preload(self, groups: Iterable[str]) -> None:
        """Read these groups and reserve their next versions now, not on the first publish."""
        with self._changed:
            for group in groups:
                self._load(check_group(group))
                self._reserve(group, self._base[group] + 1)

    def _reserve(self, group: str, version: int) -> None:
        """Make sure `version` is covered by a durable reservation. Lock held."""
        mark = self._book.mark(group)
        if version > mark:
            self._book.record({group: version + BLOCK - 1})
        elif version > mark - BLOCK // 2 and self._flusher is not None:
            self._flusher.reserve(group, mark + BLOCK)

    def _commit(
        self,
        old: Manifest,
        items: list[Item],
        index: dict[str, Item] | None = None,
        base: Manifest | None = None,
    ) -> Manifest:
        """Write `items` as the next version of `old` (or of `base`, `old` with other
        top-level fields) unless nothing changed (`index`: the same items by path, when
        the caller has it). Lock held."""
        if base is None and self._peers is not None and old.extra.get("peers") != self._peers:
            # the first item's version already says where the curator is (not one more)
            base = replace(old, extra={**old.extra, "peers": list(self._peers)})
        if tuple(items) == old.items and (base is None or base.extra == old.extra):
            return old
        version = self._base[old.group] + 1  # never below old.version (see _load)
        self._reserve(old.group, version)
        new = self._stamped(base or old, version, tuple(items))
        if self._flusher is not None:
            self._flusher.write(self._file(old.group), new.dumps)
        else:
            write_atomic(self._file(old.group), new.dumps())
        self._cache[old.group] = new
        self._index[old.group] = index if index is not None else {i.path: i for i in items}
        self._base[old.group] = version
        self._changed.notify_all()
        log.info("manifest %s: version %d, %d items", new.group, new.version, len(new.items))
        return new

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every version handed out before this call is on disk (later
        writes are not waited for); False on timeout. An answer that acknowledges
        a change calls this first."""
        return self._flusher.flush(timeout) if self._flusher is not None else True

    @property
    def write_error(self) -> str | None:
        """Why the last background write failed, while it keeps failing; else None."""
        return self._flusher.error if self._flusher is not None else None

    def close(self) -> None:
        """Write everything durably and record a clean stop (the next start goes on at +1).

        Later changes are still accepted, written with fsync on the caller's thread.
        """
        with self._changed:
            flusher, self._flusher = self._flusher, None
        if flusher is None:
            return
        flusher.close()
        with self._changed:
            self._book.record(dict(self._base))  # the highest version handed out

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
        with self._changed:
            old = self._load(check_group(group))
            merged = dict(self._index[old.group])  # same order as old.items
            for path in remove:
                merged.pop(path, None)
            items = list(items)
            for item in items:
                previous = merged.get(item.path)
                merged[item.path] = _with_added_at(item, previous)
            check_placeable(items, merged)
            return self._commit(old, list(merged.values()), merged)

    def use_peers(self, peers: Sequence[str]) -> None:
        """Make every later version of any group carry `peers` (top-level) as well."""
        with self._changed:
            self._peers = list(peers)

    def set_peers(self, group: str, peers: Sequence[str]) -> Manifest:
        """Set the top-level `peers` list (where the curator is reached, `IP:PORT` each) in
        a new version, unless it already says that. Readers that do not know it ignore it."""
        with self._changed:
            old = self._load(check_group(group))
            base = replace(old, extra={**old.extra, "peers": list(peers)})
            return self._commit(old, list(old.items), base=base)

    def replace(self, group: str, items: Iterable[Item]) -> Manifest:
        """Make `items` the whole item list (added_at kept for paths already listed)."""
        with self._changed:
            old = self._load(check_group(group))
            new: dict[str, Item] = {}
            for item in items:
                new[item.path] = _with_added_at(item, old.item_for(item.path))
            check_placeable(new.values(), new)
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


STAGING = ".meshmedia"
"""The client's own folder in its download dir (staging, replaced files): no item's."""


def check_curated_path(path: str) -> str:
    """Return `path` unless a curator must not list it: inside the client's `.meshmedia/`
    (any case: a client may store on a case-insensitive disk). Text that is not UTF-8 is
    refused for every path by manifest.check_relative_path already."""
    if path.split("/", 1)[0].casefold() == STAGING:
        raise ManifestError(f"path {path!r:.200} is inside {STAGING}/, the client's own folder")
    return path


def check_placeable(items: Iterable[Item], listed: Mapping[str, Item]) -> None:
    """Refuse a new item a client could not place beside the listed ones (`listed`
    holds them all, the new ones too): a reserved path, or a path that is a folder of
    another item's path or lies inside one (`Show` and `Show/ep1.mkv`): PathSet's rule.

    The new items make the PathSet; only the other listed paths that start like a
    new one are walked through it (`str.startswith` with a few prefixes is C: a
    publish into 40,000 listed items takes 5-10 ms CPU, as the scan before it did,
    load 5.8; 40,000 new ones 180 ms, 110-190 before)."""
    new = PathSet()
    for item in items:
        check_curated_path(item.path)
        if (overlap := new.overlap(item.path)) is not None:
            raise _overlapping(item.path, overlap.other)
        new.take(item.path, item.path)
    firsts = {path.partition("/")[0] for path in new.paths}
    for path in _starting_with(listed, firsts):
        if path not in new.paths and (overlap := new.overlap(path)) is not None:
            raise _overlapping(overlap.other, path)


def _starting_with(paths: Iterable[str], firsts: set[str]) -> Iterable[str]:
    """The paths whose first segment may be one of `firsts` (and a few more)."""
    if len(firsts) <= 8:
        return filter(methodcaller("startswith", tuple(firsts)), paths)  # C, 3x the genexpr
    return (path for path in paths if path.partition("/")[0] in firsts)


def _overlapping(path: str, other: str) -> ManifestError:
    return ManifestError(
        f"item {path!r:.200} overlaps item {other!r:.200}: one would be a folder"
        " holding the other, and no client can place both; remove one first"
    )


def _with_added_at(item: Item, previous: Item | None) -> Item:
    """`item` with an `added_at`: its own, the previous item's at that path, or now."""
    if item.added_at is not None:
        return item
    stamp = previous.added_at if previous is not None and previous.added_at else utc_now()
    return replace(item, added_at=stamp)
