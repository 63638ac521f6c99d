"""What happened to items, for whoever listens: metrics, the --on-placed hook, the webhook.

`ItemEvents` hands each `Placed` and `Failed` to its listeners on the thread that
saw it (the main loop); a listener that raises is logged and never stops the
sync or the other listeners. Listeners must be quick: slow work (a command, an
HTTP call) belongs on a thread of their own (hooks.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshmedia.store import ClientItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placed:
    """An item verified and at its final path."""

    url: str  # the manifest it came from
    group: str  # that manifest's group
    path: str  # the item's path in the manifest
    title: str
    size: int
    final: Path  # where it is now
    seconds: float  # from its last piece (or the start of its check) to placed


@dataclass(frozen=True)
class Failed:
    """An attempt at an item that failed (a hash, a path in the way, a refused torrent),
    or an item that paused (no disk space)."""

    url: str
    group: str
    path: str
    title: str
    reason: str
    retry: bool  # False: refused, not tried again until the manifest changes it
    state: str = "failed"  # the item's state now: failed, refused or paused


Listener = Callable[[Placed | Failed], None]


class ItemEvents:
    """Listeners of Placed and Failed, and the group of each followed manifest."""

    def __init__(self) -> None:
        """No listener yet."""
        self._listeners: list[Listener] = []
        self._groups: dict[str, str] = {}
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every event from now on."""
        with self._lock:
            self._listeners.append(listener)

    def set_group(self, url: str, group: str) -> None:
        """The group of the manifest at `url` (from its latest version)."""
        self._groups[url] = group

    def placed(self, ci: ClientItem, final: Path, seconds: float) -> None:
        """Tell every listener that `ci` is at `final`."""
        size = ci.item.get("size")
        event = Placed(
            ci.url, self._groups.get(ci.url, ""), ci.path, _title(ci),
            size if isinstance(size, int) else 0, final, seconds,
        )  # fmt: skip
        self._emit(event)

    def failed(self, ci: ClientItem, reason: str, *, retry: bool, state: str = "failed") -> None:
        """Tell every listener that an attempt at `ci` failed (or that it paused)."""
        group = self._groups.get(ci.url, "")
        self._emit(Failed(ci.url, group, ci.path, _title(ci), reason, retry, state))

    def _emit(self, event: Placed | Failed) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the sync
                log.exception("a listener of %s failed", type(event).__name__)


def _title(ci: ClientItem) -> str:
    title = ci.item.get("title")
    return title if isinstance(title, str) and title else ci.path
