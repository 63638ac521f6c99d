"""The burst path: the new files of one watcher round, hashed one by one, then seeded and
listed in batches.

One manifest version per file made publishing 5,000 files O(N^2) (each version copied,
signed and served every item); a batch is one manifest version per group, one catalog
transaction and one `add_seeds` call. The first file of a round and anything that is
not a new plain file (a changed file, a folder, a file of `first_pass_min` or more) take
the publisher's one-by-one path; what a round has ready is listed before such a one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshmedia.config import Share
from meshmedia.engine import SourceFile
from meshmedia.engine.building import BuiltTorrent, build_torrent
from meshmedia.errors import EngineError, ManifestError, PublishError, StoreError
from meshmedia.hash_child import HashChild, Lookahead
from meshmedia.manifest import Item, ManifestStore, check_relative_path, utc_now
from meshmedia.store import CatalogEntry, Store

from .seeds import SeedKeeper
from .sources import SourceHasher, not_utf8, regular_files

log = logging.getLogger(__name__)

_FAILURES = (PublishError, ManifestError, EngineError, StoreError, OSError, sqlite3.Error)
"""What publishing one file (or listing one batch) may raise; each is logged and the round
goes on. A `.torrent` row that cannot be written (disk full) is an sqlite3.Error: before it
was caught, it ended the whole round and left the round's files unpublished until a restart
(review 7, finding 1)."""

BATCH_SECONDS = 0.25
"""In a round of many new files, the first batch is listed this long after the round's
first file (listed at once): one manifest version and one catalog transaction for each
batch, not for each file."""
BATCH_MAX_SECONDS = 2.0
"""Each later batch of the round waits twice as long as the one before, up to this: a
5,000-file burst made 24 versions in 8 s, each signed, written, fetched and parsed whole
by every client (all 5,000 items) while the burst went on."""


@dataclass(frozen=True)
class Shares:
    """The share folders of one watcher round, each with its resolved path (resolving
    them for each of 5,000 files cost 0.15 ms) and, from `opened`, an fd of it for the
    round: opening the share folder by its path was 5% of the publishing thread's time
    in a 5,000-file burst, where each walk now starts from a dup of that fd."""

    resolved: list[tuple[Share, Path]]
    fds: dict[Path, int] = field(default_factory=dict)

    @classmethod
    def opened(cls, shares: Sequence[Share]) -> Shares:
        """The shares resolved, each folder opened (one that cannot be is walked by path,
        which then says why); close() them after the round."""
        resolved = [(s, s.path.resolve()) for s in shares]
        fds = {}
        for _, root in resolved:
            try:
                fds[root] = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
        return cls(resolved, fds)

    def close(self) -> None:
        """Close the folders' fds."""
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass(frozen=True)
class Seams:
    """What a round needs from the publisher that owns it."""

    publish_one: Callable[[Path, str | None], object]  # publish()'s path, for the rest
    ca_for: Callable[[str], bytes | None]  # a private group's CA, None for a public one
    magnet: Callable[[str, str, bytes | None, list[str]], str]  # (info hash, name, ca, peers)
    listed: Callable[[list[Path]], None]  # these sources are published now
    took: Callable[[float], None]  # seconds one publish took (metrics)
    first_pass_min: Callable[[], int]  # a file this large takes publish_one (a first pass)


@dataclass(frozen=True)
class _Prepared:
    """A new file hashed, its torrent built, waiting to be seeded and listed with its batch."""

    group: str
    item: Item
    info_hash: str
    source: Path
    started: float
    seed: tuple[BuiltTorrent, Path, list[SourceFile], bytes | None]  # for SeedKeeper.seed_many


