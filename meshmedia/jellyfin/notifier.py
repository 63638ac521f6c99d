"""Tell Jellyfin which files arrived: batched POST /Library/Media/Updated, refresh fallback.

`JellyfinNotifier.notify(path)` only queues; one background thread batches the
paths over a short window and reports them in one request. Jellyfin being down,
starting (503) or refusing the key (401/403) costs one warning and a retry with
backoff; the sync never waits for it. The HTTP side (the API key header, what an
answer means, `check`) is in api.py. See native_notes/jellyfin.md for
the reasons.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .api import (
    MEDIA_UPDATED,
    REFRESH,
    Outcome,
    OutcomeKind,
    check_settings,
    display_url,
    new_session,
    post,
)

log = logging.getLogger(__name__)

PathMap = Iterable[tuple[str, str]]


def map_path(path: str, path_map: PathMap) -> str:
    """Rewrite `path` with the longest LOCAL prefix of `path_map` that ends on a segment."""
    pairs = [(local.rstrip("/"), remote.rstrip("/")) for local, remote in path_map]
    for local, remote in sorted(pairs, key=lambda pair: len(pair[0]), reverse=True):
        if path == local or path.startswith(local + "/"):  # "/" became "": every path
            return remote + path[len(local) :] or "/"
    return path


@dataclass
class _Batch:
    paths: list[str]
    refresh: bool
    seq: int


class JellyfinNotifier:
    """Queue arrived paths and report them to Jellyfin from a background thread."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        path_map: PathMap = (),
        window: float = 2.0,
        timeout: float = 10.0,
        *,
        retry_base: float = 2.0,
        retry_max: float = 300.0,
        refresh_spacing: float = 60.0,
        max_pending: int = 10_000,
    ) -> None:
        self.url = check_settings(url, api_key)
        self.path_map = tuple((str(a), str(b)) for a, b in path_map)
        self.window, self.timeout = window, timeout
        self.retry_base, self.retry_max = retry_base, retry_max
        self.refresh_spacing, self.max_pending = refresh_spacing, max_pending
        self._http = new_session(api_key)
        self._cond = threading.Condition()
        self._pending: dict[str, None] = {}  # an ordered set
        self._refresh_needed = False  # the queue overflowed or Media/Updated is not there
        self._first_at: float | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._warned: str | None = None  # the problem already warned about
        self._media_updated = True  # False after a 404/405: old server, use the refresh
        self._last_refresh = float("-inf")
        self._flush_seq = self._done_seq = 0
        self._stopping = False
        self.on_outcome: Callable[[str], None] | None = None  # each answer's OutcomeKind value
        self._thread = threading.Thread(target=self._run, name="jellyfin-notifier", daemon=True)
        self._thread.start()

    def notify(self, path: str | os.PathLike[str]) -> None:
        """Queue one arrived file (its local path); never raises, never waits on the network."""
        try:
            mapped = map_path(os.path.abspath(os.fspath(path)), self.path_map)
            with self._cond:
                if self._stopping:
                    log.debug("jellyfin notifier closed; not reporting %s", mapped)
                    return
                self._pending[mapped] = None
                self._first_at = self._first_at or time.monotonic()
                self._trim()
                self._cond.notify_all()
        except Exception:  # the sync must go on whatever happens here
            log.exception("could not queue %r for Jellyfin", path)

    def flush(self, timeout: float = 30.0) -> bool:
        """Send what is queued now (no window, no backoff) and wait; True when nothing is left."""
        with self._cond:
            self._flush_seq += 1
            seq = self._flush_seq
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._done_seq >= seq or not self._thread.is_alive(), timeout
            )
            return not self._pending and not self._refresh_needed

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the thread; paths Jellyfin could not take are logged and dropped."""
        if self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            left = len(self._pending)
            self._cond.notify_all()
        self._thread.join(timeout)
        self._http.close()
        if left:
            log.warning("Jellyfin was not told about %d files; a library scan will find them", left)

    def __enter__(self) -> JellyfinNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _trim(self) -> None:
        """Keep the queue bounded: past max_pending one full refresh replaces the paths."""
        if len(self._pending) > self.max_pending:
            log.warning(
                "more than %d files wait for Jellyfin; one full library scan will be asked instead",
                self.max_pending,
            )
            self._pending.clear()
            self._refresh_needed = True

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                if batch.paths or batch.refresh:
                    self._deliver(batch)
            except Exception:  # a bug here must not end the thread
                log.exception("Jellyfin notifier failed on a batch; it is dropped")
            with self._cond:
                self._done_seq = max(self._done_seq, batch.seq)
                self._cond.notify_all()

    def _due(self) -> float:
        due = max(self._retry_at, (self._first_at or 0.0) + self.window)
        if self._refresh_needed or not self._media_updated:
            due = max(due, self._last_refresh + self.refresh_spacing)
        return due

    def _next_batch(self) -> _Batch | None:
        with self._cond:
            while True:
                flushing = self._flush_seq > self._done_seq
                if self._stopping and not flushing:
                    return None
                work = bool(self._pending) or self._refresh_needed
                wait = None if not work else self._due() - time.monotonic()
                if flushing or (wait is not None and wait <= 0):
                    batch = _Batch(list(self._pending), self._refresh_needed, self._flush_seq)
                    self._pending.clear()
                    self._refresh_needed, self._first_at = False, None
                    return batch
                self._cond.wait(wait)

    def _post(self, endpoint: str, body: dict[str, Any] | None) -> Outcome:
        outcome = post(self._http, self.url, endpoint, body, self.timeout)
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome.kind.value)
            except Exception:  # counting must not stop the notifier
                log.exception("the Jellyfin outcome listener failed")
        return outcome

    def _deliver(self, batch: _Batch) -> None:
        if batch.paths and self._media_updated and not batch.refresh:
            updates = [{"Path": path, "UpdateType": "Created"} for path in batch.paths]
            outcome = self._post(MEDIA_UPDATED, {"Updates": updates})
            if outcome.kind == OutcomeKind.OK:
                return self._succeeded(f"reported {len(batch.paths)} new files")
            if outcome.kind == OutcomeKind.RETRY:
                return self._failed(outcome, batch)
            self._media_updated = False
            log.warning(
                "Jellyfin at %s refused POST %s (%s); falling back to one full library scan",
                display_url(self.url),
                MEDIA_UPDATED,
                outcome.reason,
            )
        outcome = self._post(REFRESH, None)
        if outcome.kind == OutcomeKind.OK:
            self._last_refresh = time.monotonic()
            return self._succeeded(f"started a library scan for {len(batch.paths)} new files")
        if outcome.kind == OutcomeKind.RETRY:
            return self._failed(outcome, _Batch([], True, batch.seq))
        log.warning(
            "Jellyfin at %s refused POST %s (%s); its next scheduled scan will find %d files",
            display_url(self.url),
            REFRESH,
            outcome.reason,
            len(batch.paths),
        )
        return None

    def _succeeded(self, what: str) -> None:
        if self._warned:
            log.info("Jellyfin at %s answers again; %s", display_url(self.url), what)
        else:
            log.info("Jellyfin: %s", what)
        self._warned, self._failures, self._retry_at = None, 0, 0.0

    def _failed(self, outcome: Outcome, batch: _Batch) -> None:
        self._failures += 1
        delay = min(self.retry_max, self.retry_base * 2 ** min(self._failures - 1, 30))
        delay = min(self.retry_max, max(delay, outcome.retry_after))
        if outcome.reason != self._warned:
            log.warning(
                "Jellyfin at %s is not taking updates (%s); %s stay queued, retrying with backoff",
                display_url(self.url),
                outcome.reason,
                f"{len(batch.paths)} files" if batch.paths else "a library scan",
            )
            self._warned = outcome.reason
        else:
            log.debug("Jellyfin still unavailable (%s); next try in %.1fs", outcome.reason, delay)
        if outcome.restarting:
            self._media_updated = True  # it may come back upgraded: ask Media/Updated again
        with self._cond:
            self._pending = dict.fromkeys(batch.paths) | self._pending
            self._refresh_needed |= batch.refresh
            self._first_at = self._first_at or time.monotonic()
            self._retry_at = time.monotonic() + delay
            self._trim()
