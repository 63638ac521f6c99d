"""The client daemon's status HTTP: GET /status on 127.0.0.1 only, on the hardened plumbing.

Loopback-only, but a local process may still be hostile or broken: the same
plumbing as the curator's server with small caps (32 connections, 5 s
deadlines, no long-polls, no bodies).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from meshmedia import __version__

from .plumbing import JSON, HttpError, HttpServer, HttpStats, Limits, Request, Response

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


class StatusServer:
    """GET /status on 127.0.0.1 only: the engine snapshot and each item's state."""

    def __init__(
        self, port: int, status: Callable[[], dict[str, Any]], limits: Limits | None = None
    ) -> None:
        """Bind 127.0.0.1:`port` (0 = a free port) and serve at once (OSError if taken)."""
        self._status = status
        self._http = HttpServer(
            "status",
            "127.0.0.1",
            port,
            self._handle,
            limits or STATUS_LIMITS,
            server_header=f"meshmedia/{__version__}",
        )
        self._http.start()

    def _handle(self, request: Request) -> Response:
        if request.path != "/status":
            raise HttpError(404, "only /status is served here")
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{request.method} is not allowed here", {"Allow": "GET"})
        return Response(200, json.dumps(self._status()).encode(), JSON)

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
