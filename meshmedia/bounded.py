"""Bounded readers for everything the client takes from the network.

Every manifest, `.torrent` and HTTP body the client reads passes through here
(or through the bencode reader in torrentinfo.py, which uses these limits), so
that no input can make it use unbounded memory, time, stack or CPU:

- `http_get` reads one answer: the body capped in *decoded* bytes (gzip and
  deflate are decompressed here, in bounded steps, never by urllib3), and the
  whole request, headers and body, under one overall deadline, not only a
  per-read timeout (a server that trickles one byte a second is cut off when the
  deadline passes: a watchdog shuts the socket down).
- `load_json` decodes a JSON document (the one JSON reader: manifests, pointers
  and the curator's request bodies): size, UTF-8, nesting depth, the length of
  numbers, finite floats, in linear time; `bad_text` finds lone surrogates
  (`"\\ud800"`), which JSON escapes can carry and which nothing downstream (SQLite,
  UTF-8 output) accepts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import MeshmediaError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # a manifest or a .torrent, after decompression
MAX_DEPTH = 32  # a manifest nests 5 deep (document, items, item, files, file)
MAX_NUMBER_DIGITS = 40  # int("9" * 10**7) is quadratic on Python 3.10
MAX_INT_DIGITS = 19  # a JSON integer: what SQLite keeps (int64) has at most 19 digits
MAX_FILES = 100_000  # the files of one torrent, or of one folder item of a manifest
CHUNK = 64 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


class ReadError(MeshmediaError):
    """An answer or document is refused: too large, too slow, truncated, malformed."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, headers, and the decoded body (read only for a 200)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


# -- the deadline ---------------------------------------------------------------------
_current = threading.local()


class _Watchdog:
    """Shuts down the socket of the request under way when its deadline passes."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _current.watchdog = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _current.watchdog = None

    def attach(self, sock: socket.socket | None) -> None:
        """The socket the request reads from; shut down at once if already late."""
        with self._lock:
            self._sock = sock
            late = self.expired
        if late:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        _shutdown(sock)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked on another thread


def _watch(sock: socket.socket | None) -> None:
    watchdog = getattr(_current, "watchdog", None)
    if watchdog is not None:
        watchdog.attach(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections whose socket the deadline can shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


class _PinnedAdapter(_WatchedAdapter):
    """https to one server whose certificate is pinned (its SHA-256, hex): no CA and no
    name check, only that certificate (a private group's curator, groups/curator_tls.py)."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host, pool = super().build_connection_pool_key_attributes(request, False, cert)
        pool["assert_fingerprint"] = self.fingerprint
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, False, cert)


def bounded_session(pins: Mapping[str, str] | None = None) -> requests.Session:
    """A requests Session whose requests `http_get` can hold to an overall deadline.

    `pins`: `https://host:port` -> the SHA-256 (hex) of the one certificate that
    origin may present (a joined group's curator); other https URLs are verified as
    usual."""
    session = requests.Session()
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    for origin, fingerprint in (pins or {}).items():
        session.mount(origin.rstrip("/") + "/", _PinnedAdapter(fingerprint))
    return session


# -- reading an answer ----------------------------------------------------------------
_NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,  # urllib3 and http.client raise it on some malformed answers
)


def http_get(
    session: requests.Session,
    url: str,
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    deadline: float = 60.0,
    read_timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """GET `url` within `deadline` seconds overall; a 200's body is read and decoded.

    Raises ReadError (never anything else) when the request fails, takes longer
    than the deadline, or the body is over `max_bytes` once decompressed.
    """
    sent = {"Accept-Encoding": "gzip, deflate", **(headers or {})}
    with _Watchdog(deadline) as watchdog:
        try:
            with session.get(
                url, headers=sent, stream=True, timeout=(min(10.0, deadline), read_timeout)
            ) as answer:
                _watch_answer(answer)
                body = _read_body(answer, max_bytes) if answer.status_code == 200 else b""
        except ReadError:
            raise
        except _NETWORK_ERRORS as exc:
            if watchdog.expired:
                raise ReadError(f"no complete answer within {deadline:.0f} s") from None
            raise ReadError(f"{type(exc).__name__}: {exc}") from None
        if watchdog.expired:  # a shut-down socket can also look like a short, complete answer
            raise ReadError(f"no complete answer within {deadline:.0f} s")
        return Answer(answer.status_code, answer.reason or "", answer.headers, body)


def _watch_answer(answer: requests.Response) -> None:
    """Sessions without our adapter: watch the socket from the body on at least."""
    connection = getattr(answer.raw, "_connection", None) or getattr(answer.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        _watch(sock)


def _read_body(answer: requests.Response, max_bytes: int) -> bytes:
    length = answer.headers.get("Content-Length", "")
    encoding = answer.headers.get("Content-Encoding", "identity").strip().lower()
    if length.isdigit() and int(length) > max_bytes and encoding == "identity":
        raise ReadError(f"the answer is {length} bytes, over the cap of {max_bytes}")
    decoder = _Decoder(encoding, max_bytes)
    raw = 0
    while chunk := answer.raw.read(CHUNK, decode_content=False):
        raw += len(chunk)
        decoder.feed(chunk)
    if length.isdigit() and raw < int(length):
        raise ReadError(f"the answer was cut short: {raw} of {length} bytes")
    return decoder.result()


class _Decoder:
    """Content-Encoding decoding that never holds more than `limit` decoded bytes."""

    def __init__(self, encoding: str, limit: int) -> None:
        if encoding in ("gzip", "x-gzip"):
            self._zlib: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib header or gzip
        elif encoding in ("identity", ""):
            self._zlib = None
        else:
            raise ReadError(f"unsupported Content-Encoding {encoding!r:.40}")
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Decode one raw chunk; ReadError once the decoded size passes the limit."""
        if self._zlib is None:
            self._add(data)
            return
        try:
            while data and not self._zlib.eof:
                self._add(self._zlib.decompress(data, self._limit - self._size + 1))
                data = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise ReadError(f"the compressed answer is corrupt: {exc}") from None

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise ReadError(f"the answer is over the cap of {self._limit} bytes once decoded")
        self._parts.append(data)

    def result(self) -> bytes:
        """Everything decoded."""
        return b"".join(self._parts)


# -- JSON -------------------------------------------------------------------------------
def _number(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(
    data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Decode one JSON document within the limits; ReadError names what is wrong.

    The one JSON reader of network input (manifests, DHT pointers, request bodies).
    Refused: over `max_bytes`, not UTF-8 (a BOM is allowed), not JSON, nesting over
    `max_depth`, NaN/Infinity, a float that overflows, an integer of more than
    MAX_INT_DIGITS digits. Linear in the input: the C scanner reads it once and the
    depth is counted on the decoded value (a regular expression that skipped strings
    first took 18 s for a 60 kB run of `\\"`, quadratically; review 12, finding 5).
    Lone surrogates are left to `bad_text`: a manifest rejects only the item holding one.
    """
    size = len(data)
    if size > max_bytes:
        raise ReadError(f"the document is {size} bytes, over the cap of {max_bytes}")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        obj = json.loads(text, parse_int=_number, parse_float=_finite, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ReadError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ReadError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise ReadError(f"not usable JSON: {exc}") from None
    if depth_over(obj, max_depth):
        raise ReadError(f"nested deeper than {max_depth} levels")
    return obj


def depth_over(obj: object, limit: int) -> bool:
    """True when lists and objects in `obj` nest deeper than `limit` (no recursion)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def bad_text(obj: object) -> str | None:
    """The first string (key or value) in `obj` holding a lone surrogate, else None."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return value
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None
