"""Hostile inputs for the client's tests: hand-built torrents, a real seeder, bad servers.

`bencode` is our own (the tests do not trust the code under test to build what
it will parse). `Seeder` is a real libtorrent session (meshmedia's Engine) on
127.0.0.1 that seeds hand-built torrents from the paths libtorrent gives their
(sanitised) names. `serve` runs a real HTTP server whose routes can answer
normally, trickle, cut a body short, or send a gzip bomb.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt

from meshmedia.engine import Engine, TorrentState
from meshmedia.store import Store
from tests.helpers import make_config

PIECE = 16384


def bencode(value: Any) -> bytes:
    """Bencode ints, bytes, str, lists and dicts (keys sorted as bytes)."""
    if isinstance(value, bool):
        raise TypeError("no booleans in bencode")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        pairs = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in pairs) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


@dataclass(frozen=True)
class HandBuilt:
    """A v1 torrent built by hand: its bytes, info hash and each file's payload."""

    data: bytes
    info_hash: str
    payloads: tuple[bytes, ...]

    def magnet(self, name: str, peer_port: int) -> str:
        """A magnet with the seeder as x.pe."""
        return f"magnet:?xt=urn:btih:{self.info_hash}&dn={name}&x.pe=127.0.0.1:{peer_port}"


def hand_built(
    name: bytes, files: list[tuple[list[bytes], bytes]] | None = None, single: bytes | None = None
) -> HandBuilt:
    """A multi-file torrent (`files`: path parts and payload) or a single-file one."""
    payloads = [payload for _, payload in files] if files is not None else [single or b""]
    joined = b"".join(payloads)
    pieces = b"".join(
        hashlib.sha1(joined[i : i + PIECE]).digest() for i in range(0, len(joined), PIECE)
    )
    info: dict[str, Any] = {"name": name, "piece length": PIECE, "pieces": pieces}
    if files is None:
        info["length"] = len(joined)
    else:
        info["files"] = [{"length": len(p), "path": parts} for parts, p in files]
    encoded_info = bencode(info)
    data = b"d4:info" + encoded_info + b"e"
    return HandBuilt(data, hashlib.sha1(encoded_info).hexdigest(), tuple(payloads))


class Seeder:
    """A real libtorrent session on 127.0.0.1 seeding hand-built torrents."""

    def __init__(self, base: Path) -> None:
        self.config = make_config(base, "seeder")
        self.store = Store.in_state_dir(self.config.state_dir)
        self.engine = Engine(self.config, self.store)
        self.data_dir = base / "seeder" / "data"

    @property
    def port(self) -> int:
        """The BitTorrent port."""
        return self.engine.listen_port

    def seed(self, torrent: HandBuilt) -> None:
        """Write each payload where libtorrent puts that file, then seed it."""
        ti = lt.torrent_info(lt.bdecode(torrent.data))
        with warnings.catch_warnings():  # files(), not layout(): the names on disk
            warnings.simplefilter("ignore", DeprecationWarning)
            storage = ti.files()
        folder = self.data_dir / torrent.info_hash
        for index, payload in enumerate(torrent.payloads):
            path = folder / storage.file_path(index)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        self.engine.add_seed(torrent.data, folder, verified=True)
        self.engine.wait_until(torrent.info_hash, TorrentState.SEEDING, 30)

    def close(self) -> None:
        """Stop the session."""
        self.engine.close()
        self.store.close()


# -- HTTP -----------------------------------------------------------------------------------
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Site:
    """A real HTTP server's routes (path -> handler) and what it saw."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    url: str = ""
    closing: threading.Event = field(default_factory=threading.Event)

    def body(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> str:
        """Serve `data` at `path`; returns the URL."""

        def route(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            for key, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = route
        return self.url + path

    def trickle(self, path: str, every: float = 0.2, length: int = 1 << 20) -> str:
        """Announce `length` bytes, then send one byte every `every` seconds."""

        def route(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(length))
            handler.end_headers()
            for _ in range(length):
                if self.closing.wait(every):
                    return
                handler.wfile.write(b"d")
                handler.wfile.flush()

        self.routes[path] = route
        return self.url + path

    def truncated(self, path: str, data: bytes, announced: int) -> str:
        """Announce `announced` bytes, send `data` (fewer), then close."""

        def route(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(announced))
            handler.end_headers()
            handler.wfile.write(data)
            handler.close_connection = True

        self.routes[path] = route
        return self.url + path

    def gzip_bomb(self, path: str, size: int) -> str:
        """`size` zero bytes, gzip-compressed (about 1000:1), as Content-Encoding: gzip."""
        squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = bytes(1 << 20)
        parts = [squeeze.compress(block) for _ in range(size >> 20)]
        data = b"".join([*parts, squeeze.flush()])
        return self.body(path, data, {"Content-Encoding": "gzip"})


@contextmanager
def serve() -> Iterator[Site]:
    """A real HTTP server on 127.0.0.1 for a Site's routes (404 elsewhere)."""
    site = Site()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            site.hits[path] = site.hits.get(path, 0) + 1
            route = site.routes.get(path)
            if route is None:
                self.send_error(404)
                return
            with contextlib.suppress(OSError):  # the client hung up: what these tests provoke
                route(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        site.closing.set()
        server.shutdown()
        server.server_close()


def files_under(root: Path, *skip: Path) -> dict[Path, bytes]:
    """Every file under `root` (not following links), except under `skip`, with its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or path.is_relative_to(s) for s in skip):
            continue
        if path.is_file() and not path.is_symlink():
            found[path] = path.read_bytes()
        elif path.is_symlink():
            found[path] = b"-> " + str(path.readlink()).encode()
    return found


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """True once `condition()` holds, False after `timeout` (for a test to assert on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
