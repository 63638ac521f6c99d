"""The client daemon's status HTTP: GET /status on 127.0.0.1 only, on the hardened plumbing.

Loopback-only, but a local process may still be hostile or broken: the same
plumbing as the curator's server with small caps (32 connections, 5 s
deadlines, no long-polls, no bodies).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from meshmedia import __version__

from .messages import JSON, HttpError, HttpStats, Limits, Request, Response
from .metrics import Metrics
from .server import HttpServer

log = logging.getLogger(__name__)

STATUS_LIMITS = Limits(
    max_connections=32,
    max_held=0,
    request_timeout=5.0,
    idle_timeout=5.0,
    send_timeout=10.0,
    max_body=0,
    workers=2,
    writers=1,
)


ROUTES = ("/", "/status", "/metrics")


def client_page() -> bytes:
    """The client's live status page (GET /): its items, why each is where it is, limits."""
    return resources.files(__package__).joinpath("client.html").read_bytes()


class StatusServer:
    """GET /status (the engine snapshot and each item's state), GET /metrics and the
    page at GET / on 127.0.0.1 only."""

    def __init__(
        self,
        port: int,
        status: Callable[[], dict[str, Any]],
        limits: Limits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Bind 127.0.0.1:`port` (0 = a free port) and serve at once (OSError if taken);
        `metrics`: GET /metrics answers from it, and every answered request is counted."""
        self._status = status
        self._metrics = metrics
        self._http = HttpServer(
            "status",
            "127.0.0.1",
            port,
            self._handle,
            limits or STATUS_LIMITS,
            server_header=f"meshmedia/{__version__}",
            access_log=self._access if metrics is not None else None,
        )
        self._http.start()

    def _handle(self, request: Request) -> Response:
        if request.path not in ROUTES or (request.path == "/metrics" and not self._metrics):
            raise HttpError(404, "only /, /status and /metrics are served here")
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{request.method} is not allowed here", {"Allow": "GET"})
        if request.path == "/":
            return Response(200, client_page(), "text/html; charset=utf-8")
        if request.path == "/metrics" and self._metrics is not None:
            body, content_type = self._metrics.exposition()
            return Response(200, body, content_type)
        return Response(200, json.dumps(self._status()).encode(), JSON)

    def _access(self, request: Request, response: Response, seconds: float) -> None:
        route = request.path if request.path in ROUTES else "other"
        if self._metrics is not None:
            self._metrics.request(route, response.status)

    @property
    def port(self) -> int:
        """The bound port."""
        return self._http.port

    def stats(self) -> HttpStats:
        """The plumbing's counters (connections, timeouts...)."""
        return self._http.stats()

    def close(self) -> None:
        """Stop serving."""
        self._http.close()
