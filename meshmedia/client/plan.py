"""The client's planning: read a fetched manifest, keep it, and turn its items into rows.

Each followed manifest's items are rows of the store's client_items table, one
per (manifest URL, path). `ItemPlanner` compares a new manifest with those rows:
a new or changed item is (re)started, a placed item whose torrent the engine
lost is started again, and an item gone from the manifest stops seeding.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from meshmedia.bounded import ReadError, load_json
from meshmedia.engine import Engine
from meshmedia.errors import MeshmediaError
from meshmedia.manifest import (
    Item,
    Manifest,
    PathSet,
    Rejected,
    RollbackError,
    SignatureError,
    TrustPolicy,
    load_document,
    parse_manifest,
    validate_item,
)
from meshmedia.store import ClientItem, ItemState, Store

from .place import Placer
from .placement import delete_placed, final_path, incomplete_dir, matches, remove_tree
from .selection import Choice, Selection
from .versions import ItemCache

log = logging.getLogger(__name__)

MANIFEST_KEY = "client.manifest:"  # + URL: the last good manifest, as JSON {etag, body}
CANCEL_EVERY = 1000  # items planned between two looks at the stop flag
# A full plan also restarts placed items whose torrent the engine lost; between two
# versions only changed items are planned, so a full one comes at least this often
# (53 ms of CPU for 5,000 items, benchmarks/client_versions.py: 0.01% of a core).
FULL_PLAN_EVERY = 600.0


def saved_manifest(store: Store, url: str) -> tuple[bytes, str | None] | None:
    """The last good manifest of `url` kept in `store` (body, ETag), or None (also
    when what is kept cannot be read: it is then ignored, with a warning)."""
    raw = store.get(MANIFEST_KEY + url)
    if raw is None:
        return None
    try:
        saved = load_json(raw)
        body, etag = saved["body"], saved.get("etag")
        if not isinstance(body, str) or not (etag is None or isinstance(etag, str)):
            raise TypeError("body or etag is not text")
        return body.encode("utf-8"), etag
    except (ReadError, KeyError, TypeError, AttributeError, UnicodeEncodeError) as exc:
        log.warning("ignoring the kept manifest of %s, which cannot be read: %s", url, exc)
        return None


def keep_manifest(store: Store, url: str, body: bytes, etag: str | None) -> None:
    """Keep `body` in `store` as the last good manifest of `url`."""
    text = json.dumps({"etag": etag, "body": body.decode("utf-8-sig")})
    store.put(MANIFEST_KEY + url, text)


def read_manifest(
    url: str, body: bytes, trust: TrustPolicy, cache: ItemCache | None = None
) -> tuple[Manifest, list[Rejected]] | None:
    """Parse a fetched manifest and check its signature; None (logged) when unusable.
    With `cache` (the source's), items unchanged since the last version read are not
    validated again (versions.py)."""
    try:
        doc = load_document(body)  # decoded once, bounded; the signature covers all of it
        trust.admit(url, doc)  # before the items are looked at: a forger gets no further
        if cache is not None:
            manifest, rejected = cache.parse(doc, one_place_per_torrent=True)
        else:
            manifest, rejected = parse_manifest(doc, one_place_per_torrent=True)
    except (SignatureError, RollbackError) as exc:
        log.error("manifest %s refused, keeping the last good one: %s", url, exc)
        return None
    except MeshmediaError as exc:
        log.error("manifest %s is unusable, keeping the last good one: %s", url, exc)
        return None
    except UnicodeError as exc:  # a signed document with text that cannot be encoded
        log.error("manifest %s refused, its signature cannot be checked: %s", url, exc)
        return None
    for bad in rejected:
        log.warning("skipping %s from %s", bad, url)
    return manifest, rejected


@dataclass(frozen=True)
class Planned:
    """What the last plan of a URL left: the items as planned (by path), the rows kept
    though not listed (rejected items), the selection, and when it was made."""

    listed: dict[str, Item]
    unlisted: set[str]
    choice: Choice
    version: int  # the manifest's
    generation: int  # the planner's generation after this plan
    full_at: float  # time.monotonic() of the last plan that looked at every item

    def holds(self, manifest: Manifest, choice: Choice, generation: int) -> bool:
        """Whether the plan of `manifest` may look only at what changed since: a later
        version (the same one applied again is planned in full, which restarts what
        the engine lost), the same selection, no other plan changed rows since, and
        a full plan less than FULL_PLAN_EVERY ago."""
        fresh = time.monotonic() - self.full_at < FULL_PLAN_EVERY
        later = manifest.version > self.version
        return later and choice == self.choice and generation == self.generation and fresh


class ItemPlanner:
    """Brings the client_items rows of a manifest in line with its latest version.

    New and changed items become `queued` rows (the client starts them a few at a
    time); nothing here touches the network.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        placer: Placer,
        *,
        delete_removed: bool,
        stop: threading.Event | None = None,
        selection: Selection | None = None,
    ) -> None:
        """Plan into `store`; `placer` knows what was placed; `stop` cancels a long plan;
        items `selection` does not want are `skipped` rows."""
        self.store = store
        self.selection = selection
        self.engine = engine
        self.placer = placer
        self.download_dir = placer.download_dir
        self.delete_removed = delete_removed
        self.stop = stop or threading.Event()
        self._recorded: set[str] | None = None  # item paths with placed-file records
        self._planned: dict[str, Planned] = {}  # each URL's last plan
        self._generation = 0  # grows with every plan that changed rows

    def plan(
        self, url: str, manifest: Manifest, rejected: Sequence[Rejected] = ()
    ) -> list[ClientItem] | None:
        """Queue new and changed items of `manifest`, drop those it no longer lists.

        Returns the dropped items whose files are to be deleted (`delete_gone`, after
        the caller's lock: deleting may hash), or None when `stop` was set before the
        plan was complete (nothing was dropped then; the next plan finishes the work).
        An item that is `rejected` (or skipped for a clash) is not gone: its row and
        files stay as they were; and while a rejected item has no path to tell which
        row it was, no row is dropped. Only the items that differ from the last plan
        of `url` are looked at, and the rows gone since (`Planned`).
        """
        choice = self.selection.choice(url) if self.selection else Choice()
        last = self._planned.pop(url, None)
        if last is not None and not last.holds(manifest, choice, self._generation):
            last = None
        listed = _listed(manifest)
        todo, current = self._todo(url, manifest, last, listed)
        taken = PathSet("an item of")  # the other manifests' paths
        for other_url, path in self.store.client_item_paths(but=url):
            taken.take(path, other_url)
        queued: list[ClientItem] = []
        unselected: list[ClientItem] = []  # placed items the selection no longer wants
        self._recorded = None
        for number, item in enumerate(todo):
            if number % CANCEL_EVERY == 0 and self.stop.is_set():
                return None
            if (clash := taken.overlap(item.path)) is not None:
                log.warning("skipping %s from %s: %s", item.path, url, clash.reason("an item of"))
                current.pop(item.path, None)  # skipped, not gone: kept as it is
                continue
            known = current.pop(item.path, None)
            self._plan_item(url, item, known, choice, queued, unselected)
        self.store.save_client_items(queued)
        unlisted = set(current)
        _spare_rejected(url, current, rejected)
        for gone in current.values():
            log.info("%s left the manifest %s", gone.path, url)
            self._drop(gone)
            self.store.delete_client_item(gone.url, gone.path)
        if queued or current:  # rows changed (paths the other manifests' plans look at,
            self._generation += 1  # torrents dropped): every other URL's next plan is full
        full_at = time.monotonic() if last is None else last.full_at
        spared = unlisted - set(current)
        self._planned[url] = Planned(
            listed, spared, choice, manifest.version, self._generation, full_at
        )
        placed = [ci for ci in current.values() if ci.state == ItemState.PLACED] + unselected
        return placed if self.delete_removed else []

    def _todo(
        self, url: str, manifest: Manifest, last: Planned | None, listed: dict[str, Item]
    ) -> tuple[Sequence[Item], dict[str, ClientItem]]:
        """The items to plan and the rows they may meet: all of them with no usable
        `last` plan, else the items that are not the very ones planned last time and
        the rows at their paths and at paths no longer `listed`."""
        if last is None:
            return manifest.items, {ci.path: ci for ci in self.store.client_items(url)}
        todo = [item for item in manifest.items if last.listed.get(item.path) is not item]
        gone = [p for p in last.listed if p not in listed]
        gone += [p for p in last.unlisted if p not in listed]
        rows = self.store.client_items_at(url, [item.path for item in todo] + gone)
        return todo, {ci.path: ci for ci in rows}

    def forget(self) -> None:
        """Plan every manifest in full next time (a row was changed from outside)."""
        self._planned.clear()

    def _plan_item(  # noqa: PLR0917 (the loop's state, as plan() holds it)
        self,
        url: str,
        item: Item,
        known: ClientItem | None,
        choice: Choice,
        queued: list[ClientItem],
        unselected: list[ClientItem],
    ) -> None:
        """Plan one item of `url` against its row `known` (None when it has none)."""
        if skip := choice.skip_reason(item.path, item.size):
            self._skip(url, item, known, reason=skip, rows=queued, unselected=unselected)
            return
        if known is not None and known.state != ItemState.SKIPPED and hashes_added(known, item):
            known = replace(known, item=item.to_json())  # under way or placed: goes on
            queued.append(known)
            self._hashes_arrived(known, item)
        if known is not None and known.item == item.to_json():
            if known.state != ItemState.SKIPPED:
                self._keep(known, item, queued)
                return
            log.info("%s from %s is selected now", item.path, url)
        if known is not None and known.info_hash:
            self._drop(known)
        ih = item.info_hash
        queued.append(ClientItem(url, item.path, ih, ItemState.QUEUED, item.to_json()))

    def _skip(
        self,
        url: str,
        item: Item,
        known: ClientItem | None,
        *,
        reason: str,
        rows: list[ClientItem],
        unselected: list[ClientItem],
    ) -> None:
        """An item the selection does not want: a `skipped` row; one under way or placed
        stops (its placed files are kept, or deleted with delete_removed)."""
        same = known is not None and known.error == reason and known.item == item.to_json()
        if same and known is not None and known.state == ItemState.SKIPPED:
            return
        if known is not None and known.state != ItemState.SKIPPED:
            log.info("%s from %s is no longer selected (%s): stopping it", item.path, url, reason)
            self._drop(known)
            if known.state == ItemState.PLACED:
                unselected.append(known)
        ih = item.info_hash
        rows.append(ClientItem(url, item.path, ih, ItemState.SKIPPED, item.to_json(), error=reason))

    def delete_gone(self, gone: Iterable[ClientItem]) -> None:
        """--delete-removed: delete the files this client placed for items gone from
        their manifest (and nothing else)."""
        for ci in gone:
            self._delete_placed(ci)

    def _keep(self, known: ClientItem, item: Item, queued: list[ClientItem]) -> None:
        """An unchanged item: start a placed one again when the engine lost it."""
        if known.state != ItemState.PLACED:
            return
        final = self.download_dir / known.path
        if self._lost(known, final):
            self._drop(known)
            queued.append(replace(known, state=ItemState.QUEUED, attempts=0, next_attempt=0))
        elif known.info_hash and known.path not in self._placed_records():
            self.placer.backfill(known.url, item, known.info_hash, final)

    def _placed_records(self) -> set[str]:
        """The item paths with placed-file records (read once in a plan, when needed)."""
        if self._recorded is None:
            self._recorded = self.store.placed_item_paths()
        return self._recorded

    def _hashes_arrived(self, ci: ClientItem, item: Item) -> None:
        """A later version gave a single file its SHA-256: into the placed file's record
        (kept "" when it was placed without one)."""
        if ci.state != ItemState.PLACED or not item.sha256 or item.files is not None:
            return
        records = [r for r in self.store.placed_files(ci.url, ci.path) if not r.sha256]
        self.store.save_placed_files([replace(r, sha256=item.sha256.lower()) for r in records])

    def _lost(self, ci: ClientItem, final: Path) -> bool:
        """A placed item whose torrent the engine no longer has, or has elsewhere than
        in place (its resume data was saved before the move, then the daemon died)."""
        status = self.engine.status(ci.info_hash) if ci.info_hash else None
        if status is None:
            return True
        return os.path.normpath(status.save_path) != os.path.normpath(final.parent)

    def _drop(self, ci: ClientItem) -> None:
        """Stop seeding an item and delete its partial download."""
        if ci.info_hash and self.engine.status(ci.info_hash) is not None:
            self.engine.remove(ci.info_hash)
        if ci.info_hash:
            remove_tree(incomplete_dir(self.download_dir, ci.info_hash))

    def _delete_placed(self, ci: ClientItem) -> None:
        """--delete-removed: delete the files this client placed and nothing else."""
        records = self.store.placed_files(ci.url, ci.path)
        if not records:
            self._delete_unrecorded(ci)
            return
        for rel in delete_placed(self.download_dir, ci.path, records):
            log.warning("kept %s: it changed since meshmedia placed it", self.download_dir / rel)
        self.store.delete_placed_files(ci.url, ci.path)

    def _delete_unrecorded(self, ci: ClientItem) -> None:
        """An item placed before files were recorded: a single file whose hash still
        matches is deleted; anything else is kept (it cannot be told from the user's)."""
        try:
            item = validate_item(ci.item)
            path = final_path(self.download_dir, item.path)
        except MeshmediaError:
            return
        if item.sha256 and matches(path, item.size, item.sha256, None) is True:
            path.unlink()
            log.info("deleted %s (delete_removed)", path)
        elif path.exists():
            log.warning("kept %s: meshmedia has no record of placing it", path)


