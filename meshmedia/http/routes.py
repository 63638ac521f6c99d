"""The curator's HTTP routes (DESIGN.md "HTTP module"): each returns a Response.

The plumbing (sockets, parsing, caps, deadlines, long-poll holds) is in
`server.py` and `connection.py`, the server that owns the table in `curator.py`. A route only
sees a `RequestHandler`: `req.app` (a `CuratorApp`), `req.headers`,
`req.query`, `req.require_token()` and `req.read_json()` (writes behind
`Authorization: Bearer <token>` compared in constant time, JSON bodies parsed
with bounds), and returns a Response (or a Hold, which the plumbing parks
without a thread).
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from meshmedia import __version__
from meshmedia.bounded import ReadError, bad_text, load_json
from meshmedia.config import Config
from meshmedia.errors import ManifestError, MeshmediaError, PublishError
from meshmedia.groups.registry import CREDENTIAL_HEADER, InviteError, Member, Registry
from meshmedia.manifest import (
    Manifest,
    ManifestStore,
    canonical_json,
    check_curated_path,
    check_relative_path,
    parse_items,
)

from .auth import token_matches
from .messages import JSON, Hold, HttpError, Request, Response
from .metrics import Metrics

MAX_WAIT = 60.0
DURABLE_TIMEOUT = 30.0  # a write answered 503 after this: not acknowledged
_INFO_HASH = re.compile(r"^[0-9a-fA-F]{40}$")
MAX_BODY = 1 << 20
NOT_FOUND = "not found"  # the one answer to strangers: it names nothing


class CuratorApp(Protocol):
    """What the routes use of the curator's HTTP server (curator.ManifestServer)."""

    manifests: ManifestStore
    publisher: Any | None
    snapshot: Callable[[], Any] | None
    home_page: Callable[[], bytes] | None
    token: str
    metrics: Metrics | None
    config: Config
    registry: Registry | None
    signing_key: str | None
    join_failures: JoinFailures
    swarm_peers: Callable[[str | None], list[str]] | None

    def groups(self) -> list[str]:
        """Groups with a manifest or a share folder."""

    def known_group(self, group: str) -> bool:
        """True when GET /manifest/<group>.json has something to answer."""

    def inside_share(self, resolved: Path) -> bool:
        """True when an already resolved path lies in (or is) a share folder."""

    def groups_of(self, info_hash: str) -> set[str]:
        """The groups whose manifests list the item of `info_hash`."""


class JoinFailures:
    """Failed `POST /join` secrets per source address: at most `per_minute` a minute."""

    def __init__(self, per_minute: int = 10) -> None:
        """No failures yet."""
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, peer: str) -> bool:
        """True when `peer` failed `per_minute` times in the last minute."""
        with self._lock:
            times = self._seen.get(peer)
            now = time.monotonic()
            while times and now - times[0] > 60:
                times.popleft()
            return times is not None and len(times) >= self.per_minute

    def failed(self, peer: str) -> None:
        """Count one failure of `peer` (the table is bounded to 4,096 sources)."""
        with self._lock:
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen.setdefault(peer, deque()).append(time.monotonic())


class RequestHandler:
    """What a route sees of one request: the curator, headers, query, token check, JSON body."""

    def __init__(self, app: CuratorApp, request: Request) -> None:
        """Wrap one plumbing Request for the routes."""
        self.app = app
        self.request = request
        self.command = request.method
        self.path = request.target
        self.headers = request.headers
        self.query = request.query
        self._member: Member | bool | None = False  # False: not looked up yet

    @property
    def loopback(self) -> bool:
        """True when the request comes from this machine's loopback."""
        try:
            address = ipaddress.ip_address(self.request.peer)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return bool((mapped or address).is_loopback)

    @property
    def member(self) -> Member | None:
        """The non-revoked member whose credential the request carries, or None."""
        if self._member is False:
            credential = self.headers.get(CREDENTIAL_HEADER, "").strip()
            registry = self.app.registry
            found = registry.member_of(credential) if credential and registry else None
            self._member = found
        return self._member if isinstance(self._member, Member) else None

    def may_read(self, group: str) -> bool:
        """Public groups to anyone; a private one from loopback or to its members."""
        if self.app.config.is_public(group) or self.loopback:
            return True
        member = self.member
        return member is not None and member.group == group

    def local_reason(self, reason: str) -> str:
        """`reason` on loopback, NOT_FOUND to anyone else (it may echo a name)."""
        return reason if self.loopback else NOT_FOUND

    def require_local(self) -> None:
        """HttpError 404 off loopback unless every group is public (the earlier design)."""
        if not self.loopback and not self.app.config.all_public:
            raise HttpError(404, NOT_FOUND)

    def require_token(self) -> None:
        """Raise HttpError 401 unless the request carries the server's token."""
        if not token_matches(self.app.token, self.headers.get("Authorization")):
            headers = {"WWW-Authenticate": 'Bearer realm="meshmedia"'}
            raise HttpError(401, "a valid 'Authorization: Bearer <token>' is required", headers)

    def read_json(self) -> Any:
        """The request body as JSON: 411, 413, 408 or 400 with the reason when it cannot be."""
        if "Content-Length" not in self.headers:
            raise HttpError(411, "Content-Length is required")
        if self.request.content_length > MAX_BODY:
            raise HttpError(413, f"the body is over {MAX_BODY} bytes")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != JSON:
            raise HttpError(400, "Content-Type must be application/json")
        return parse_json_body(self.request.body())


