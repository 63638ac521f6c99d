"""The curator's manifest HTTP module: the routes (routes.py) on the hardened plumbing.

The plumbing (server.py and connection.py: connections, caps, deadlines, framing, long-poll
holds) is shared with the client's status server. This module adds what is the
curator's: the server that answers through the route table (routes.py: the
routes, the token check, bounded JSON bodies) and one access-log line per
request (never the headers).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from meshmedia import __version__
from meshmedia.config import GROUP_RE, Config, local_url
from meshmedia.errors import ConfigError
from meshmedia.groups.registry import Registry
from meshmedia.manifest import ManifestStore

from .auth import load_or_create_token
from .messages import Hold, HttpStats, Limits, Request, Response
from .metrics import Metrics
from .routes import MAX_BODY, JoinFailures, RequestHandler, find_route, route_label
from .server import HttpServer

log = logging.getLogger(__name__)


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
        limits: Limits | None = None,
        home_page: Callable[[], bytes] | None = None,
        metrics: Metrics | None = None,
        registry: Registry | None = None,
        signing_key: str | None = None,
        tls: ssl.SSLContext | None = None,
        swarm_peers: Callable[[str | None], list[str]] | None = None,
    ) -> None:
        """Keep the collaborators; nothing is bound until `start()`.

        `publisher` and `snapshot` may be None for a manifest-only server
        (/seed then answers 503). `home_page`, when given, renders GET / for
        clients that accept text/html. `limits`: the plumbing's caps and
        deadlines (messages.Limits; the defaults suit a curator). `metrics`:
        GET /metrics answers from it, and every answered request is counted.
        `registry`: the members and invites (POST /join, credentials of private
        groups); `signing_key`: the manifests' public key (hex). `tls`: speak TLS
        on the same port too (members and joins; groups/curator_tls.py).
        `swarm_peers(host)`: the curator's SSL peer addresses for a joining member
        that reached it at `host` (curator/swarms.py).
        """
        self.config = config
        self.manifests = manifests
        self.publisher = publisher
        self.snapshot = snapshot
        self.token = token or load_or_create_token(config)
        self.home_page = home_page
        self.metrics = metrics
        self.registry = registry
        self.signing_key = signing_key
        self.swarm_peers = swarm_peers
        self.join_failures = JoinFailures()
        self._hashes: dict[str, tuple[str, frozenset[str]]] = {}  # group -> (etag, hashes)
        self.http = HttpServer(
            "curator",
            config.host,
            config.port,
            self.handle,
            limits or Limits(max_body=MAX_BODY),
            server_header=f"meshmedia/{__version__}",
            access_log=self._access,
            tls=tls,
        )
        self._share_roots = tuple(share.path.resolve() for share in config.shares)

    def handle(self, request: Request) -> Response | Hold:
        """Answer one request through the route table (on a plumbing worker)."""
        method = "GET" if request.method == "HEAD" else request.method
        route, match = find_route(method, request.path)
        return route(RequestHandler(self, request), match)

    def _access(self, request: Request, response: Response, seconds: float) -> None:
        _log_access(request, response, seconds)
        if self.metrics is not None:
            self.metrics.request(route_label(request.path), response.status)

    def start(self) -> ManifestServer:
        """Bind `config.host:config.port` (0 = a free port) and serve on a thread."""
        try:
            self.http.start()
        except OSError as exc:
            where = f"{self.config.host}:{self.config.port}"
            raise ConfigError("port", f"cannot listen on {where}: {exc.strerror}") from exc
        log.info("serving manifests on %s", self.url)
        return self

    @property
    def port(self) -> int:
        """The bound port."""
        return self.http.port

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:5000` (loopback for a wildcard bind)."""
        return local_url(self.config.host, self.port)

    def stats(self) -> HttpStats:
        """The plumbing's counters: connections, held long-polls, evictions, timeouts."""
        return self.http.stats()

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

    def groups_of(self, info_hash: str) -> set[str]:
        """The groups whose manifests list the item of `info_hash` (cached per ETag)."""
        found = set()
        for group in self.manifests.groups():
            manifest = self.manifests.get(group)
            cached = self._hashes.get(group)
            if cached is None or cached[0] != manifest.etag:
                hashes = frozenset(i.info_hash for i in manifest.items if i.info_hash)
                cached = self._hashes[group] = (manifest.etag, hashes)
            if info_hash in cached[1]:
                found.add(group)
        return found

    def close(self) -> None:
        """Stop accepting, answer held long-polls, finish the answers under way."""
        self.http.close()

    def __enter__(self) -> ManifestServer:
        """Start (when not started yet) and return the server."""
        if not self.http.started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the server."""
        self.close()


def _log_access(request: Request, response: Response, seconds: float) -> None:
    """One line per request; manifest polls at DEBUG (clients make one a minute each)."""
    polling = request.path.startswith("/manifest/") and request.method == "GET"
    log.log(
        logging.DEBUG if polling else logging.INFO,
        '%s "%s %s" %d %d %.1fms',
        request.peer,
        request.method,
        _printable(request.target),
        response.status,
        len(response.body),
        seconds * 1000,
    )


def status_page() -> bytes:
    """The live status page served at GET / to browsers."""
    return resources.files(__package__).joinpath("status.html").read_bytes()