HASHES = ("sha256", "xxh3")


def hashes_added(known: ClientItem, item: Item) -> bool:
    """True when `item` is the row's item with only whole-file hashes added (the curator
    lists a large file before its SHA-256, curator/digests.py): the same torrent and
    files, nothing taken away or changed. Such an item is not restarted."""
    new = item.to_json()
    if known.item == new or known.info_hash != item.info_hash:
        return False
    old = known.item
    rest = {k: v for k, v in old.items() if k not in HASHES}
    if rest != {k: v for k, v in new.items() if k not in HASHES}:
        return False
    return all(old.get(k) is None or old.get(k) == new.get(k) for k in HASHES)


def _listed(manifest: Manifest) -> dict[str, Item]:
    return {item.path: item for item in manifest.items}


def _spare_rejected(url: str, current: dict[str, ClientItem], rejected: Sequence[Rejected]) -> None:
    """Take the rows of items that are still listed, only invalid now, out of `current`."""
    if any(bad.path is None for bad in rejected) and current:
        log.warning(
            "keeping %d items that %s no longer lists: it has rejected items without a "
            "path, which may be them",
            len(current),
            url,
        )
        current.clear()
    for bad in rejected:
        if bad.path is not None:
            current.pop(bad.path, None)  # still listed, only invalid now: kept as it is
