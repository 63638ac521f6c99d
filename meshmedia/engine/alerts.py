"""The engine's alert thread: one loop, one explicit dispatch table, handlers that never kill it.

The table maps libtorrent alert type names (`"torrent_finished_alert"`) to the
handlers the engine's components offer; the facade writes it out in one place
(session.py `_alert_table`), so every handler has a caller grep can find, and a
test checks that each name is an alert type of the installed libtorrent.

An alert is valid only until the next `pop_alerts()` (touching it later crashes
the process), so every handler copies what it needs out of its alert at once
and passes plain values on. A slow handler, a queue that comes near its
`alert_queue_size`, and alerts libtorrent had to drop are each logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[Any], None]

WAIT_MS = 100
SLOW_HANDLER = 0.1
NEAR_FULL = 0.8
"""A batch of alerts this large a fraction of alert_queue_size is logged: the next may drop."""
WARN_EVERY = 60.0


@dataclass(frozen=True)
class Tick:
    """Something the alert thread does every `interval` seconds (first after `first`)."""

    interval: float
    callback: Callable[[], None]
    first: float | None = None  # None: after one interval


class AlertLoop:
    """Waits for alerts, dispatches each by its type name, and runs the periodic ticks."""

    def __init__(
        self,
        session: Any,
        handlers: Mapping[str, Handler],
        ticks: Sequence[Tick] = (),
        after_batch: Sequence[Callable[[], None]] = (),
    ) -> None:
        """Dispatch the alerts of `session` through `handlers`; start() starts the thread.
        `after_batch`: called after each batch of alerts is handled (work the handlers
        gathered, done once a batch: a burst of 5,000 new torrents brought 65,000 alerts)."""
        self._session: Any = session
        self._handlers = {**handlers, "alerts_dropped_alert": self._on_alerts_dropped}
        self._ticks = list(ticks)
        self._after_batch = list(after_batch)
        self._capacity = int(session.get_settings()["alert_queue_size"])
        self._warned_at = -WARN_EVERY
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshmedia-alerts", daemon=True)

    @property
    def names(self) -> tuple[str, ...]:
        """The alert type names the table handles."""
        return tuple(self._handlers)

    def start(self) -> None:
        """Start the alert thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the alert thread, wait for it, and let go of the session."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._session = None
        self._ticks.clear()

    def _run(self) -> None:
        start = time.monotonic()
        due = [start + (t.interval if t.first is None else t.first) for t in self._ticks]
        while not self._stop.is_set():
            self._session.wait_for_alert(WAIT_MS)
            alerts = self._session.pop_alerts()
            self._check_backlog(len(alerts))
            for alert in alerts:
                self._handle(alert)
            if alerts:
                for work in self._after_batch:
                    self._guarded(work, f"after alerts {work!r}")
            now = time.monotonic()
            for number, tick in enumerate(self._ticks):
                if now >= due[number]:
                    due[number] = now + tick.interval
                    self._guarded(tick.callback, f"tick {tick.callback!r}")

    def _handle(self, alert: Any) -> None:
        name = type(alert).__name__
        handler = self._handlers.get(name)
        if handler is not None:
            self._guarded(lambda: handler(alert), f"handler for {name}")

    @staticmethod
    def _guarded(work: Callable[[], None], what: str) -> None:
        started = time.monotonic()
        try:
            work()
        except Exception:
            log.exception("%s failed", what)
        elapsed = time.monotonic() - started
        if elapsed > SLOW_HANDLER:
            log.warning("%s took %.3f s", what, elapsed)

    def _check_backlog(self, count: int) -> None:
        """Warn (once a minute at most) when one batch nearly filled the queue."""
        now = time.monotonic()
        if count >= NEAR_FULL * self._capacity and now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "the alert queue held %d of at most %d alerts: the engine falls behind"
                " (alert_queue_size)",
                count,
                self._capacity,
            )

    def _on_alerts_dropped(self, alert: Any) -> None:
        log.warning(
            "libtorrent dropped alerts, the queue was full (alert_queue_size %d): %s",
            self._capacity,
            alert.message(),
        )
