"""The client's items between wakes: the ones its main loop works on, and their bookkeeping.

The main loop wakes on every engine event and, while a finished download waits
to be placed, every 20 ms. What it needs on a wake: the downloading items (at
most MAX_ACTIVE) and whether a waiting item (queued, failed, paused) may be due.
Both are read through the store's indexes when something changes (a plan, a
state saved, a job done) and kept in `ActiveItems`, so a wake in which nothing
changed reads nothing from the database, however many items are placed.
`Ledger` saves each state change and keeps `ActiveItems` in step with it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from meshmedia.store import ClientItem, ItemState, Store

from .events import ItemEvents

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(manifest URL, item path): one row of client_items."""

DOWNLOADING = (ItemState.DOWNLOADING,)
WAITING = (ItemState.QUEUED, ItemState.FAILED, ItemState.PAUSED)
MAX_RETRY = 6 * 3600.0
NEVER = 1e18  # next_attempt of a refused item (a finite number: JSON has no Infinity)


def key_of(ci: ClientItem) -> Key:
    """The item's row key."""
    return ci.url, ci.path


@dataclass
class Notes:
    """What the main loop learnt about one download, so that it does not ask again."""

    finished: bool = False  # the engine said finished: every piece is on disk
    looked: bool = False  # what is at the final path was judged (adopted or not there)
    recovering: bool = False  # the files at the final path are being checked (a worker)
    names_checked: bool = False  # the torrent's own file names were checked
    space_checked: bool = False  # the disk had room for what it still needs
    dialed: float = 0.0  # time.monotonic() of the last dial of its x.pe peers
    asked_dht: float = 0.0  # time.monotonic() of its last DHT announce (peers in other homes)
    finished_at: float = 0.0  # time.monotonic() when the engine said finished
    placing_at: float = 0.0  # time.monotonic() when its placement started


@dataclass(frozen=True)
class Problem:
    """Why an item did not get on; `retry` is False when trying again cannot help."""

    reason: str
    retry: bool = True

    def __str__(self) -> str:
        """The reason."""
        return self.reason


class ActiveItems:
    """The downloading items by key, notes on their downloads, and when a waiting item may
    next be due."""

    def __init__(self, store: Store) -> None:
        """Read the downloading items of `store` (through its state index)."""
        self._store = store
        self._downloading: dict[Key, ClientItem] = {}
        self._notes: dict[str, Notes] = {}
        self._due = threading.Lock()
        self._due_at = 0.0  # time.time() before which no waiting item can start
        self._changes = 0  # how often something may have become due (any thread)
        self.reload()

    def reload(self) -> None:
        """Read the downloading items again (after a plan changed rows); look for due ones."""
        self._downloading = {key_of(ci): ci for ci in self._store.client_items_in(DOWNLOADING)}
        self.due_now()

    def downloading(self) -> list[ClientItem]:
        """The items downloading now."""
        return list(self._downloading.values())

    def __len__(self) -> int:
        return len(self._downloading)

    def notes(self, ih: str) -> Notes:
        """What was learnt about the download of `ih` (nothing yet: fresh Notes)."""
        return self._notes.setdefault(ih, Notes())

    def saved(self, ci: ClientItem) -> None:
        """Follow a state just saved for `ci`."""
        if ci.state == ItemState.DOWNLOADING:
            self._downloading[key_of(ci)] = ci
        elif self._downloading.pop(key_of(ci), None) is not None and ci.info_hash:
            self._notes.pop(ci.info_hash, None)  # out of the engine: learn afresh next time
        if ci.state in WAITING:
            with self._due:
                self._due_at = min(self._due_at, ci.next_attempt)
                self._changes += 1

    def due_now(self) -> None:
        """Look for due items on the next wake (a plan, a job finished on a worker)."""
        with self._due:
            self._due_at = 0.0
            self._changes += 1

    def due(self, now: float) -> tuple[bool, int]:
        """Whether a waiting item may be due at `now`, and a mark for `nothing_due_until`."""
        with self._due:
            return now >= self._due_at, self._changes

    def nothing_due_until(self, when: float, mark: int) -> None:
        """No waiting item is due before `when`, as found since `due` gave `mark` (unless
        something changed meanwhile: then the next wake looks again)."""
        with self._due:
            if self._changes == mark:
                self._due_at = when


class Ledger:
    """Saves the state changes of items, with the retry schedule of failed and paused ones."""

    def __init__(
        self,
        store: Store,
        active: ActiveItems,
        *,
        retry_base: float,
        pause_for: float,
        events: ItemEvents | None = None,
    ) -> None:
        """A failed item is tried again after `retry_base` seconds, doubling up to
        MAX_RETRY; a paused one (no disk space) after `pause_for`. Each failure is
        told to `events`."""
        self._store = store
        self._active = active
        self.events = events or ItemEvents()
        self.retry_base = retry_base
        self._pause_for = pause_for

    def save(self, ci: ClientItem, state: ItemState, **changes: Any) -> ClientItem:
        """Store `ci` in `state` (with other fields changed) and return it."""
        saved = replace(ci, state=state, **changes)
        self._store.save_client_item(saved)
        self._active.saved(saved)
        return saved

    def fail(self, ci: ClientItem, error: str | Problem) -> None:
        """A failed attempt: retried with backoff, or refused when retrying cannot help."""
        attempts = ci.attempts + 1
        if isinstance(error, Problem) and not error.retry:
            log.error("%s refused: %s (skipped until the manifest changes it)", ci.path, error)
            self.save(
                ci, ItemState.REFUSED, error=str(error), attempts=attempts, next_attempt=NEVER
            )
            self.events.failed(ci, str(error), retry=False, state="refused")
            return
        delay = min(self.retry_base * 2 ** (attempts - 1), MAX_RETRY)
        log.error("%s failed: %s (retry in %.0f s)", ci.path, error, delay)
        next_attempt = time.time() + delay
        self.save(
            ci, ItemState.FAILED, error=str(error), attempts=attempts, next_attempt=next_attempt
        )
        self.events.failed(ci, str(error), retry=True)

    def pause(self, ci: ClientItem, reason: str) -> None:
        """Not now (no disk space): tried again after `pause_for` seconds."""
        log.warning("%s paused: %s", ci.path, reason)
        next_attempt = time.time() + self._pause_for
        self.save(ci, ItemState.PAUSED, error=reason, next_attempt=next_attempt)
        if ci.state != ItemState.PAUSED:  # told once when it pauses, not on every retry
            self.events.failed(ci, reason, retry=True, state="paused")
