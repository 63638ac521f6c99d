"""A Jellyfin stand-in: a real HTTP server that answers as ../shared/jellyfin/CONTRACT.md says.

Jellyfin 12 defaults: the API key is read only from `Authorization: MediaBrowser
Token="<key>"` (quotes optional) or the `ApiKey` query parameter; the legacy
forms (X-Emby-Token, X-MediaBrowser-Token, X-Emby-Authorization, api_key, the
`Emby` scheme) are ignored, so a key sent that way gets 401. Request bodies are
validated against the OpenAPI excerpt (jellyfin_openapi_excerpt.json) with jsonschema;
a bad body gets 400. Every request is recorded. `mode` switches the answers:
"ok", "unauthorized" (401), "forbidden" (403), "unavailable" (503, as while
starting), "no_media_updated" (404 for /Library/Media/Updated, an old server);
`stop()` closes the port and `start()` opens the same port again.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

# A byte-for-byte copy of the excerpt described in ../shared/jellyfin/SOURCE.md.
EXCERPT = Path(__file__).with_name("jellyfin_openapi_excerpt.json")
JSON_TYPES = ("application/json", "text/json")
LEGACY_TOKEN_HEADERS = ("x-emby-token", "x-mediabrowser-token")
MODES = ("ok", "unauthorized", "forbidden", "unavailable", "no_media_updated")


def to_json_schema(node: Any) -> Any:
    """Turn OpenAPI 3.0 schema objects into JSON Schema: `nullable: true` admits null."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False):
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


class Contract:
    """The excerpt's schemas, as validators for request bodies and responses."""

    def __init__(self, path: Path = EXCERPT) -> None:
        self.document = json.loads(path.read_text(encoding="utf-8"))
        self._components = to_json_schema(self.document["components"])

    def validator(self, schema: dict[str, Any]) -> jsonschema.Draft4Validator:
        """A validator whose `#/components/...` references resolve inside the excerpt."""
        root = {"components": self._components, "allOf": [to_json_schema(schema)]}
        return jsonschema.Draft4Validator(root)

    def request_schema(self, route: str, media_type: str = "application/json") -> dict[str, Any]:
        """The request body schema of POST `route`."""
        body = self.document["paths"][route]["post"]["requestBody"]
        return body["content"][media_type]["schema"]

    def response_schema(self, route: str, status: str = "200") -> dict[str, Any]:
        """The JSON response schema of GET `route`."""
        answer = self.document["paths"][route]["get"]["responses"][status]
        return answer["content"]["application/json"]["schema"]

    def body_errors(self, route: str, body: bytes) -> list[str]:
        """Why `body` is not a valid request body for POST `route` (empty list: valid)."""
        if not body:
            return ["A non-empty request body is required."]
        try:
            value = json.loads(body)
        except ValueError as exc:
            return [f"not JSON: {exc}"]
        validator = self.validator(self.request_schema(route))
        return [error.message for error in validator.iter_errors(value)]


@dataclass(frozen=True)
class Recorded:
    """One request the stand-in received, and the status it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class StandInState:
    """What the handler reads and writes; shared by the handler threads."""

    api_key: str
    mode: str = "ok"
    legacy_authorization: bool = False
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def token_from(headers: dict[str, str], query: dict[str, list[str]], legacy: bool) -> str | None:
    """The API key as Jellyfin's AuthorizationContext reads it, or None."""
    for name, values in query.items():
        if name.lower() == "apikey" or (legacy and name.lower() == "api_key"):
            return values[0]
    authorizations = [headers.get("authorization", "")]
    if legacy:
        authorizations.append(headers.get("x-emby-authorization", ""))
    for authorization in authorizations:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() == "mediabrowser" or (legacy and scheme.lower() == "emby"):
            for part in params.split(","):
                key, _, value = part.strip().partition("=")
                if key.strip().lower() == "token":
                    return value.strip().strip('"')
    for name in LEGACY_TOKEN_HEADERS if legacy else ():
        if headers.get(name):
            return headers[name]
    return None


