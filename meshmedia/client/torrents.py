"""The `.torrent` files of items whose torrent is an http(s) URL, fetched in the background.

Fetching one takes network time (and a hostile server may trickle it until the
overall deadline of torrentinfo.fetch_torrent cuts it off), so it never happens
on the client's main loop or under its lock: `get(url)` answers at once, with
the bytes, a failure message, or None while the fetch is still under way (the
item stays queued and `on_done` wakes the main loop when the answer is in).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import requests

from meshmedia.bounded import bounded_session
from meshmedia.errors import EngineError
from meshmedia.torrentinfo import fetch_torrent

log = logging.getLogger(__name__)

WORKERS = 2


class TorrentFiles:
    """Fetches `.torrent` URLs on WORKERS daemon threads and holds each answer once."""

    def __init__(
        self,
        on_done: Callable[[], None],
        http: requests.Session | None = None,
        deadline: float | None = None,
    ) -> None:
        """Call `on_done()` after each fetch; `http` replaces the per-worker sessions."""
        self._on_done = on_done
        self._http = http
        self.deadline = deadline  # None: torrentinfo.TORRENT_DEADLINE
        self._lock = threading.Lock()
        self._answers: dict[str, bytes | str] = {}
        self._pending: set[str] = set()
        self._queue: queue.Queue[str] = queue.Queue()
        self._workers: list[threading.Thread] = []

    def get(self, url: str) -> bytes | str | None:
        """The `.torrent` at `url` (bytes), why it could not be fetched (str), or None
        while it is being fetched. Each answer is handed out once."""
        with self._lock:
            if url in self._answers:
                return self._answers.pop(url)
            if url not in self._pending:
                self._pending.add(url)
                self._queue.put(url)
                self._start_workers()
        return None

    def _start_workers(self) -> None:
        while len(self._workers) < WORKERS:
            worker = threading.Thread(target=self._run, name="torrent fetch", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _run(self) -> None:
        session = self._http or bounded_session()
        while True:
            url = self._queue.get()
            try:
                answer: bytes | str = fetch_torrent(session, url, self.deadline)
            except EngineError as exc:
                answer = str(exc)
            except Exception as exc:  # a worker must outlive any answer
                log.exception("fetching the torrent %s failed", url)
                answer = f"cannot fetch the torrent {url}: {type(exc).__name__}: {exc}"
            with self._lock:
                self._pending.discard(url)
                self._answers[url] = answer
            self._on_done()
