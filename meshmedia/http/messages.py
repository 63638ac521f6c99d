"""The HTTP server's messages: a parsed Request, the Response (or Hold, or HttpError) a
handler answers with, and the server's Limits and HttpStats."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .wire import Head, Headers, WireError

JSON = "application/json"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Caps and deadlines of one server (defaults: the curator's)."""

    # 2.1 KiB a connection (1,000 half-sent requests: +2.1 MiB RSS). At 1,024, 2,000
    # hostile connections made the server evict ~700/s (34% of a core); at 4,096 they sit
    # below the cap until their deadlines (24%, the same 49 MiB peak; http-server.md).
    max_connections: int = 4096
    max_held: int = 256
    request_timeout: float = 10.0
    idle_timeout: float = 15.0
    send_timeout: float = 30.0
    # At the cap, an answer read slower than this on average (after send_grace seconds)
    # is dropped to make room (senders.py): 16 KiB/s sends a 2.7 MB manifest in 3 min.
    min_send_rate: float = 16384.0
    send_grace: float = 10.0
    linger: float = 2.0
    max_line: int = 8192
    max_head: int = 65536
    max_body: int = 1 << 20
    workers: int = 4
    writers: int = 2
    accept_pause: float = 0.5


@dataclass(frozen=True)
class Response:
    """What a handler answers; the connection writes it."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """An error answer: `{"error": reason, **extra}` with `status`."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember the status, the reason and any extra headers or fields."""
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> Response:
        """The JSON error response (ASCII, so that any reason can be written)."""
        doc = {"error": self.reason, **self.extra}
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return Response(self.status, body, JSON, self.headers)


@dataclass(frozen=True)
class Hold:
    """A long-poll: park the request until `changed` reports news or `seconds` pass.

    `changed(timeout)` blocks up to `timeout` seconds and returns True once there
    is something new; one thread runs it per `key`, however many requests hold
    that key. Then (or at the end of `seconds`, or when the server closes)
    `answer()` is called on a worker and its Response sent.
    """

    key: Hashable
    seconds: float
    changed: Callable[[float], bool]
    answer: Callable[[], Response]


@dataclass(frozen=True)
class HttpStats:
    """Counters of one server, for tests, benchmarks and logs."""

    connections: int
    waiting: int
    held: int
    served: int
    evicted: int
    refused: int
    timed_out: int
    accept_pauses: int
    cap: int


Handler = Callable[["Request"], "Response | Hold"]
AccessLog = Callable[["Request", Response, float], None]


class Request:
    """One parsed request as a handler sees it; `body()` reads the body on demand."""

    def __init__(self, head: Head, peer: str, tls: bool, read_body: Callable[[], bytes]) -> None:
        """Split the target; WireError 400 when it is not a usable URL. `tls`: it came over
        TLS (the curator's members' connections); `read_body()` waits for the body."""
        try:
            split = urlsplit(head.target)
            query = parse_qsl(split.query, keep_blank_values=True, max_num_fields=64)
        except ValueError as exc:
            raise WireError(400, f"the request target is not valid: {exc}") from None
        self.method = head.method
        self.target = head.target
        self.path = split.path
        self.query = dict(query)
        self.headers: Headers = head.headers
        self.version = head.version
        self.keep_alive = head.keep_alive
        self.content_length = head.content_length
        self.peer = peer
        self.tls = tls
        self._read_body = read_body
        self._body: bytes | None = None

    def describe(self) -> str:
        """`METHOD /target`, for logs."""
        return f"{self.method} {self.target}"

    def has_body(self) -> bool:
        """True when the request says it carries a body."""
        return "Content-Length" in self.headers and self.content_length > 0

    def body(self) -> bytes:
        """The body (waits on this worker until it has come; HttpError 408/413/400)."""
        if self._body is None:
            self._body = self._read_body() if self.has_body() else b""
        return self._body