class Batches:
    """Publishes the files of watcher rounds, new plain files in batches."""

    def __init__(
        self,
        store: Store,
        hasher: SourceHasher,
        seeds: SeedKeeper,
        manifests: ManifestStore,
        lock: threading.RLock,
        *,
        seams: Seams,
        child: HashChild | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Batches of the publisher whose parts these are; `lock`: its lock, held while a
        batch is seeded and listed; `clock`: seconds, for the batches' spacing."""
        self._store = store
        self._hasher = hasher
        self._seeds = seeds
        self._manifests = manifests
        self._lock = lock
        self._seams = seams
        self._clock = clock
        self._child = child or HashChild()

    def run(
        self, targets: Sequence[tuple[Path, str | None]], peers: list[str], shares: Shares
    ) -> None:
        """Publish every (path, group) of one round; `peers`: what a public magnet names.
        Failures are logged, each naming its file; the others go on."""
        ahead = self._child.lookahead([os.fspath(p) for p, _ in targets[1:]])
        try:
            self._run(targets, peers, shares, ahead)
        finally:
            if ahead is not None:
                ahead.close()

    def _run(
        self,
        targets: Sequence[tuple[Path, str | None]],
        peers: list[str],
        shares: Shares,
        ahead: Lookahead | None,
    ) -> None:
        batch: list[_Prepared] = []
        listed, wait = self._clock(), BATCH_SECONDS
        for index, (path, group) in enumerate(targets):
            try:
                prepared = (
                    self._prepare_new(Path(path), group, peers, shares, ahead) if index else None
                )
            except _FAILURES as exc:
                log.warning("cannot publish %s: %s", path, exc)
                continue
            if prepared is None:
                # A folder, a changed or a large file may take long: what is ready goes first.
                self._flush(batch)
                batch, listed = [], self._clock()
                self._one(Path(path), group)
                continue
            batch.append(prepared)
            if self._clock() - listed >= wait:
                self._flush(batch)
                batch, listed = [], self._clock()
                wait = min(2 * wait, BATCH_MAX_SECONDS)
        self._flush(batch)

    def expect(self, count: int) -> None:
        """`count` files wait for a round: get the hashing child ready for it."""
        self._child.warm(count)

    def close(self) -> None:
        """Stop the hashing child."""
        self._child.close()

    def _one(self, path: Path, group: str | None) -> None:
        try:
            self._seams.publish_one(path, group)
        except _FAILURES as exc:
            log.warning("cannot publish %s: %s", path, exc)

    def _flush(self, batch: list[_Prepared]) -> None:
        """List a batch; if that fails as a whole, each of its files on its own."""
        if not batch:
            return
        try:
            self._list_batch(batch)
        except _FAILURES as exc:
            log.warning("cannot list %d files together (%s): one by one", len(batch), exc)
            for p in batch:
                self._one(p.source, p.group)

    def _prepare_new(
        self,
        path: Path,
        group: str | None,
        peers: list[str],
        shares: Shares,
        ahead: Lookahead | None = None,
    ) -> _Prepared | None:
        """Hash a plain file that has no item yet and build its torrent (seeded with its
        batch); None for anything else, which publish()'s path handles and explains."""
        started = time.monotonic()
        found = self._new_plain_file(path, group, shares)
        if found is None:
            return None
        group, item_path, st = found
        files = self._hasher.file_sources(path, st, ahead.take(path) if ahead else None)
        ca = self._seams.ca_for(group)
        built = build_torrent(files, ca)
        hashes = files[0].hashes
        item = Item(
            title=path.stem,
            torrent=self._seams.magnet(built.info_hash, path.name, ca, peers),
            path=item_path,
            sha256=hashes.sha256,
            size=hashes.size,
            xxh3=hashes.xxh3,
            added_at=utc_now(),
        )
        return _Prepared(group, item, built.info_hash, path, started, (built, path, files, ca))

    def _new_plain_file(
        self, path: Path, group: str | None, shares: Shares
    ) -> tuple[str, str, os.stat_result] | None:
        """(group, item path, lstat) of a regular file in a share with no item yet, small
        enough to hash at once; None otherwise."""
        found = _share_of(path, shares)
        if found is None:
            return None
        share, root, relative = found
        try:
            # From the resolved share folder with O_NOFOLLOW at each step: no link on the
            # way, so `path` is its own resolved path; one lstat says what it is. Six
            # stats and resolves of the path before cost 50 us of each of 5,000 files.
            folder, found_files = regular_files(path, root, shares.fds.get(root))
        except PublishError:
            return None
        if folder or not_utf8(relative):
            return None
        ((_, st),) = found_files
        group = group or share.group
        item_path = checked_path(relative)
        small = 0 < st.st_size < self._seams.first_pass_min()  # large: after a first pass
        if not small or self._store.catalog_entry(group, item_path) is not None:
            return None
        return group, item_path, st

    def _list_batch(self, prepared: list[_Prepared]) -> None:
        """Seed prepared items together, then list them: one manifest version per group,
        one catalog transaction."""
        self._hasher.save_waiting()
        with self._lock:
            refused = self._seeds.seed_many([p.seed for p in prepared])
            for p in prepared:
                if p.info_hash in refused:
                    log.warning("cannot publish %s: %s", p.source, refused[p.info_hash])
                    self._seeds.release(p.info_hash)
            done = self._list([p for p in prepared if p.info_hash not in refused])
            self._save_catalog(done)
            self._seams.listed([p.source for p in done])
        now = time.monotonic()
        for p in done:
            self._hasher.drop(p.source)
            log.info("published %s as %s in %s (%s)", p.source, p.item.path, p.group, p.info_hash)
            self._seams.took(now - p.started)

    def _list(self, batch: list[_Prepared]) -> list[_Prepared]:
        """List the items of a batch, one version per group; returns those listed."""
        done: list[_Prepared] = []
        for group in dict.fromkeys(p.group for p in batch):
            mine = [p for p in batch if p.group == group]
            try:
                self._manifests.update(group, [p.item for p in mine])
                done += mine
            except ManifestError:  # one overlaps: list them one by one
                done += self._list_one_by_one(group, mine)
        return done

    def _list_one_by_one(self, group: str, batch: list[_Prepared]) -> list[_Prepared]:
        done = []
        for p in batch:
            try:
                self._manifests.update(group, [p.item])
                done.append(p)
            except ManifestError as exc:
                log.warning("cannot publish %s: %s", p.source, exc)
                self._seeds.release(p.info_hash)
        return done

    def _save_catalog(self, done: list[_Prepared]) -> None:
        self._store.save_catalogs(
            [CatalogEntry(p.group, p.item.path, p.info_hash, str(p.source), p.item.to_json())
             for p in done]
        )  # fmt: skip


def _share_of(path: Path, shares: Shares) -> tuple[Share, Path, str] | None:
    """(share, its resolved folder, the relative path) of the resolved share folder that
    holds `path` as written (no `..`), or None."""
    text = str(path)
    if "/../" in text or text.endswith("/.."):
        return None
    for share, root in shares.resolved:
        prefix = str(root).rstrip("/") + "/"
        if text.startswith(prefix) and len(text) > len(prefix):
            return share, root, text[len(prefix) :]
    return None


def checked_path(path: str) -> str:
    """`path` if it is a valid item path; PublishError naming why not."""
    try:
        return check_relative_path(path)
    except ManifestError as exc:
        raise PublishError(f"path {path!r}: {exc}") from None


def title_of(source: Path) -> str:
    """An item's default title: a file's name without its extension, a folder's name."""
    return source.stem if source.is_file() else source.name
