"""File or folder -> v1 torrent from our own hashes -> seeding -> manifest item.

The catalog table (group, path) -> info hash, source and item tells a restarted
curator what it publishes; the hash cache keyed by (dev, inode, size, mtime_ns)
means a restart, a rename or an unchanged file is never hashed again. A file
that is still being written can be followed (`follow`), so that `publish` once
it is closed only hashes the tail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshmedia.config import Config, Share
from meshmedia.engine import Engine, SourceFile
from meshmedia.engine.building import BuiltTorrent, bare_magnet, build_torrent
from meshmedia.errors import ManifestError, PublishError
from meshmedia.hashing import FileHashes
from meshmedia.manifest import (
    Item,
    ManifestStore,
    check_files,
    utc_now,
    validate_item,
)
from meshmedia.store import CatalogEntry, Store

from .addresses import advertised_addresses, magnet_for
from .batches import Batches, Seams, Shares, checked_path, title_of
from .digests import Digests, Pending
from .seeds import SeedKeeper
from .sources import NOT_UTF8, SYMLINK_RULE, SourceHasher, named, not_utf8, symlink_on
from .swarms import PrivateSwarms

log = logging.getLogger(__name__)

FIRST_PASS_MIN = 64 * 1024 * 1024
"""A file at least this large, hashed cold, is listed after its pieces and XXH3 (two threads,
0.62-0.8 s per GiB instead of 1.0-1.3 s); its SHA-256 follows in a later manifest version
(curator/digests.py). Below it the saving is under 40 ms and not worth a second version."""


class Publisher:
    """Publishes files under the share folders and keeps the catalog, the torrents and
    the manifests in step with them. Thread-safe."""

    def __init__(
        self,
        config: Config,
        store: Store,
        engine: Engine,
        manifests: ManifestStore,
        swarms: PrivateSwarms | None = None,
        *,
        restore: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Publish into `manifests`; `swarms`: which groups are private (SSL torrents),
        None: every group public; `restore=False`: seed the catalog later, with
        `restore()` (changes wait for it); `clock`: seconds, for the spacing of a
        round's batches."""
        self._config = config
        self.swarms = swarms
        self._store = store
        self._engine = engine
        self._manifests = manifests
        self._lock = threading.RLock()
        self._hasher = SourceHasher(store)
        self._seeds = SeedKeeper(config.state_dir / "torrents", store, engine)
        self._digests = Digests(store, self._digested)
        self._batches = Batches(
            store, self._hasher, self._seeds, manifests, self._lock,
            seams=Seams(self._publish_one, self._ca_for, self._magnet, self._listed, self._took,
                        lambda: self.first_pass_min),
            clock=clock,
        )  # fmt: skip
        self.first_pass_min = FIRST_PASS_MIN
        self.on_published: Callable[[float], None] | None = None  # seconds a publish took
        self._ready = threading.Event()
        # published() for the watcher's every round and moved event: a query and 5,000
        # Paths a round made a burst of N files cost O(N^2), and a copy for each event
        # 0.78 ms of each file moved into a 5,000-item library (timeit of the copy).
        # Immutable, so handed out as it is; None = read the catalog again.
        self._sources: frozenset[Path] | None = None
        if restore:
            self.restore()

    def restore(self) -> None:
        """Seed every catalog entry the engine did not bring back, list again what a crash
        took out of the manifests; then changes may go ahead."""
        try:
            self._restore()
        finally:
            self._ready.set()

    def _wait_ready(self) -> None:
        if not self._ready.is_set():
            log.info("waiting for the catalog to be restored")
            self._ready.wait()

    @property
    def bytes_hashed(self) -> int:
        """Bytes read from disk for hashing since this publisher started (SHA-256 passes
        included)."""
        return self._hasher.bytes_hashed + self._digests.bytes_read

    # -- the seams -------------------------------------------------------------
    def share_for(self, path: Path) -> Share | None:
        """The share folder `path` lies in (after resolving symlinks), or None."""
        resolved = Path(path).resolve()
        for share in self._config.shares:
            if resolved.is_relative_to(share.path.resolve()):
                return share
        return None

    def publish(
        self,
        path: Path,
        group: str | None = None,
        *,
        title: str | None = None,
        dest_path: str | None = None,
    ) -> Item:
        """Seed a file or folder under a share and list it in the group's manifest.

        The same content at the same path again is a no-op; new content at a
        published path replaces the item. Raises PublishError on bad input.
        """
        self._wait_ready()
        return self._publish(Path(path), group, title, dest_path, added_at=None)

    def publish_many(self, targets: Sequence[tuple[Path, str | None]]) -> None:
        """Publish the files of one watcher round. The first is listed at once; new files
        after it are hashed one by one, then seeded and listed in batches (batches.py).
        Anything else (a changed file, a folder) takes publish()'s path. Failures are
        logged."""
        self._wait_ready()
        peers = advertised_addresses(self._config, self._engine)  # session calls: once a round
        shares = Shares.opened(self._config.shares)
        try:
            with self._hasher.saving_together():
                self._batches.run(targets, peers, shares)
        finally:
            shares.close()

    def expect_many(self, count: int) -> None:
        """The watcher holds `count` files for its coming rounds (publish_many): get
        ready to hash them (batches.py)."""
        self._batches.expect(count)

    def unpublish(self, path: Path) -> None:
        """A source file or folder is gone: drop its items and stop seeding them."""
        self._wait_ready()
        source = _literal(Path(path))
        self._hasher.drop(source)
        with self._lock:
            for entry in self._entries_under(source):
                self._manifests.remove(entry.group, [entry.path])
                self._forget(entry)
                self._seeds.release(entry.info_hash)
                log.info("unpublished %s (%s) from %s", entry.path, entry.info_hash, entry.group)

    def moved(self, old: Path, new: Path) -> None:
        """A published file or folder moved inside the shares: new path, same hashes."""
        self._wait_ready()
        old_source, new_source = _literal(Path(old)), _literal(Path(new))
        self._hasher.drop(old_source)
        with self._lock:
            entries = self._entries_under(old_source)
            if not entries or self.share_for(new_source) is None:
                self.unpublish(old_source)
                if self.share_for(new_source) is not None and new_source.exists():
                    self.publish(new_source)
                return
            for entry in entries:
                self._move_entry(entry, old_source, new_source)

    def follow(self, path: Path) -> None:
        """A file is growing: hash what is on disk now, on a background thread (cheap)."""
        self._hasher.follow(_literal(Path(path)))

    def published(self) -> frozenset[Path]:
        """The source paths of every published item: a snapshot, the same object until
        an item is published or forgotten (asking costs nothing)."""
        with self._lock:
            if self._sources is None:
                self._sources = frozenset(Path(s) for s in self._store.catalog_sources())
            return self._sources

    def seeds(self) -> list[dict[str, Any]]:
        """Active seeds (with the engine's state) and files still being hashed."""
        out: list[dict[str, Any]] = []
        for entry in self._store.catalog():
            status = self._engine.status(entry.info_hash)
            out.append(
                {
                    "group": entry.group,
                    "path": entry.path,
                    "source": entry.source,
                    "info_hash": entry.info_hash,
                    "state": status.state.value if status else "missing",
                    "progress": status.progress if status else 0.0,
                    "upload_rate": status.upload_rate if status else 0,
                    "num_peers": status.num_peers if status else 0,
                }
            )
        out.extend(
            {"source": str(source), "state": "hashing", "hashed": hashed}
            for source, hashed in self._hasher.pending()
        )
        return out

    def torrent_bytes(self, info_hash: str) -> bytes | None:
        """The `.torrent` of a published item, or None."""
        return self._seeds.torrent_bytes(info_hash)

    def wait_digests(self, timeout: float) -> bool:
        """Block until every SHA-256 still to come is in its manifest (True) or `timeout`."""
        return self._digests.wait_idle(timeout)

    def close(self) -> None:
        """Stop following growing files, the SHA-256 passes and the hashing child."""
        self._hasher.close()
        self._digests.close()
        self._batches.close()

    # -- publishing ------------------------------------------------------------
    def _publish(
        self,
        path: Path,
        group: str | None,
        title: str | None,
        dest_path: str | None,
        added_at: str | None,
        *,
        replaces: str | None = None,
    ) -> Item:
        started = time.monotonic()
        link = symlink_on(path.absolute(), self._share_roots())
        if link is not None:
            raise PublishError(f"{link} is a symbolic link; {SYMLINK_RULE}")
        source = path.resolve()
        share = self.share_for(source)
        if share is None:
            raise PublishError(f"{path} is not inside a share folder")
        if source == share.path.resolve():
            raise PublishError(f"{path} is a share folder itself; publish a file or folder in it")
        group = group or share.group
        relative = source.relative_to(share.path.resolve()).as_posix()
        if not_utf8(relative):  # say why, before the path rules refuse its lone surrogates
            raise PublishError(f"{named(source)}: {NOT_UTF8}")
        item_path = checked_path(dest_path or relative)
        files = self._sources_of(source, share)
        extra = _folder_extra(files) if source.is_dir() else {}
        ca = self.swarms.ca_for(group) if self.swarms is not None else None
        built = build_torrent(files, ca)
        with self._lock:
            existing = self._store.catalog_entry(group, item_path)
            absorbed = self._files_of_folder(group, item_path, source)
            if (
                existing is not None
                and existing.info_hash == built.info_hash
                and existing.source == str(source)
                and not absorbed
            ):
                return self._unchanged(existing, built, source, files, ca)
            self._seeds.seed(built, source, files, ca)
            item = Item(
                title=title or title_of(source),
                torrent=self._magnet(built.info_hash, source.name, ca),
                path=item_path,
                sha256=(files[0].hashes.sha256 or None) if _single(files, source) else None,
                size=sum(f.hashes.size for f in files),
                xxh3=files[0].hashes.xxh3 if _single(files, source) else None,
                added_at=added_at or utc_now(),
                extra=extra,
            )
            gone = [replaces] if replaces and replaces != item_path else []
            try:
                manifest = self._manifests.update(group, [item], gone + [e.path for e in absorbed])
            except ManifestError:  # overlaps another item: refused, seed nothing for it
                self._seeds.release(built.info_hash)
                raise
            item = manifest.item_for(item_path) or item
            self._store.save_catalog(
                CatalogEntry(group, item_path, built.info_hash, str(source), item.to_json())
            )
            if self._sources is not None:
                if existing is not None and existing.source != str(source):
                    self._sources = None  # the replaced entry's source may be gone
                else:
                    self._sources |= {source}
            self._let_go(absorbed, item_path)
            if existing is not None and existing.info_hash != built.info_hash:
                self._seeds.release(existing.info_hash)
        self._hasher.drop(source)  # a follow() that raced with this publish
        log.info("published %s as %s in %s (%s)", source, item_path, group, built.info_hash)
        if self.on_published is not None:
            self.on_published(time.monotonic() - started)
        self._sha256_later(group, item, built.info_hash, source, files)
        return item

    def _unchanged(
        self,
        existing: CatalogEntry,
        built: BuiltTorrent,
        source: Path,
        files: Sequence[SourceFile],
        ca: bytes | None,
    ) -> Item:
        """Published already as it is: seed it (again) and keep the item as listed."""
        self._seeds.seed(built, source, files, ca)
        log.debug("%s is already published as %s", source, existing.info_hash)
        item = validate_item(existing.item)
        self._manifests.upsert(existing.group, [item])  # no change, no new version
        self._sha256_later(existing.group, item, built.info_hash, source, files)
        return item

    def _publish_one(self, path: Path, group: str | None) -> Item:
        return self._publish(path, group, None, None, added_at=None)

    def _ca_for(self, group: str) -> bytes | None:
        return self.swarms.ca_for(group) if self.swarms is not None else None

    def _listed(self, sources: list[Path]) -> None:
        """Sources a batch published (lock held)."""
        if self._sources is not None:
            self._sources |= frozenset(sources)

    def _took(self, seconds: float) -> None:
        if self.on_published is not None:
            self.on_published(seconds)

    def _sources_of(self, source: Path, share: Share) -> list[SourceFile]:
        """The hashed files of `source`; a large single file without its SHA-256 yet."""
        try:
            first = source.is_file() and source.stat().st_size >= self.first_pass_min
        except OSError:  # gone meanwhile: sources() says so
            first = False
        return self._hasher.sources(source, share.path.resolve(), first_pass=first)

    def _sha256_later(
        self, group: str, item: Item, info_hash: str, source: Path, files: Sequence[SourceFile]
    ) -> None:
        """A single file listed without its SHA-256: hash it in the background."""
        if item.sha256 is None and item.xxh3 is not None and _single(files, source):
            self._digests.add(Pending(group, item.path, info_hash, source, files[0].hashes))

    def _digested(self, pending: Pending, sha256: str) -> None:
        """The SHA-256 of a file listed without it: into its item, in a new version."""
        with self._lock:
            entry = self._store.catalog_entry(pending.group, pending.item_path)
            if entry is None or (entry.info_hash, entry.source) != (
                pending.info_hash,
                str(pending.source),
            ):
                return  # republished, moved or gone meanwhile
            item = validate_item(entry.item)
            if item.sha256 is not None:
                return
            item = replace(item, sha256=sha256)
            self._manifests.update(pending.group, [item])
            self._store.save_catalog(
                CatalogEntry(pending.group, item.path, entry.info_hash, entry.source,
                             item.to_json())
            )  # fmt: skip
        log.info("SHA-256 of %s listed in %s", item.path, pending.group)

    def _magnet(
        self, info_hash: str, name: str, ca: bytes | None, peers: list[str] | None = None
    ) -> str:
        """A public item's magnet names the file and the curator; a private one's neither
        (only members read the manifest, but a magnet travels: privacy.md 3.10)."""
        if ca is not None:
            return bare_magnet(info_hash)
        if peers is None:
            peers = advertised_addresses(self._config, self._engine)
        return magnet_for(info_hash, name, peers)

    def _move_entry(self, entry: CatalogEntry, old_root: Path, new_root: Path) -> None:
        old_source = Path(entry.source)
        new_source = new_root / old_source.relative_to(old_root)
        old_share = self.share_for(old_source)
        old_default = (
            old_source.relative_to(old_share.path.resolve()).as_posix() if old_share else None
        )
        custom_path = entry.path if entry.path != old_default else None
        custom_title = entry.item.get("title")
        if custom_title == title_of(old_source):
            custom_title = None
        self._forget(entry)
        self._publish(
            new_source,
            entry.group,
            custom_title,
            custom_path,
            entry.item.get("added_at"),
            replaces=entry.path if custom_path is None else None,
        )
        self._seeds.release(entry.info_hash)

    def _files_of_folder(self, group: str, item_path: str, source: Path) -> list[CatalogEntry]:
        """The items of `group` published from files inside the folder `source`: a
        folder item takes them over (a client cannot place `Show` and `Show/ep1.mkv`)."""
        if not source.is_dir():
            return []
        return [
            e
            for e in self._entries_under(source)
            if e.group == group and e.path != item_path and Path(e.source) != source
        ]

    def _let_go(self, entries: list[CatalogEntry], folder_item: str) -> None:
        """Forget file items a folder item took over, and stop seeding their torrents."""
        for entry in entries:
            self._forget(entry)
            self._seeds.release(entry.info_hash)
            log.info("%s in %s is now part of folder item %s", entry.path, entry.group, folder_item)

    def _forget(self, entry: CatalogEntry) -> None:
        """Drop a catalog entry (and the cached source list)."""
        self._store.delete_catalog(entry.group, entry.path)
        self._sources = None

    def _share_roots(self) -> list[Path]:
        """Every share folder as configured and resolved (links above a share are the user's)."""
        shares = self._config.shares
        return [s.path.absolute() for s in shares] + [s.path.resolve() for s in shares]

    def _entries_under(self, source: Path) -> list[CatalogEntry]:
        """The items published from `source` or from a file in the folder `source`."""
        return self._store.catalog_under(str(source))

    def _restore(self) -> None:
        """Seed every catalog entry the engine did not bring back from its resume data,
        and list again every catalog item a crash took out of its manifest."""
        entries = self._store.catalog()
        self._relist_missing(entries)
        for entry in entries:
            source = Path(entry.source)
            if not self._fits_its_group(entry):
                self._rebuild(entry)
            elif self._engine.status(entry.info_hash) is None and source.exists():
                try:
                    ca = self.swarms.ca_for(entry.group) if self.swarms is not None else None
                    self._seeds.ensure_seeding(entry.info_hash, source, private_ca=ca)
                except PublishError as exc:
                    log.warning("cannot seed %s again: %s", entry.source, exc)
            self._digest_again(entry)

    def _digest_again(self, entry: CatalogEntry) -> None:
        """A single file listed without its SHA-256 when the curator stopped: hash it now
        (no pieces: the hash cache row is left to the next publish)."""
        item, source = entry.item, Path(entry.source)
        if item.get("sha256") is None and item.get("xxh3") and "files" not in item:
            hashes = FileHashes(int(item.get("size") or 0), 0, (), "", str(item["xxh3"]))
            if source.is_file():
                self._digests.add(Pending(entry.group, entry.path, entry.info_hash, source, hashes))

    def _fits_its_group(self, entry: CatalogEntry) -> bool:
        """Whether the entry's torrent is SSL exactly when its group is private (a group
        made private, or public, since it was published is not)."""
        data = self._seeds.torrent_bytes(entry.info_hash)
        if self.swarms is None or data is None:
            return True
        return self.swarms.fits(entry.group, data)

    def _rebuild(self, entry: CatalogEntry) -> None:
        """Publish an entry again as its group now needs it (from the hash cache: nothing
        is read again): a new info hash replaces the old torrent, which stops seeding."""
        log.warning("%s in %s changes swarm (private or public): rebuilt", entry.path, entry.group)
        source = Path(entry.source)
        if not source.exists():
            return
        title = entry.item.get("title")
        try:
            self._publish(source, entry.group, title, entry.path, entry.item.get("added_at"))
        except PublishError as exc:
            log.warning("cannot publish %s again: %s", entry.source, exc)

    def _relist_missing(self, entries: list[CatalogEntry]) -> None:
        missing: dict[str, list[Item]] = {}
        listed: dict[str, set[str]] = {}  # item_for per entry: 5,000 x 5,000 comparisons
        for entry in entries:
            if entry.group not in listed:
                listed[entry.group] = {i.path for i in self._manifests.get(entry.group).items}
            if entry.path not in listed[entry.group]:
                try:
                    missing.setdefault(entry.group, []).append(validate_item(entry.item))
                except ManifestError as exc:
                    log.warning("catalog item %s in %s: %s", entry.path, entry.group, exc)
        for group, items in missing.items():
            log.warning("manifest %s lacked %d published items; listed again", group, len(items))
            self._manifests.update(group, items)


def _literal(path: Path) -> Path:
    """`path` with its folder resolved but not its last name: a file replaced by a
    symbolic link is that file gone, never the link's target."""
    return path.absolute().parent.resolve() / path.name


def _single(files: Sequence[SourceFile], source: Path) -> bool:
    """True for a single-file item (whole-file hashes in the item, not per file)."""
    return len(files) == 1 and source.is_file()


def _folder_extra(files: Sequence[Any]) -> dict[str, Any]:
    """Per-file sizes and hashes of a folder item (older readers ignore unknown fields).

    Checked as clients check them (`check_files`: each path like an item path, at
    most MAX_FILES): a folder a client would refuse is refused here, naming why.
    """
    listed = [
        {
            "path": f.name.split("/", 1)[1],
            "size": f.hashes.size,
            "sha256": f.hashes.sha256,
            "xxh3": f.hashes.xxh3,
        }
        for f in files
    ]
    try:
        check_files(listed, None)
    except ManifestError as exc:
        raise PublishError(f"cannot publish this folder: {exc}") from None
    return {"files": listed}
