"""The answers being sent, and which slow reader goes when the connection cap is full.

A client that reads its answer slowly holds a connection as long as it keeps
reading a little: `send_timeout` is an inactivity timer, re-armed at each drain.
300 such readers of a 2.7 MB manifest (150 kB every 20 s) held every slot of a
300-connection cap: 1 of 32 new clients was answered in 100 s (review12 finding 8).
So when the cap is full and no connection is idle, the answer that has run
longest below `min_rate` (after `grace` seconds) is dropped to make room.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

SCAN = 64  # oldest answers looked at per new connection at the cap (bounded work)


class Sending(Protocol):
    """A connection with an answer under way."""

    answer_began: float

    def delivered(self) -> int:
        """Bytes of the answer the client has taken so far."""

    def abort(self) -> None:
        """Close now."""


class Senders:
    """Connections with an answer under way, oldest first."""

    def __init__(self, min_rate: float, grace: float) -> None:
        """Slow: below `min_rate` bytes/s on average once `grace` seconds have passed."""
        self.min_rate = min_rate
        self.grace = grace
        self._by_age: OrderedDict[Sending, None] = OrderedDict()

    def add(self, conn: Sending) -> None:
        """An answer starts."""
        self._by_age[conn] = None

    def discard(self, conn: Sending) -> None:
        """An answer ended (taken, or the connection closed)."""
        self._by_age.pop(conn, None)

    def __len__(self) -> int:
        """How many answers are under way."""
        return len(self._by_age)

    def slowest(self, now: float | None = None) -> Sending | None:
        """The slowest of the oldest answers that is slow, or None."""
        now = time.monotonic() if now is None else now
        found, rate = None, self.min_rate
        for number, conn in enumerate(self._by_age):
            if number >= SCAN:
                break
            elapsed = now - conn.answer_began
            if elapsed < self.grace:
                break  # the others began later still
            speed = conn.delivered() / elapsed
            if speed < rate:
                found, rate = conn, speed
        return found
