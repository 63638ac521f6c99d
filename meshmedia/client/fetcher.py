"""Fetch one manifest URL: ETag, long-poll (`?wait=N`), size cap, backoff on failure.

A meshmedia curator holds a request with `If-None-Match` and `?wait=N` until the
manifest changes (then 200) or N seconds pass (then 304). A plain static server
(`python -m http.server`) ignores both and answers at once with the same body:
the fetcher notices the quick unchanged answer and falls back to polling every
`interval` seconds, so it never spins. The body goes through the bounded reader
(bounded.py: 16 MiB decoded, one overall deadline per request), and `follow`
survives anything: a failed fetch backs off, a manifest that raises in
`on_manifest` is logged and the thread keeps polling.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from meshmedia.bounded import MAX_DOCUMENT_BYTES, ReadError, bounded_session, http_get
from meshmedia.errors import MeshmediaError

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = MAX_DOCUMENT_BYTES
MAX_WAIT = 60.0
MIN_SPACING = 1.0  # seconds between two requests that the server did not hold
HELD = 0.5  # a request held this long before its answer shows a long-polling server


class FetchError(MeshmediaError):
    """A manifest could not be fetched (unreachable, HTTP error, too large)."""


@dataclass(frozen=True)
class Fetched:
    """One answer: the body when it changed (None when unchanged), and its ETag."""

    body: bytes | None
    etag: str | None
    elapsed: float

    @property
    def changed(self) -> bool:
        """True when the answer carries a manifest we have not seen yet."""
        return self.body is not None


def with_wait(url: str, wait: float) -> str:
    """The URL with `wait=<seconds>` added to its query (replacing one already there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wait"]
    query.append(("wait", str(int(wait))))
    return urlunsplit(parts._replace(query=urlencode(query)))


class ManifestFetcher:
    """Fetches one manifest URL, remembering its ETag and whether it long-polls."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        max_bytes: int = MAX_MANIFEST_BYTES,
        etag: str | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers` go with every request (a joined group's credential)."""
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.etag = etag
        self.long_poll: bool | None = None  # None: not known yet
        self._quick_changes = 0  # changed answers in a row from requests not held
        self._digest = hashlib.sha256(body).digest() if body is not None else None
        self._session = session or bounded_session()

    def fetch(self, wait: float = 0.0) -> Fetched:
        """One request; `wait` > 0 asks the server to hold it until the manifest changes."""
        headers = {"Accept": "application/json", **self.headers}
        if self.etag and self._digest is not None:
            headers["If-None-Match"] = self.etag
        wait = min(wait, MAX_WAIT)
        url = with_wait(self.url, wait) if wait > 0 and "If-None-Match" in headers else self.url
        start = time.monotonic()
        try:
            answer = http_get(
                self._session,
                url,
                max_bytes=self.max_bytes,
                deadline=self.timeout + wait + 10.0,
                read_timeout=self.timeout + wait,
                headers=headers,
            )
        except ReadError as exc:
            raise FetchError(f"{self.url}: {exc}") from None
        if answer.status == 304:
            return Fetched(None, self.etag, time.monotonic() - start)
        if answer.status != 200:
            raise FetchError(f"{self.url}: HTTP {answer.status} {answer.reason}")
        body, etag = answer.body, answer.headers.get("ETag")
        elapsed = time.monotonic() - start
        digest = hashlib.sha256(body).digest()
        if digest == self._digest:
            return Fetched(None, self.etag, elapsed)
        self._digest, self.etag = digest, etag
        return Fetched(body, etag, elapsed)

    def follow(
        self,
        stop: threading.Event,
        on_manifest: Callable[[bytes, str | None], None],
        interval: float,
        on_error: Callable[[FetchError], None] | None = None,
    ) -> None:
        """Fetch until `stop` is set, calling `on_manifest(body, etag)` on each change.

        Failures back off exponentially from 1 s, capped at `interval`.
        """
        backoff = 1.0
        while not stop.is_set():
            wait = min(MAX_WAIT, interval) if self.long_poll is not False else 0.0
            try:
                result = self.fetch(wait)
            except FetchError as exc:
                log.warning("manifest fetch failed (retry in %.0f s): %s", backoff, exc)
                if on_error:
                    on_error(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, interval)
                continue
            except Exception:  # this thread must outlive any answer
                log.exception("manifest fetch of %s failed (retry in %.0f s)", self.url, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, interval)
                continue
            backoff = 1.0
            if result.changed:
                self._deliver(on_manifest, result)
            stop.wait(self._pause(wait, result, interval))

    def _deliver(self, on_manifest: Callable[[bytes, str | None], None], result: Fetched) -> None:
        try:
            on_manifest(result.body or b"", result.etag)
        except Exception:  # a manifest that breaks its handler must not end the polling
            log.exception("the manifest from %s could not be handled", self.url)

    def _pause(self, wait: float, result: Fetched, interval: float) -> float:
        """How long to sleep before the next request, learning whether the server holds.

        A server that held a request (for half the wait, or HELD seconds before a
        change came) is asked again at once after every answer: it answers only
        on a change, so that cannot hammer it (one that then answers 304 at once
        is found out as before). While that is not known, a change is followed by
        one immediate request (which a holding server holds, and which teaches
        us), then by MIN_SPACING. Pausing MIN_SPACING after every change kept a
        client that saw a change every second from ever long-polling.
        """
        held = wait > 0 and (
            result.elapsed >= wait / 2 or (result.changed and result.elapsed >= HELD)
        )
        if held:
            self.long_poll = True
            self._quick_changes = 0
            return 0.0
        if not result.changed:
            self._quick_changes = 0
        if wait > 0 and not result.changed:
            if self.long_poll is not False:
                log.info("%s answers at once: polling every %.0f s", self.url, interval)
            self.long_poll = False
        if result.changed and self.long_poll:
            return 0.0
        if result.changed and self.long_poll is None:
            self._quick_changes += 1
            return 0.0 if self._quick_changes == 1 else MIN_SPACING
        return interval