class Handler(BaseHTTPRequestHandler):
    """Answers the three routes meshmedia uses; everything else is 404."""

    server: StandInServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        """Track the connection, so that stop() can close kept-alive ones too."""
        super().setup()
        with self.server.state.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        super().finish()
        with self.server.state.lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest shows the recorded requests when it matters."""

    def do_GET(self) -> None:
        """GET /System/Info/Public."""
        self._handle("GET")

    def do_POST(self) -> None:
        """POST /Library/Media/Updated and /Library/Refresh."""
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        query = parse_qs(url.query, keep_blank_values=True)
        status, answer, reply_headers = self._answer(method, url.path, headers, query, body)
        state = self.server.state
        with state.lock:
            state.requests.append(Recorded(method, url.path, query, headers, body, status))
        self.send_response(status)
        for name, value in reply_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        query: dict[str, list[str]],
        body: bytes,
    ) -> tuple[int, bytes, dict[str, str]]:
        state = self.server.state
        if state.mode == "unavailable":
            return 503, b"Server is starting", {"Retry-After": "1", "Content-Type": "text/html"}
        if (method, path) == ("GET", "/System/Info/Public"):
            info = json.dumps(self.server.public_info()).encode()
            return 200, info, {"Content-Type": "application/json; charset=utf-8"}
        if method != "POST" or path not in ("/Library/Media/Updated", "/Library/Refresh"):
            return 404, b"", {}
        if token_from(headers, query, state.legacy_authorization) != state.api_key:
            return 401, b"Unauthorized", {}
        if state.mode in ("unauthorized", "forbidden"):
            return (401 if state.mode == "unauthorized" else 403), b"", {}
        if path == "/Library/Refresh":
            return 204, b"", {}
        if state.mode == "no_media_updated":
            return 404, b"", {}
        return self._media_updated(headers, body)

    def _media_updated(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict]:
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in JSON_TYPES and not media_type.endswith("+json"):
            return 415, b"Unsupported Media Type", {}
        errors = self.server.contract.body_errors("/Library/Media/Updated", body)
        if errors:
            problem = {"title": "One or more validation errors occurred.", "errors": errors}
            return 400, json.dumps(problem).encode(), {"Content-Type": "application/json"}
        return 204, b"", {}


class StandInServer(ThreadingHTTPServer):
    """The HTTP server carrying the stand-in's state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: StandInState, contract: Contract) -> None:
        super().__init__(address, Handler)
        self.state, self.contract = state, contract
        self.connections: set[socket.socket] = set()

    def close_connections(self) -> None:
        """Close every open connection, as a stopped server's would be."""
        with self.state.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def public_info(self) -> dict[str, Any]:
        """GET /System/Info/Public, shaped by the PublicSystemInfo schema."""
        return {
            "LocalAddress": f"http://127.0.0.1:{self.server_address[1]}",
            "ServerName": "standin",
            "Version": "12.0.0",
            "ProductName": "Jellyfin Server",
            "OperatingSystem": "",
            "Id": self.state.server_id,
            "StartupWizardCompleted": True,
        }


class JellyfinStandIn:
    """Context manager: a stand-in Jellyfin on 127.0.0.1 (a free port unless `port` is given)."""

    def __init__(self, api_key: str = "0123456789abcdef0123456789abcdef", port: int = 0) -> None:
        self.state = StandInState(api_key=api_key)
        self.contract = Contract()
        self.port = port
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:8096."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        """How the stand-in answers (see MODES)."""
        return self.state.mode

    @mode.setter
    def mode(self, value: str) -> None:
        assert value in MODES, value
        self.state.mode = value

    def start(self) -> JellyfinStandIn:
        """Listen (again, on the same port once one was chosen) and serve on a thread."""
        self._server = StandInServer(("127.0.0.1", self.port), self.state, self.contract)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: connections are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            assert self._thread is not None
            self._thread.join(10)
            self._server = self._thread = None

    def requests(self, path: str | None = None) -> list[Recorded]:
        """The requests received so far (to `path` only, when given)."""
        with self.state.lock:
            return [r for r in self.state.requests if path is None or r.path == path]

    def __enter__(self) -> JellyfinStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
