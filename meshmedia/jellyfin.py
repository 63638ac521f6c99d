"""Tell Jellyfin which files arrived: batched POST /Library/Media/Updated, refresh fallback.

`JellyfinNotifier.notify(path)` only queues; one background thread batches the
paths over a short window and reports them in one request. The API key travels
only in `Authorization: MediaBrowser Token="..."` (Jellyfin 12 ignores the
legacy X-Emby-Token). Jellyfin being down, starting (503) or refusing the key
(401/403) costs one warning and a retry with backoff; the sync never waits for
it. See native_notes/jellyfin.md for the reasons.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from . import __version__
from .errors import ConfigError

log = logging.getLogger(__name__)

MEDIA_UPDATED = "/Library/Media/Updated"
REFRESH = "/Library/Refresh"
PUBLIC_INFO = "/System/Info/Public"
PathMap = Iterable[tuple[str, str]]
_KEY_RE = re.compile(r"^[\x21\x23-\x7e]+$")  # printable, no space, no '"': safe in the header
_RETRY_STATUSES = {401, 403, 408, 429}  # plus every 5xx: "not now", keep the paths
_HINTS = {
    401: "unauthorized: check JELLYFIN_API_KEY, sent as Authorization: MediaBrowser Token",
    403: "forbidden: use an API key from Dashboard > API Keys",
    404: "not found: an old Jellyfin or a wrong URL",
    503: "the server is starting",
}


def _reason(status: int) -> str:
    hint = _HINTS.get(status)
    return f"HTTP {status} ({hint})" if hint else f"HTTP {status}"


def map_path(path: str, path_map: PathMap) -> str:
    """Rewrite `path` with the longest LOCAL prefix of `path_map` that ends on a segment."""
    pairs = [(local.rstrip("/"), remote.rstrip("/")) for local, remote in path_map]
    for local, remote in sorted(pairs, key=lambda pair: len(pair[0]), reverse=True):
        if path == local or path.startswith(local + "/"):  # "/" became "": every path
            return remote + path[len(local) :] or "/"
    return path


def _display(url: str) -> str:
    """The URL without user info or query, for logs."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))


