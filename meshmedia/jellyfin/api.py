"""Jellyfin's HTTP API as meshmedia uses it: settings, session, one POST's outcome, the check.

The API key travels only in `Authorization: MediaBrowser Token="..."` (Jellyfin
12 ignores the legacy X-Emby-Token). `post` sorts an answer into delivered,
retry later or refused; `check` is what `meshmedia doctor` asks. The batching
and backoff are the notifier's (notifier.py).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from meshmedia import __version__
from meshmedia.errors import ConfigError

MEDIA_UPDATED = "/Library/Media/Updated"
REFRESH = "/Library/Refresh"
PUBLIC_INFO = "/System/Info/Public"
_KEY_RE = re.compile(r"^[\x21\x23-\x7e]+$")  # printable, no space, no '"': safe in the header
_RETRY_STATUSES = {401, 403, 408, 429}  # plus every 5xx: "not now", keep the paths
_HINTS = {
    401: "unauthorized: check JELLYFIN_API_KEY, sent as Authorization: MediaBrowser Token",
    403: "forbidden: use an API key from Dashboard > API Keys",
    404: "not found: an old Jellyfin or a wrong URL",
    503: "the server is starting",
}


def status_reason(status: int) -> str:
    """`HTTP <status>`, with a hint at the usual cause when there is one."""
    hint = _HINTS.get(status)
    return f"HTTP {status} ({hint})" if hint else f"HTTP {status}"


def display_url(url: str) -> str:
    """The URL without user info or query, for logs."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))


def new_session(api_key: str | None) -> requests.Session:
    """A session that sends our User-Agent and, given a key, the Authorization header."""
    session = requests.Session()
    session.trust_env = False  # a ~/.netrc entry would replace our Authorization header
    session.headers["User-Agent"] = f"meshmedia/{__version__}"
    if api_key:
        session.headers["Authorization"] = f'MediaBrowser Token="{api_key}"'
    return session


def check_settings(url: str, api_key: str | None) -> str:
    """The base URL without its trailing slash; ConfigError for a bad URL or key."""
    if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise ConfigError("jellyfin_url", f"{url!r} is not an http(s) URL")
    if not api_key or not _KEY_RE.match(api_key):
        raise ConfigError(
            "jellyfin_api_key",
            "is missing or has spaces/quotes; create one in Dashboard > API Keys",
        )
    return url.rstrip("/")


class OutcomeKind(Enum):
    """What one answer means for the paths it carried."""

    OK = "ok"  # delivered
    RETRY = "retry"  # not now: keep the paths and try again later
    REFUSED = "refused"  # this endpoint cannot do it: fall back, or give up


@dataclass(frozen=True)
class Outcome:
    """The answer to one request: delivered, retry later, or this endpoint cannot do it."""

    kind: OutcomeKind
    reason: str = ""
    retry_after: float = 0.0
    restarting: bool = False  # down or starting: it may come back as another version


def post(
    http: requests.Session, url: str, route: str, body: dict[str, Any] | None, timeout: float
) -> Outcome:
    """POST `body` (JSON, or nothing) to `url + route` and say what the answer means."""
    try:
        answer = http.post(url + route, json=body, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return Outcome(OutcomeKind.RETRY, f"cannot connect: {type(exc).__name__}", restarting=True)
    answer.close()
    status = answer.status_code
    if 200 <= status < 300:
        return Outcome(OutcomeKind.OK)
    reason = status_reason(status)
    if 300 <= status < 400:
        where = answer.headers.get("Location")
        return Outcome(OutcomeKind.RETRY, f"{reason}, redirected to {where}")
    if status in _RETRY_STATUSES or status >= 500:
        after = answer.headers.get("Retry-After", "")
        wait = float(after) if after.isdigit() else 0.0
        return Outcome(OutcomeKind.RETRY, reason, wait, restarting=status == 503)
    return Outcome(OutcomeKind.REFUSED, reason)


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
        base = check_settings(url, "-")
    except ConfigError as exc:
        return JellyfinCheck(display_url(url), False, problem=str(exc))
    with new_session(None) as http:
        found = _public_info(http, base, timeout)
        if found.problem:
            return found
        try:
            check_settings(base, api_key)
            http.headers["Authorization"] = f'MediaBrowser Token="{api_key}"'
            answer = http.post(base + MEDIA_UPDATED, json={"Updates": []}, timeout=timeout)
        except (ConfigError, requests.RequestException) as exc:
            return dataclasses.replace(found, problem=str(exc))
    status = answer.status_code
    if 200 <= status < 300:
        return dataclasses.replace(found, key_ok=True)
    reason = f"POST {MEDIA_UPDATED} answered {status_reason(status)}"
    key_ok = False if status in (401, 403) else None
    return dataclasses.replace(found, key_ok=key_ok, problem=reason)


def _public_info(http: requests.Session, base: str, timeout: float) -> JellyfinCheck:
    shown = display_url(base)
    try:
        answer = http.get(base + PUBLIC_INFO, timeout=timeout, allow_redirects=False)
        info = answer.json() if answer.status_code == 200 else None
    except (requests.RequestException, ValueError) as exc:
        return JellyfinCheck(shown, False, problem=f"no answer from {PUBLIC_INFO}: {exc}")
    if not isinstance(info, dict):
        reason = status_reason(answer.status_code)
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
