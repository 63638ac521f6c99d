"""HTTP: one hardened plumbing layer, the curator's API on it, the client's status API,
the write token, and the calls a command makes to a running daemon."""

from __future__ import annotations

from .auth import load_or_create_token, token_path
from .calls import curator_url, read_token, request_seed
from .curator import ManifestServer, status_page
from .messages import Hold, HttpError, HttpStats, Limits, Request, Response
from .server import HttpServer
from .status import StatusServer

__all__ = [
    "Hold",
    "HttpError",
    "HttpServer",
    "HttpStats",
    "Limits",
    "ManifestServer",
    "Request",
    "Response",
    "StatusServer",
    "curator_url",
    "load_or_create_token",
    "read_token",
    "request_seed",
    "status_page",
    "token_path",
]