def parse_json_body(body: bytes) -> Any:
    """Parse a request body as JSON (bounded.load_json's limits), refusing (400) what
    later code could choke on; a lone surrogate (`"\\ud800"`) anywhere is refused too."""
    try:
        doc = load_json(body, max_bytes=MAX_BODY)
    except ReadError as exc:
        raise HttpError(400, f"the body is refused: {exc}") from None
    if bad_text(doc) is not None:
        reason = "the body is not valid UTF-8: a string has a lone surrogate (\\ud800-\\udfff)"
        raise HttpError(400, reason)
    return doc


def json_response(
    obj: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response of `obj`."""
    return Response(status, canonical_json(obj), JSON, dict(headers or {}))


def health(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /: status, version and groups (HTML through the app's hook when asked for)."""
    app = req.app
    if app.home_page is not None and "text/html" in req.headers.get("Accept", ""):
        return Response(200, app.home_page(), "text/html; charset=utf-8")
    groups = [group for group in app.groups() if req.may_read(group)]
    return json_response({"status": "ok", "version": __version__, "groups": groups})


def _wait_seconds(req: RequestHandler) -> float:
    raw = req.query.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT:
        raise HttpError(400, f"wait must be a number of seconds from 0 to {MAX_WAIT:g}")
    return wait


def _if_none_match(req: RequestHandler) -> set[str]:
    header = req.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def get_manifest(req: RequestHandler, match: re.Match[str]) -> Response | Hold:
    """GET /manifest/<group>.json: ETag, 304 on If-None-Match, long-poll with ?wait=N.

    A poll that holds the current ETag is parked by the plumbing (no thread)
    until the manifest changes or N seconds pass.
    """
    app = req.app
    group = match["group"]
    wait = _wait_seconds(req)
    if not req.may_read(group):
        raise HttpError(404, NOT_FOUND)
    if not app.known_group(group):
        raise HttpError(404, req.local_reason(f"no manifest for group {group!r:.80}"))
    manifest = app.manifests.get(group)
    held = _if_none_match(req)
    if wait <= 0 or "*" in held or manifest.etag not in held:
        return _manifest_answer(manifest, held)
    etag = manifest.etag

    def changed(timeout: float) -> bool:
        return app.manifests.wait_for_change(group, etag, timeout).etag != etag

    def answer() -> Response:
        return _manifest_answer(app.manifests.get(group), held)

    return Hold((group, etag), wait, changed, answer)


def _manifest_answer(manifest: Manifest, held: set[str]) -> Response:
    headers = {"ETag": manifest.etag, "Cache-Control": "no-cache"}
    if manifest.etag in held or "*" in held:
        return Response(304, b"", JSON, headers)
    return Response(200, manifest.dumps(), JSON, headers)


def post_manifest(req: RequestHandler, match: re.Match[str]) -> Response:
    """POST /manifest/<group>.json: merge (default) or `?replace=1` validated items."""
    req.require_token()
    group = match["group"]
    mode = req.query.get("replace", "0")
    if mode not in ("0", "1", "false", "true"):
        raise HttpError(400, "replace must be 1 or 0")
    doc = req.read_json()
    if not isinstance(doc, dict):
        raise HttpError(400, "the body must be a JSON object with 'items'")
    if doc.get("group", group) != group:
        raise HttpError(400, f"the body's group {doc['group']!r:.80} is not {group!r}")
    if "items" not in doc:
        raise HttpError(400, "'items' is missing")
    try:
        items, rejected = parse_items(doc["items"])
    except ManifestError as exc:
        raise HttpError(400, str(exc)) from None
    if rejected:
        reason = f"{len(rejected)} of {len(doc['items'])} items are not valid: " + "; ".join(
            str(bad) for bad in rejected[:20]
        )
        raise HttpError(400, reason, extra={"rejected": [bad.to_json() for bad in rejected]})
    try:
        if mode in ("1", "true"):
            manifest = req.app.manifests.replace(group, items)
        else:
            manifest = req.app.manifests.upsert(group, items)
    except ManifestError as exc:
        raise HttpError(400, str(exc)) from None
    _wait_durable(req, f"version {manifest.version} of {group}")
    summary = {
        "group": manifest.group,
        "version": manifest.version,
        "updated_at": manifest.updated_at,
        "count": len(manifest.items),
        "etag": manifest.etag,
    }
    return json_response(summary, headers={"ETag": manifest.etag})


def _wait_durable(req: RequestHandler, what: str) -> None:
    """Acknowledge a change only once it is on disk: a 200 then survives a SIGKILL."""
    manifests = req.app.manifests
    if manifests.flush(DURABLE_TIMEOUT):
        return
    reason = manifests.write_error or "the disk is slow"
    raise HttpError(
        503,
        f"{what} is served but not yet on disk after {DURABLE_TIMEOUT:g} s ({reason});"
        " a crash now would lose it",
        {"Retry-After": "10"},
    )


def _optional_str(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise HttpError(400, f"{name} must be a non-empty string")
    return value


def post_seed(req: RequestHandler, match: re.Match[str]) -> Response:
    """POST /seed: publish a file or folder under a share folder; answer its magnet."""
    req.require_token()
    doc = req.read_json()
    if not isinstance(doc, dict):
        raise HttpError(400, "the body must be a JSON object with 'path'")
    raw_path = _optional_str(doc, "path")
    if raw_path is None:
        raise HttpError(400, "path is missing")
    group, title, dest_path = (_optional_str(doc, k) for k in ("group", "title", "dest_path"))
    if dest_path is not None:
        try:
            check_curated_path(check_relative_path(dest_path))
        except ManifestError as exc:
            raise HttpError(400, f"dest_path: {exc}") from None
    publisher = req.app.publisher
    if publisher is None:
        raise HttpError(503, "this server does not seed")
    target = Path(raw_path)
    if "\x00" in raw_path or not target.is_absolute():
        raise HttpError(400, "path must be an absolute path on the curator")
    resolved = target.resolve()
    if not req.app.inside_share(resolved):
        raise HttpError(403, "path is not inside a share folder")
    if not resolved.exists():
        raise HttpError(400, "path does not exist")
    try:
        # The path as given: the publisher refuses a symbolic link anywhere below the share.
        item = publisher.publish(target, group, title=title, dest_path=dest_path)
    except (PublishError, ManifestError) as exc:
        raise HttpError(400, str(exc)) from None
    _wait_durable(req, f"the item {item.path!r}")
    return json_response({"magnet": item.torrent, "item": item.to_json()})


def get_seeds(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /seeds: the publisher's active and pending seeds (loopback, or all public)."""
    req.require_local()
    if req.app.publisher is None:
        return json_response({"seeds": []})
    return json_response({"seeds": req.app.publisher.seeds()})


def get_status(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /status: the engine's snapshot (loopback, or all public)."""
    req.require_local()
    if req.app.snapshot is None:
        raise HttpError(503, "no engine status on this server")
    return json_response(req.app.snapshot().to_json())


def get_metrics(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /metrics: Prometheus' text format (http/metrics.py); the same access as /status."""
    req.require_local()
    if req.app.metrics is None:
        raise HttpError(404, "no metrics on this server")
    body, content_type = req.app.metrics.exposition()
    return Response(200, body, content_type)


def get_torrent(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /torrents/<info-hash>.torrent: the .torrent file of a published item."""
    info_hash = match["info_hash"]
    if not _INFO_HASH.match(info_hash):
        raise HttpError(400, "the info hash must be 40 hex digits")
    info_hash = info_hash.lower()
    if not req.loopback and not any(map(req.may_read, req.app.groups_of(info_hash))):
        raise HttpError(404, NOT_FOUND)  # a private item's hash is never confirmed
    data = req.app.publisher.torrent_bytes(info_hash) if req.app.publisher else None
    if data is None:
        raise HttpError(404, req.local_reason(f"no torrent {info_hash}"))
    return Response(200, data, "application/x-bittorrent", {"Cache-Control": "max-age=86400"})


def get_identity(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /identity: the curator's manifest signing key (an invite code pins it)."""
    return json_response({"signing_key": req.app.signing_key})


def post_join(req: RequestHandler, match: re.Match[str]) -> Response:
    """POST /join `{"secret", "csr"}`: redeem an invite (groups/enrol.py); 404 unknown,
    409 used, 410 expired, 429 after 10 failed secrets a minute from one address."""
    from meshmedia.groups.enrol import join  # noqa: PLC0415 - cryptography, on first use

    app = req.app
    if app.join_failures.blocked(req.request.peer):
        raise HttpError(
            429, "too many unknown invite codes; retry in a minute", {"Retry-After": "60"}
        )
    if app.registry is None or app.signing_key is None:
        raise HttpError(503, "this curator takes no members: it has no signing key; restart it")
    if not req.request.tls and not req.loopback:
        reason = "POST /join needs https: the secret must not cross the network in clear"
        raise HttpError(400, reason)
    doc = req.read_json()
    secret, csr = (doc.get(k) if isinstance(doc, dict) else None for k in ("secret", "csr"))
    if not isinstance(secret, str) or re.fullmatch(r"[0-9a-fA-F]{32}", secret) is None:
        raise HttpError(400, "secret must be 32 hex digits")
    if not isinstance(csr, str) or not csr.isascii():
        raise HttpError(400, "csr must be a PEM certificate signing request")
    try:
        answer = join(app.registry, app.config.state_dir, app.signing_key, secret, csr.encode())
    except InviteError as exc:
        if exc.status == 404:
            app.join_failures.failed(req.request.peer)
        raise HttpError(exc.status, exc.reason) from None
    except MeshmediaError as exc:
        raise HttpError(400, str(exc)) from None
    peers = app.swarm_peers(_asked_host(req)) if app.swarm_peers else []
    return json_response({**answer, "peers": peers})


def _asked_host(req: RequestHandler) -> str | None:
    """The address the client reached this server at (its Host header), for the swarm's
    peer list; `localhost` is 127.0.0.1 (libtorrent dials addresses)."""
    host = req.headers.get("Host", "").strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return {"localhost": "127.0.0.1", "": None}.get(host.lower(), host)


def post_report(req: RequestHandler, match: re.Match[str]) -> Response:
    """POST /members/report: what a member has (privacy.md 3.5), kept with last_seen."""
    member = req.member
    if member is None or req.app.registry is None:
        raise HttpError(401, "a member's credential is required", {"WWW-Authenticate": "Member"})
    doc = req.read_json()
    if not isinstance(doc, dict):
        raise HttpError(400, "the report must be a JSON object")
    report = {key: doc[key] for key in REPORT_FIELDS if key in doc}
    seen = req.app.registry.report(member.member_id, report)
    return json_response({"member_id": member.member_id, "last_seen": seen})


REPORT_FIELDS = ("version", "free_disk", "placed", "downloading", "failed", "items")


def get_members(req: RequestHandler, match: re.Match[str]) -> Response:
    """GET /members: every member with its last report and its groups' items (loopback)."""
    if not req.loopback or req.app.registry is None:
        raise HttpError(404, NOT_FOUND)
    members = req.app.registry.members()
    groups = sorted({m.group for m in members} | set(req.app.groups()))
    items = {g: _item_rows(req.app, g) for g in groups if req.app.known_group(g)}
    return json_response({"members": [m.to_json() for m in members], "items": items})


def _item_rows(app: CuratorApp, group: str) -> list[dict[str, Any]]:
    return [
        {"info_hash": item.info_hash, "title": item.title, "path": item.path}
        for item in app.manifests.get(group).items
    ]


Route = Callable[[RequestHandler, "re.Match[str]"], "Response | Hold"]
ROUTES: tuple[tuple[str, re.Pattern[str], Route], ...] = (
    ("GET", re.compile(r"^/$"), health),
    ("GET", re.compile(r"^/manifest/(?P<group>[^/]+)\.json$"), get_manifest),
    ("POST", re.compile(r"^/manifest/(?P<group>[^/]+)\.json$"), post_manifest),
    ("POST", re.compile(r"^/seed$"), post_seed),
    ("GET", re.compile(r"^/seeds$"), get_seeds),
    ("GET", re.compile(r"^/status$"), get_status),
    ("GET", re.compile(r"^/metrics$"), get_metrics),
    ("GET", re.compile(r"^/torrents/(?P<info_hash>[^/]+)\.torrent$"), get_torrent),
    ("GET", re.compile(r"^/identity$"), get_identity),
    ("POST", re.compile(r"^/join$"), post_join),
    ("POST", re.compile(r"^/members/report$"), post_report),
    ("GET", re.compile(r"^/members$"), get_members),
)


def _template(pattern: re.Pattern[str]) -> str:
    """`/manifest/{group}.json` for the route pattern of manifests."""
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern)
    return text.strip("^$").replace("\\", "")


ROUTE_LABELS = tuple((pattern, _template(pattern)) for _, pattern, _ in ROUTES)


def route_label(path: str) -> str:
    """The route template a path falls under (a metrics label), or `other`."""
    for pattern, label in ROUTE_LABELS:
        if pattern.match(path):
            return label
    return "other"


def find_route(method: str, path: str) -> tuple[Route, re.Match[str]]:
    """The route for `method path`; HttpError 404 or 405 (with Allow) when none."""
    allowed = []
    for route_method, pattern, route in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method:
            return route, match
        allowed.append(route_method)
    if allowed:
        raise HttpError(405, f"{method} is not allowed here", {"Allow": ", ".join(allowed)})
    raise HttpError(404, "no such route")
