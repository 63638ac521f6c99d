"""The curator's manifest HTTP module: stdlib `http.server`, hardened.

One daemon thread per connection (HTTP/1.1 keep-alive), a per-connection
socket timeout, a 1 MiB cap on request bodies, every error as JSON
`{"error": reason}`, writes behind `Authorization: Bearer <token>` compared in
constant time, and one access-log line per request (never the headers).
The routes themselves are in `routes.py`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import __version__
from .config import GROUP_RE, Config
from .errors import ConfigError
from .manifest_store import ManifestStore
from .routes import JSON, HttpError, Response, find_route
from .token import load_or_create_token, token_matches

__all__ = ["ManifestServer", "RequestHandler", "load_or_create_token"]

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


class RequestHandler(BaseHTTPRequestHandler):
    """Parses one request, finds its route, writes the Response, logs one line."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = f"meshmedia/{__version__}"
    sys_version = ""

    def setup(self) -> None:
        """Apply the per-connection socket timeout."""
        super().setup()
        self.connection.settimeout(self.server.app.connection_timeout)

    @property
    def app(self) -> ManifestServer:
        """The ManifestServer this request belongs to."""
        return self.server.app

    def do_GET(self) -> None:
        """Answer a GET."""
        self._dispatch()

    def do_POST(self) -> None:
        """Answer a POST."""
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        started = time.monotonic()
        self._body_read = False
        split = urlsplit(self.path)
        self.query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            method = "GET" if self.command == "HEAD" else self.command
            route, match = find_route(method, split.path)
            response = route(self, match)
        except HttpError as exc:
            response = exc.response()
        except Exception:
            log.exception("%s %s failed", self.command, _printable(split.path))
            response = HttpError(500, "internal error").response()
        if not self._body_read and self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # an unread body would be taken for the next request
        self._log_access(split.path, response, started)  # logged before the client has its answer
        self._write(response)

    def _log_access(self, path: str, response: Response, started: float) -> None:
        polling = path.startswith("/manifest/") and self.command == "GET"
        log.log(
            logging.DEBUG if polling else logging.INFO,
            '%s "%s %s" %d %d %.1fms',
            self.client_address[0],
            self.command,
            _printable(self.path),
            response.status,
            len(response.body),
            (time.monotonic() - started) * 1000,
        )

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.status not in (204, 304):
                self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and response.status not in (204, 304):
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def require_token(self) -> None:
        """Raise HttpError 401 unless the request carries the server's token."""
        if not token_matches(self.app.token, self.headers.get("Authorization")):
            headers = {"WWW-Authenticate": 'Bearer realm="meshmedia"'}
            raise HttpError(401, "a valid 'Authorization: Bearer <token>' is required", headers)

    def read_json(self) -> Any:
        """The request body as JSON: 411, 413 or 400 with the reason when it cannot be."""
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            self.close_connection = True  # a body we cannot frame may follow
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(411, "send the body with a Content-Length, not chunked")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise HttpError(411, "Content-Length is required")
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0:
            raise HttpError(400, "Content-Length is not a valid length")
        if length > MAX_BODY:
            raise HttpError(413, f"the body is over {MAX_BODY} bytes")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != JSON:
            raise HttpError(400, "Content-Type must be application/json")
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) != length:
            self.close_connection = True
            raise HttpError(400, "the body is shorter than its Content-Length")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers too long...) as JSON too."""
        self.close_connection = True
        reason = message or self.responses.get(code, ("error",))[0]
        if not getattr(self, "command", None):
            self.command = "GET"
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # so that a status line is written
        self._write(HttpError(code, reason).response())
        log.info(
            '%s "%s" %d %s', self.client_address[0], _printable(self.requestline), code, reason
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access lines are written by `_dispatch` instead."""

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own messages (timeouts...) go to logging at DEBUG."""
        log.debug("%s " + format, self.client_address[0], *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    app: ManifestServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:500]


class ManifestServer:
    """The curator's HTTP server: manifests, /seed, /seeds, /status, /torrents."""

    def __init__(
        self,
        config: Config,
        manifests: ManifestStore,
        publisher: Any | None,
        snapshot: Callable[[], Any] | None,
        token: str | None = None,
        *,
        connection_timeout: float = 30.0,
        home_page: Callable[[], bytes] | None = None,
    ) -> None:
        """Keep the collaborators; nothing is bound until `start()`.

        `publisher` and `snapshot` may be None for a manifest-only server
        (/seed then answers 503). `home_page`, when given, renders GET / for
        clients that accept text/html.
        """
        self.config = config
        self.manifests = manifests
        self.publisher = publisher
        self.snapshot = snapshot
        self.token = token or load_or_create_token(config)
        self.connection_timeout = connection_timeout
        self.home_page = home_page
        self.closing = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._share_roots = tuple(share.path.resolve() for share in config.shares)

    def start(self) -> ManifestServer:
        """Bind `config.host:config.port` (0 = a free port) and serve on a thread."""
        cls = _HTTPServer6 if ":" in self.config.host else _HTTPServer
        try:
            httpd = cls((self.config.host, self.config.port), RequestHandler)
        except OSError as exc:
            where = f"{self.config.host}:{self.config.port}"
            raise ConfigError("port", f"cannot listen on {where}: {exc.strerror}") from exc
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        log.info("serving manifests on %s", self.url)
        return self

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:5000` (loopback for a wildcard bind)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.config.host, self.config.host)  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def groups(self) -> list[str]:
        """Groups with a manifest or a share folder."""
        return sorted(set(self.manifests.groups()) | {s.group for s in self.config.shares})

    def known_group(self, group: str) -> bool:
        """True when GET /manifest/<group>.json has something to answer."""
        if GROUP_RE.match(group) is None:
            return False
        return group in self.config.share_groups or self.manifests.exists(group)

    def inside_share(self, resolved: Path) -> bool:
        """True when an already resolved path lies in (or is) a share folder."""
        return any(resolved.is_relative_to(root) for root in self._share_roots)

    def close(self) -> None:
        """Stop accepting, end held long-polls, close the socket."""
        self.closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = self._thread = None

    def __enter__(self) -> ManifestServer:
        """Start (when not started yet) and return the server."""
        if self._httpd is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the server."""
        self.close()
