"""The engine's BEP 44/46 mutable DHT items: put and get under an ed25519 key and a salt.

libtorrent answers both with alerts on the alert thread: a put with one
`dht_put_alert` (how many nodes stored it), a get with zero or more early
`dht_mutable_item_alert`s (non-authoritative) and a final authoritative one;
when nothing was found that one carries an empty item and sequence number 0.
Callers block on a waiter until the answer or a timeout; several callers may
wait on the same key at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libtorrent as lt

from meshmedia.errors import EngineError

log = logging.getLogger(__name__)

MAX_DHT_VALUE = 995  # BEP 44: the bencoded value at most 1000 bytes; ours is "<len>:<bytes>"
NODES_POLL = 0.5  # the routing table's size has no alert of its own: its counter is polled
_DHT_ALERTS = int(lt.alert.category_t.dht_notification)


@dataclass(frozen=True)
class MutableItem:
    """A mutable item as found in the DHT: its value (our raw bytes) and sequence number."""

    value: bytes
    seq: int


class _DhtWaiter:
    """One caller waiting for a put or a get to finish."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.best: MutableItem | None = None
        self.stored = 0


class DhtItems:
    """Mutable DHT items (BEP 44/46) in one session: put, get, and the routing table."""

    def __init__(self, session: Any, stats: Callable[[float], dict[str, int]]) -> None:
        """Use the DHT of `session`; `stats(timeout)` reads its counters (the node count)."""
        self._session: Any = session
        self._stats = stats
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, bytes, bytes], list[_DhtWaiter]] = {}
        self._alerts_on = False

    def close(self) -> None:
        """Let go of the session (the engine is closing)."""
        self._session = None

    # -- the calls -------------------------------------------------------------
    def put(
        self, secret: bytes, public: bytes, value: bytes, salt: bytes = b"", timeout: float = 60
    ) -> int:
        """Store `value` under (public key, salt); returns how many nodes stored it.

        `secret` is libtorrent's 64-byte expanded ed25519 secret
        (`SigningKey.expanded_secret`); libtorrent signs and bumps the sequence
        number past the one it finds in the DHT. Raises EngineError on bad input
        or when the DHT does not answer within `timeout`.
        """
        if len(secret) != 64 or len(public) != 32:
            raise EngineError("a DHT put needs a 64-byte expanded secret and a 32-byte public key")
        if len(value) > MAX_DHT_VALUE:
            raise EngineError(f"a DHT item holds at most {MAX_DHT_VALUE} bytes, not {len(value)}")
        waiter = self._expect(("put", public, salt))
        self._session.dht_put_mutable_item(secret, public, value, salt)
        self._await(waiter, ("put", public, salt), timeout)
        log.debug("DHT put %s/%s: %d nodes", public.hex()[:16], salt.hex(), waiter.stored)
        return waiter.stored

    def get(self, public: bytes, salt: bytes = b"", timeout: float = 30) -> MutableItem | None:
        """The item under (public key, salt) with the highest sequence number found, or None.

        Blocks until the lookup is complete or `timeout` passes (then the best
        item seen so far, if any). libtorrent checks each item's signature.
        """
        if len(public) != 32:
            raise EngineError("a DHT get needs a 32-byte public key")
        waiter = self._expect(("get", public, salt))
        self._session.dht_get_mutable_item(public, salt)
        self._await(waiter, ("get", public, salt), timeout, raise_on_timeout=False)
        return waiter.best

    def add_node(self, host: str, port: int) -> None:
        """Tell the DHT about a node (e.g. another session in a test)."""
        self._session.add_dht_node((host, int(port)))

    def wait_for_nodes(
        self, count: int, timeout: float, stop: threading.Event | None = None
    ) -> int:
        """Block until the routing table holds `count` nodes, `timeout` passes or `stop`
        is set; returns the number of nodes then."""
        deadline = time.monotonic() + timeout
        stop = stop or threading.Event()
        while True:
            try:
                nodes = int(self._stats(5.0).get("dht.dht_nodes", 0))
            except TimeoutError:
                nodes = 0
            if nodes >= count or time.monotonic() >= deadline or stop.wait(NODES_POLL):
                return nodes

    # -- waiting ---------------------------------------------------------------
    def _expect(self, key: tuple[str, bytes, bytes]) -> _DhtWaiter:
        self._enable_alerts()
        waiter = _DhtWaiter()
        with self._lock:
            self._waiters.setdefault(key, []).append(waiter)
        return waiter

    def _await(
        self,
        waiter: _DhtWaiter,
        key: tuple[str, bytes, bytes],
        timeout: float,
        raise_on_timeout: bool = True,
    ) -> None:
        finished = waiter.done.wait(max(0.0, timeout))
        with self._lock:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(key, None)
        if not finished and raise_on_timeout:
            raise EngineError(f"the DHT did not answer the {key[0]} within {timeout:.0f} s")

    def _enable_alerts(self) -> None:
        """Add the DHT alert category on first use (it is noisy on the public DHT)."""
        if self._alerts_on:
            return
        mask = int(self._session.get_settings()["alert_mask"])
        self._session.apply_settings({"alert_mask": mask | _DHT_ALERTS})
        self._alerts_on = True

    def _waiting(self, key: tuple[str, bytes, bytes]) -> list[_DhtWaiter]:
        with self._lock:
            return list(self._waiters.get(key, ()))

    # -- alert handlers (alert thread; copy everything out at once) ------------
    def on_put(self, alert: Any) -> None:
        """dht_put_alert: how many nodes stored an item."""
        public, salt, stored = bytes(alert.public_key), bytes(alert.salt), int(alert.num_success)
        for waiter in self._waiting(("put", public, salt)):
            waiter.stored = stored
            waiter.done.set()

    def on_mutable_item(self, alert: Any) -> None:
        """dht_mutable_item_alert: an item found (early ones, then the authoritative one)."""
        public, salt = bytes(alert.key), bytes(alert.salt)
        item, seq, final = alert.item, int(alert.seq), bool(alert.authoritative)
        value = bytes(item) if isinstance(item, bytes) else b""  # ours are always strings
        for waiter in self._waiting(("get", public, salt)):
            if seq > 0 and (waiter.best is None or seq > waiter.best.seq):
                waiter.best = MutableItem(value, seq)
            if final:
                waiter.done.set()