def _session(api_key: str | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # a ~/.netrc entry would replace our Authorization header
    session.headers["User-Agent"] = f"meshmedia/{__version__}"
    if api_key:
        session.headers["Authorization"] = f'MediaBrowser Token="{api_key}"'
    return session


def _check_settings(url: str, api_key: str | None) -> str:
    if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise ConfigError("jellyfin_url", f"{url!r} is not an http(s) URL")
    if not api_key or not _KEY_RE.match(api_key):
        raise ConfigError(
            "jellyfin_api_key",
            "is missing or has spaces/quotes; create one in Dashboard > API Keys",
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class _Outcome:
    """The answer to one request: delivered, retry later, or this endpoint cannot do it."""

    kind: str  # "ok" | "retry" | "refused"
    reason: str = ""
    retry_after: float = 0.0
    restarting: bool = False  # down or starting: it may come back as another version


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
        self.url = _check_settings(url, api_key)
        self.path_map = tuple((str(a), str(b)) for a, b in path_map)
        self.window, self.timeout = window, timeout
        self.retry_base, self.retry_max = retry_base, retry_max
        self.refresh_spacing, self.max_pending = refresh_spacing, max_pending
        self._http = _session(api_key)
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

    def _deliver(self, batch: _Batch) -> None:
        if batch.paths and self._media_updated and not batch.refresh:
            updates = [{"Path": path, "UpdateType": "Created"} for path in batch.paths]
            outcome = self._post(MEDIA_UPDATED, {"Updates": updates})
            if outcome.kind == "ok":
                return self._succeeded(f"reported {len(batch.paths)} new files")
            if outcome.kind == "retry":
                return self._failed(outcome, batch)
            self._media_updated = False
            log.warning(
                "Jellyfin at %s refused POST %s (%s); falling back to one full library scan",
                _display(self.url),
                MEDIA_UPDATED,
                outcome.reason,
            )
        outcome = self._post(REFRESH, None)
        if outcome.kind == "ok":
            self._last_refresh = time.monotonic()
            return self._succeeded(f"started a library scan for {len(batch.paths)} new files")
        if outcome.kind == "retry":
            return self._failed(outcome, _Batch([], True, batch.seq))
        log.warning(
            "Jellyfin at %s refused POST %s (%s); its next scheduled scan will find %d files",
            _display(self.url),
            REFRESH,
            outcome.reason,
            len(batch.paths),
        )
        return None

    def _post(self, route: str, body: dict[str, Any] | None) -> _Outcome:
        try:
            answer = self._http.post(
                self.url + route, json=body, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return _Outcome("retry", f"cannot connect: {type(exc).__name__}", restarting=True)
        answer.close()
        status = answer.status_code
        if 200 <= status < 300:
            return _Outcome("ok")
        reason = _reason(status)
        if 300 <= status < 400:
            return _Outcome("retry", f"{reason}, redirected to {answer.headers.get('Location')}")
        if status in _RETRY_STATUSES or status >= 500:
            after = answer.headers.get("Retry-After", "")
            wait = float(after) if after.isdigit() else 0.0
            return _Outcome("retry", reason, wait, restarting=status == 503)
        return _Outcome("refused", reason)

    def _succeeded(self, what: str) -> None:
        if self._warned:
            log.info("Jellyfin at %s answers again; %s", _display(self.url), what)
        else:
            log.info("Jellyfin: %s", what)
        self._warned, self._failures, self._retry_at = None, 0, 0.0

    def _failed(self, outcome: _Outcome, batch: _Batch) -> None:
        self._failures += 1
        delay = min(self.retry_max, self.retry_base * 2 ** min(self._failures - 1, 30))
        delay = min(self.retry_max, max(delay, outcome.retry_after))
        if outcome.reason != self._warned:
            log.warning(
                "Jellyfin at %s is not taking updates (%s); %s stay queued, retrying with backoff",
                _display(self.url),
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


@dataclass(frozen=True)
class JellyfinCheck:
    """What `check` found: who answers at the URL and whether the API key works."""

    url: str
    reachable: bool
    server_name: str | None = None
    version: str | None = None
    product_name: str | None = None
    key_ok: bool | None = None  # None: not tried (unreachable, no key) or inconclusive
    problem: str | None = None  # one clear sentence when something is wrong

    @property
    def ok(self) -> bool:
        """True when Jellyfin answers and takes our updates with this key."""
        return self.reachable and bool(self.key_ok) and self.problem is None

    @property
    def detail(self) -> str:
        """One line for `meshmedia doctor`: who answered, and what is wrong if anything."""
        who = f"{self.product_name or 'unknown server'} {self.version or '?'}"
        if self.server_name:
            who += f" ({self.server_name})"
        state = "API key accepted" if self.ok else self.problem
        return f"{who} at {self.url}: {state}" if self.reachable else f"{self.url}: {state}"


def check(url: str, api_key: str | None, timeout: float = 5.0) -> JellyfinCheck:
    """Ask GET /System/Info/Public (no key), then try the key on an empty Media/Updated report.

    The empty report is what `sync` will send, minus the paths: Jellyfin queues
    nothing and answers 204, so the key, the route and the rights are all checked.
    """
    try:
        base = _check_settings(url, "-")
    except ConfigError as exc:
        return JellyfinCheck(_display(url), False, problem=str(exc))
    with _session(None) as http:
        found = _public_info(http, base, timeout)
        if found.problem:
            return found
        try:
            _check_settings(base, api_key)
            http.headers["Authorization"] = f'MediaBrowser Token="{api_key}"'
            answer = http.post(base + MEDIA_UPDATED, json={"Updates": []}, timeout=timeout)
        except (ConfigError, requests.RequestException) as exc:
            return dataclasses.replace(found, problem=str(exc))
    status = answer.status_code
    if 200 <= status < 300:
        return dataclasses.replace(found, key_ok=True)
    reason = f"POST {MEDIA_UPDATED} answered {_reason(status)}"
    key_ok = False if status in (401, 403) else None
    return dataclasses.replace(found, key_ok=key_ok, problem=reason)


def _public_info(http: requests.Session, base: str, timeout: float) -> JellyfinCheck:
    shown = _display(base)
    try:
        answer = http.get(base + PUBLIC_INFO, timeout=timeout, allow_redirects=False)
        info = answer.json() if answer.status_code == 200 else None
    except (requests.RequestException, ValueError) as exc:
        return JellyfinCheck(shown, False, problem=f"no answer from {PUBLIC_INFO}: {exc}")
    if not isinstance(info, dict):
        reason = _reason(answer.status_code)
        return JellyfinCheck(shown, False, problem=f"{PUBLIC_INFO} answered {reason}")
    product = info.get("ProductName")
    return JellyfinCheck(
        shown,
        True,
        info.get("ServerName"),
        info.get("Version"),
        product,
        problem=None if product == "Jellyfin Server" else "not Jellyfin (no ProductName: Emby?)",
    )
