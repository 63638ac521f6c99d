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
from dataclasses import dataclass
from typing import Any

import libtorrent as lt

from meshmedia.errors import EngineError

log = logging.getLogger(__name__)

MAX_VALUE = 995  # BEP 44: the bencoded value at most 1000 bytes; ours is "<len>:<bytes>"
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


class DhtMixin:
    """Mutable DHT items for Engine (needs the AlertLoop's `_session` and alert dispatch)."""

    _session: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._dht_lock = threading.Lock()
        self._dht_waiters: dict[tuple[str, bytes, bytes], list[_DhtWaiter]] = {}
        self._dht_alerts_on = False
        super().__init__(*args, **kwargs)

    # -- the calls -------------------------------------------------------------
    def dht_put_mutable(
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
        if len(value) > MAX_VALUE:
            raise EngineError(f"a DHT item holds at most {MAX_VALUE} bytes, not {len(value)}")
        waiter = self._dht_expect(("put", public, salt))
        self._session.dht_put_mutable_item(secret, public, value, salt)
        self._dht_await(waiter, ("put", public, salt), timeout)
        log.debug("DHT put %s/%s: %d nodes", public.hex()[:16], salt.decode(), waiter.stored)
        return waiter.stored

    def dht_get_mutable(
        self, public: bytes, salt: bytes = b"", timeout: float = 30
    ) -> MutableItem | None:
        """The item under (public key, salt) with the highest sequence number found, or None.

        Blocks until the lookup is complete or `timeout` passes (then the best
        item seen so far, if any). libtorrent checks each item's signature.
        """
        if len(public) != 32:
            raise EngineError("a DHT get needs a 32-byte public key")
        waiter = self._dht_expect(("get", public, salt))
        self._session.dht_get_mutable_item(public, salt)
        self._dht_await(waiter, ("get", public, salt), timeout, raise_on_timeout=False)
        return waiter.best

    def add_dht_node(self, host: str, port: int) -> None:
        """Tell the DHT about a node (e.g. another session in a test)."""
        self._session.add_dht_node((host, int(port)))

    # -- waiting ---------------------------------------------------------------
    def _dht_expect(self, key: tuple[str, bytes, bytes]) -> _DhtWaiter:
        self._enable_dht_alerts()
        waiter = _DhtWaiter()
        with self._dht_lock:
            self._dht_waiters.setdefault(key, []).append(waiter)
        return waiter

    def _dht_await(
        self,
        waiter: _DhtWaiter,
        key: tuple[str, bytes, bytes],
        timeout: float,
        raise_on_timeout: bool = True,
    ) -> None:
        finished = waiter.done.wait(max(0.0, timeout))
        with self._dht_lock:
            waiters = self._dht_waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._dht_waiters.pop(key, None)
        if not finished and raise_on_timeout:
            raise EngineError(f"the DHT did not answer the {key[0]} within {timeout:.0f} s")

    def _enable_dht_alerts(self) -> None:
        """Add the DHT alert category on first use (it is noisy on the public DHT)."""
        if self._dht_alerts_on:
            return
        mask = int(self._session.get_settings()["alert_mask"])
        self._session.apply_settings({"alert_mask": mask | _DHT_ALERTS})
        self._dht_alerts_on = True

    def _dht_waiting(self, key: tuple[str, bytes, bytes]) -> list[_DhtWaiter]:
        with self._dht_lock:
            return list(self._dht_waiters.get(key, ()))

    # -- alert handlers (alert thread; copy everything out at once) ------------
    def _on_dht_put(self, alert: Any) -> None:
        public, salt, stored = bytes(alert.public_key), bytes(alert.salt), int(alert.num_success)
        for waiter in self._dht_waiting(("put", public, salt)):
            waiter.stored = stored
            waiter.done.set()

    def _on_dht_mutable_item(self, alert: Any) -> None:
        public, salt = bytes(alert.key), bytes(alert.salt)
        item, seq, final = alert.item, int(alert.seq), bool(alert.authoritative)
        value = bytes(item) if isinstance(item, bytes) else b""  # ours are always strings
        for waiter in self._dht_waiting(("get", public, salt)):
            if seq > 0 and (waiter.best is None or seq > waiter.best.seq):
                waiter.best = MutableItem(value, seq)
            if final:
                waiter.done.set()


def wait_for_dht_nodes(engine: Any, count: int, timeout: float) -> int:
    """Block until the engine's DHT routing table holds `count` nodes (or `timeout`)."""
    deadline = time.monotonic() + timeout
    nodes = 0
    while True:
        try:
            nodes = int(engine.stats(timeout=5.0).get("dht.dht_nodes", 0))
        except TimeoutError:
            nodes = 0
        if nodes >= count or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.5)
