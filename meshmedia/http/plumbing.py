"""One hardened HTTP/1.1 server for the curator and the client's status port (asyncio, stdlib).

One event-loop thread holds every connection; an app's handler runs on a small
pool of worker threads (GET/HEAD on `workers`, other methods on `writers`, so a
slow POST never delays reads) and returns a `Response`, or a `Hold` for a
long-poll, which is parked in the loop: held requests pin no thread.

Against hostile clients (native_notes/security.md "HTTP", the measurements in
native_notes/http-server.md):
- at most `max_connections` (also bounded by the open-files limit): a new
  connection over the cap closes the stalest connection that is idle or still
  sending its request; when none is, the new one is closed at once;
- when the cap is full and none is idle, the answer read slowest (below
  `min_send_rate` on average after `send_grace` seconds) is dropped (senders.py);
- at most `max_held` held requests; more get 503 with Retry-After;
- the request line, headers and body must arrive within `request_timeout` of
  the request's first byte (of the accept for a new connection), however
  slowly they trickle; an idle keep-alive connection is closed after
  `idle_timeout`; an answer the client does not read for `send_timeout` is
  dropped;
- a held request whose client closed (FIN or RST) is released at once;
- framing is strict (wire.py): any ambiguity is answered 400/411/501 and the
  connection closed;
- when accept() runs out of file descriptors, accepting pauses until one of our
  connections closes (0.5 s at most) and the stalest waiting connections are
  closed, instead of spinning;
- an exception in a handler is a 500 with its traceback logged; the loop and
  the workers go on.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import ipaddress
import json
import logging
import re
import resource
import socket
import ssl
import termios
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .senders import Senders, Sending
from .wire import Head, Headers, WireError, find_head_end, parse_head

log = logging.getLogger(__name__)
JSON = "application/json"
CHUNK = 64 * 1024
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_LEADING_EMPTY_LINES = re.compile(rb"[\r\n]*")


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

    def __init__(self, head: Head, peer: str, conn: _Connection) -> None:
        """Split the target; WireError 400 when it is not a usable URL."""
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
        self.tls = conn.tls  # came over TLS (the curator's members' connections)
        self._conn = conn
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
            self._body = self._conn.server.read_body(self._conn) if self.has_body() else b""
        return self._body


def own_names() -> tuple[str, ...]:
    """This machine's own names a Host header may carry: its host name and
    `<hostname>.local` (mDNS). No DNS lookup: it would stall a start without DNS."""
    name = socket.gethostname().lower()
    return (name, f"{name}.local") if name else ()


def host_allowed(host: str | None, names: tuple[str, ...] = ()) -> bool:
    """True when a Host header may reach this server: none at all (HTTP/1.0), a literal
    IP address, `localhost` or one of `names` (the server's own), with any port. A
    browser led here by a rebound DNS name sends that name: refused (421)."""
    if host is None:
        return True
    text = host.strip().lower()
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        port_ok = not rest or re.fullmatch(r":\d{1,5}", rest) is not None
        return bool(bracket) and port_ok and _is_ip(literal)
    name, _, port = text.partition(":")
    if port and not port.isdigit():
        return False
    name = name.rstrip(".")
    return name == "localhost" or name in names or _is_ip(name)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def connection_cap(limits: Limits) -> int:
    """`max_connections`, lowered to leave room for the process's other files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return min(limits.max_connections, max(8, soft // 2, soft - 512))


class _RateLimitedLog:
    """At most `per_minute` lines a minute; the rest are counted and summed up."""

    def __init__(self, per_minute: int = 20) -> None:
        self.per_minute = per_minute
        self.window = 0.0
        self.lines = self.dropped = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.window >= 60:
            if self.dropped:
                log.warning("%d more HTTP protocol messages in the last minute", self.dropped)
            self.window, self.lines, self.dropped = now, 0, 0
        if self.lines < self.per_minute:
            self.lines += 1
            log.log(level, message, *args)
        else:
            self.dropped += 1


class HttpServer:
    """An HTTP/1.1 server on one loop thread; see the module docstring for its rules."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        handler: Handler,
        limits: Limits | None = None,
        *,
        server_header: str = "meshmedia",
        access_log: AccessLog | None = None,
        host_names: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Keep the settings; nothing is bound until `start()`. `host_names`: names
        besides `localhost`, literal IPs and `host` that a Host header may carry.
        `tls`: also speak TLS on the same port (a connection whose first byte is a
        TLS handshake's, 0x16, is wrapped with it)."""
        self.name = name
        self.tls = tls
        self.peeking: OrderedDict[socket.socket, asyncio.TimerHandle] = OrderedDict()
        names = (host, *host_names, *own_names())
        self.host_names = tuple({name.lower().rstrip(".") for name in names if name})
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.limits = limits or Limits()
        self.server_header = server_header
        self.access_log = access_log
        self.closing = False
        self.note = _RateLimitedLog()
        self.cap = self.limits.max_connections
        self.counts = dict.fromkeys(
            ("served", "evicted", "refused", "timed_out", "accept_pauses"), 0
        )
        self.connections: set[_Connection] = set()
        self.adopting = 0
        self.accept_paused = False
        self.waiting: OrderedDict[_Connection, None] = OrderedDict()
        self.senders = Senders(self.limits.min_send_rate, self.limits.send_grace)
        self.held: set[_Connection] = set()
        self._holders: dict[Hashable, set[_Connection]] = {}
        self._watchers: dict[Hashable, threading.Thread] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._date = (0, "")

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> HttpServer:
        """Bind and serve on a new loop thread (OSError when the address cannot be bound)."""
        self._listener = self._bind()
        self.cap = connection_cap(self.limits)
        self._pools = {
            "read": ThreadPoolExecutor(self.limits.workers, f"{self.name} read"),
            "write": ThreadPoolExecutor(self.limits.writers, f"{self.name} write"),
        }
        self._loop = loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        self._thread = threading.Thread(target=self._run, name=f"{self.name} http", daemon=True)
        self._thread.start()
        return self

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _run(self) -> None:
        loop, listener = self._loop, self._listener
        assert loop is not None
        assert listener is not None
        asyncio.set_event_loop(loop)
        loop.add_reader(listener.fileno(), self._accept)
        loop.run_forever()

    @property
    def started(self) -> bool:
        """True between `start()` and `close()`."""
        return self._loop is not None

    @property
    def port(self) -> int:
        """The bound port."""
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return int(self._listener.getsockname()[1])

    def close(self, grace: float = 5.0) -> None:
        """Stop accepting, answer held requests now, let answers under way finish, stop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop).result(grace + 5)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("%s HTTP server did not stop cleanly: %r", self.name, exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for watcher in list(self._watchers.values()):
            watcher.join(2)
        self._loop = self._thread = None

    async def _shutdown(self, grace: float) -> None:
        self.closing = True
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
        for conn in list(self.held):
            conn.hold_over()
        for conn in list(self.waiting):
            conn.abort()
        for sock in list(self.peeking):
            self._drop_peeking(sock)
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()

    def stats(self) -> HttpStats:
        """The counters now."""
        return HttpStats(
            connections=len(self.connections),
            waiting=len(self.waiting),
            held=len(self.held),
            cap=self.cap,
            **self.counts,
        )

    # -- accepting ----------------------------------------------------------------

    def _accept(self) -> None:
        """Accept what is pending (up to 64 a turn, so reads are never starved)."""
        assert self._listener is not None
        assert self._loop is not None
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_fds(exc)
                else:
                    log.warning("%s: accept failed: %s", self.name, exc)
                return
            if not self._make_room():
                self.counts["refused"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            # asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and an accepted
            # socket says 0: headers and body went as two segments and the body waited for
            # the client's delayed ACK (40 ms; 90 answers/s of a 100-item manifest)
            with contextlib.suppress(OSError):  # a Unix socket in tests
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.adopting += 1
            if self.tls is None:
                self._loop.create_task(self._adopt(sock))
            else:
                self._peek(sock)

    def _peek(self, sock: socket.socket) -> None:
        """Wait (in the loop, no thread) for a new connection's first byte, within
        `request_timeout`: TLS or plain HTTP. Such a connection is evicted first."""
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._peeked, sock)
        timer = self._loop.call_later(self.limits.request_timeout, self._drop_peeking, sock)
        self.peeking[sock] = timer

    def _peeked(self, sock: socket.socket) -> None:
        assert self._loop is not None
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        self._loop.remove_reader(sock.fileno())
        self.peeking.pop(sock).cancel()
        if not first:
            sock.close()
            self.adopting -= 1
            return
        self._loop.create_task(self._adopt(sock, tls=first == b"\x16"))

    def _drop_peeking(self, sock: socket.socket) -> None:
        """A connection that sent nothing in time, or the one evicted to make room."""
        timer = self.peeking.pop(sock, None)
        if timer is None:
            return
        timer.cancel()
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        sock.close()
        self.adopting -= 1

    def _make_room(self) -> bool:
        """Below the cap, or close the stalest waiting connection; False when none can go."""
        if len(self.connections) + self.adopting < self.cap:
            return True
        if self.peeking:  # it has sent nothing at all yet
            self._drop_peeking(next(iter(self.peeking)))
            self.counts["evicted"] += 1
            return True
        if self.waiting:
            stalest: _Connection | Sending = next(iter(self.waiting))
        elif (slow := self.senders.slowest()) is not None:
            stalest = slow  # no idle connection: the slowest reader of an answer goes
        else:
            return False
        self.senders.discard(stalest)
        stalest.abort()
        self.counts["evicted"] += 1
        return True

    async def _adopt(self, sock: socket.socket, tls: bool = False) -> None:
        assert self._loop is not None
        conn = _Connection(self)
        try:
            if tls:  # the handshake must end within the request deadline too
                await self._loop.connect_accepted_socket(
                    lambda: conn, sock, ssl=self.tls,
                    ssl_handshake_timeout=self.limits.request_timeout,
                )  # fmt: skip
            else:
                await self._loop.connect_accepted_socket(lambda: conn, sock)
        except OSError as exc:  # ssl.SSLError and TimeoutError are OSErrors
            log.debug("%s: connection lost at once: %s", self.name, exc)
            sock.close()
        finally:
            if not conn.made:  # else connection_made moved it to `connections`
                self.adopting -= 1

    def _out_of_fds(self, exc: OSError) -> None:
        """accept() failed for want of descriptors: pause, and free the stalest waiting ones.

        Accepting resumes as soon as one of our connections closes (a descriptor
        is free again), else after `accept_pause`: never a busy retry.
        """
        assert self._loop is not None
        assert self._listener is not None
        self.counts["accept_pauses"] += 1
        self._loop.remove_reader(self._listener.fileno())
        self.accept_paused = True
        victims = list(self.waiting)[: max(1, len(self.waiting) // 8)]
        for conn in victims:
            conn.abort()
        self.counts["evicted"] += len(victims)
        self.note(
            logging.WARNING,
            "%s: out of file descriptors (%s) with %d connections; paused accepting",
            self.name,
            exc.strerror,
            len(self.connections),
        )
        self._loop.call_later(self.limits.accept_pause, self._resume_accepting)

    def _resume_accepting(self) -> None:
        """Accept again after a pause for descriptors (no-op when not paused)."""
        if not self.accept_paused or self.closing or self._loop is None or not self._listener:
            return
        self.accept_paused = False
        self._loop.add_reader(self._listener.fileno(), self._accept)

    def forget(self, conn: _Connection) -> None:
        """A connection closed: its descriptor is free, so a paused accept can go on."""
        self.connections.discard(conn)
        self.waiting.pop(conn, None)
        self.senders.discard(conn)
        if self.accept_paused and self._loop is not None:
            self._loop.call_soon(self._resume_accepting)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Errors asyncio reports from callbacks: logged (rate-limited); the loop goes on."""
        exc = context.get("exception")
        self.note(logging.ERROR, "%s HTTP loop: %s: %r", self.name, context.get("message"), exc)

    # -- running handlers -------------------------------------------------------

    def dispatch(self, conn: _Connection, job: Callable[[], Response | Hold], what: str) -> None:
        """Run `job` on a worker (`what`: "METHOD /path"); its result goes back to `conn`."""
        assert self._loop is not None
        pool = self._pools["read" if what.startswith(("GET ", "HEAD ")) else "write"]
        loop = self._loop
        try:
            future = pool.submit(self._guarded, job, what)
        except RuntimeError:  # the pool is shut down: the server is closing
            conn.answer(HttpError(503, "the server is stopping").response())
            return

        def done(finished: concurrent.futures.Future[Response | Hold]) -> None:
            if not finished.cancelled() and not loop.is_closed():
                loop.call_soon_threadsafe(conn.answer, finished.result())

        future.add_done_callback(done)

    @staticmethod
    def _guarded(job: Callable[[], Response | Hold], what: str) -> Response | Hold:
        """The last resort: nothing a handler raises escapes a worker."""
        try:
            return job()
        except HttpError as exc:
            return exc.response()
        except Exception:
            log.exception("%s failed", what.encode("unicode_escape").decode("ascii")[:300])
            return HttpError(500, "internal error").response()

    def read_body(self, conn: _Connection) -> bytes:
        """On a worker: wait for the current request's body (HttpError when it cannot come)."""
        assert self._loop is not None
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(conn.start_body, future)
        try:
            return future.result(timeout=self.limits.request_timeout + 5)
        except concurrent.futures.TimeoutError:
            raise HttpError(408, "the body did not come in time") from None

    # -- held requests --------------------------------------------------------------

    def hold(self, conn: _Connection, hold: Hold) -> bool:
        """Park `conn` until its hold ends; False (nothing parked) when at the cap."""
        if len(self.held) >= self.limits.max_held or self.closing:
            return False
        self.held.add(conn)
        with self._lock:
            self._holders.setdefault(hold.key, set()).add(conn)
            watcher = None
            if hold.key not in self._watchers:
                watcher = threading.Thread(
                    target=self._watch, args=(hold.key, hold.changed),
                    name=f"{self.name} hold", daemon=True,
                )  # fmt: skip
                self._watchers[hold.key] = watcher
        if watcher is not None:
            watcher.start()
        return True

    def unhold(self, conn: _Connection, key: Hashable) -> None:
        """`conn` holds no more."""
        self.held.discard(conn)
        with self._lock:
            holders = self._holders.get(key)
            if holders is not None:
                holders.discard(conn)
                if not holders:
                    del self._holders[key]

    def _watch(self, key: Hashable, changed: Callable[[float], bool]) -> None:
        """One thread per key: wait in 1 s slices while anyone holds it, then wake them."""
        news = False
        while True:
            try:
                news = changed(1.0)
            except Exception:
                log.exception("%s: waiting for a held request failed", self.name)
                news = True
            with self._lock:
                if news or self.closing or not self._holders.get(key):
                    self._watchers.pop(key, None)
                    break
        loop = self._loop
        if news and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, key)

    def _wake(self, key: Hashable) -> None:
        with self._lock:
            holders = list(self._holders.get(key, ()))
        for conn in holders:
            conn.hold_over()

    # -- writing --------------------------------------------------------------------

    def log_access(self, request: Request | None, response: Response, started: float) -> None:
        """One access line per answered request (the app's own logger when it gives one)."""
        if request is None:
            return
        elapsed = time.monotonic() - started
        try:
            if self.access_log is not None:
                self.access_log(request, response, elapsed)
            else:
                status = response.status
                log.debug('%s "%s %s" %d', request.peer, request.method, request.path, status)
        except Exception:
            log.exception("%s: the access log failed", self.name)

    def head_bytes(self, response: Response, length: int, keep_alive: bool) -> bytes:
        """The status line and header fields of `response`."""
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Server: {self.server_header}",
            f"Date: {self._date[1]}",
            f"Content-Type: {response.content_type}",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        if response.status not in (204, 304):
            lines.append(f"Content-Length: {length}")
        if not keep_alive:
            lines.append("Connection: close")
        head = "\r\n".join(lines)
        if "\n" in head.replace("\r\n", "") or "\r" in head.replace("\r\n", ""):
            raise ValueError("a header of the response has a line break")
        return (head + "\r\n\r\n").encode("latin-1")


# The connection's states: waiting for a request, a handler running, reading a body for
# a handler, parked by a Hold, writing the answer, closing, closed.
WAITING, RUNNING, BODY, HELD, SENDING, CLOSING, CLOSED = range(7)


def _kernel_queue(transport: asyncio.Transport) -> int:
    """Bytes written to a socket that its peer has not acknowledged yet (0 if unknown)."""
    sock = transport.get_extra_info("socket")
    try:
        queued = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)  # SIOCOUTQ on a socket
    except (OSError, AttributeError, ValueError):
        return 0
    return max(queued[0], 0)


class _Connection(asyncio.Protocol):
    """One client connection: reads a request, hands it to the server, writes the answer."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.state = WAITING
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.began = False
        self.scanned = 0
        self.peer = "-"
        self.tls = False
        self.request: Request | None = None
        self.started = 0.0
        self.unread = 0
        self.hold: Hold | None = None
        self.body_future: concurrent.futures.Future[bytes] | None = None
        self.left = 0.0
        self.expect_continue = False
        self.closing_since = 0.0
        self.peer_closed = False
        self.reading_paused = False
        self.writing_paused = False
        self.out: memoryview | None = None
        self.keep_alive = False
        self.made = False
        self.answer_began = 0.0
        self.answer_size = 0

    # -- asyncio's callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection and wait for its first request."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.made = True
        self.server.adopting -= 1
        if self.server.closing:
            transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "-"
        self.tls = transport.get_extra_info("sslcontext") is not None
        transport.set_write_buffer_limits(high=CHUNK)
        self.server.connections.add(self)
        self.wait_for_request(first=True)

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: parse what the current state expects."""
        if self.state in (CLOSING, CLOSED):
            return  # lingering: the rest of what the client sends is dropped
        self.buffer += data
        if self.state == WAITING:
            self.read_head()
        elif self.state == BODY:
            self.read_body()
        elif len(self.buffer) > self.limits.max_head:
            self.pause_reading()  # a client pipelining far ahead of its answers

    def eof_received(self) -> bool:
        """The client closed its side: a held or waiting request ends; an answer is still sent."""
        if self.state in (RUNNING, SENDING):
            self.peer_closed = True
            return True  # keep the transport open to write the answer
        if self.state == HELD and self.hold is not None:
            self.server.unhold(self, self.hold.key)
            self.hold = None
        if self.state == BODY:
            self.fail_body(HttpError(400, "the client closed before the whole body came"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (and release whatever it held)."""
        if self.state == HELD and self.hold is not None:
            self.server.unhold(self, self.hold.key)
        if self.body_future is not None:
            self.fail_body(HttpError(400, "the connection was lost"))
        self.state = CLOSED
        self.cancel_timer()
        self.server.forget(self)

    def pause_writing(self) -> None:
        """The client reads slower than we write: stop, and give it `send_timeout`."""
        self.writing_paused = True
        if self.state == SENDING:
            self.arm(self.limits.send_timeout, self.send_timed_out)

    def resume_writing(self) -> None:
        """The client read some: write on."""
        self.writing_paused = False
        if self.state == SENDING:
            self.cancel_timer()
            self.pump()

    # -- reading a request --------------------------------------------------------

    def wait_for_request(self, first: bool = False) -> None:
        """Wait for the next request: `request_timeout` for a new connection, else idle."""
        self.state = WAITING
        self.server.senders.discard(self)  # idle now: evictable as any waiting connection
        self.began = False
        self.scanned = 0
        self.request = None
        self.server.waiting[self] = None
        self.server.waiting.move_to_end(self)
        self.resume_reading()
        timeout = self.limits.request_timeout if first else self.limits.idle_timeout
        self.deadline = time.monotonic() + timeout
        self.arm(timeout, self.request_timed_out)
        if first:
            self.began = True  # a new connection's deadline runs from the accept
        if self.buffer:
            self.read_head()

    def read_head(self) -> None:
        """Find the end of the head in the buffer; parse and dispatch it when complete."""
        if not self.began:
            self.start_request_clock()
        lead = _LEADING_EMPTY_LINES.match(self.buffer) if self.scanned == 0 else None
        if lead:  # empty lines before a request line are ignored (RFC 9112 2.2)
            del self.buffer[: lead.end()]
        if not self.buffer:
            return
        found = find_head_end(self.buffer, self.scanned)
        if found is None:
            self.scanned = len(self.buffer)
            self.check_head_size()
            return
        end, body_start = found
        raw = bytes(self.buffer[:end])
        del self.buffer[:body_start]
        if len(raw.split(b"\n", 1)[0]) > self.limits.max_line:
            self.refuse(414, f"the request line is over {self.limits.max_line} bytes")
            return
        if len(raw) > self.limits.max_head:  # it came in one read (review12 finding 14)
            self.refuse(431, f"the request head is over {self.limits.max_head} bytes")
            return
        try:
            head = parse_head(raw)
            request = Request(head, self.peer, self)
        except WireError as exc:
            self.refuse(exc.status, exc.reason)
            return
        if not host_allowed(request.headers.get("Host"), self.server.host_names):
            self.refuse(421, "the Host header names another server (DNS rebinding?)")
            return
        self.run(request, head)

    def start_request_clock(self) -> None:
        """The first byte of a request on a kept-alive connection: its deadline starts."""
        self.began = True
        self.deadline = time.monotonic() + self.limits.request_timeout
        self.arm(self.limits.request_timeout, self.request_timed_out)

    def check_head_size(self) -> None:
        """Refuse a head that has grown past the limits without ending."""
        if b"\n" not in self.buffer[: self.limits.max_line + 2]:
            if len(self.buffer) > self.limits.max_line:
                self.refuse(414, f"the request line is over {self.limits.max_line} bytes")
        elif len(self.buffer) > self.limits.max_head:
            self.refuse(431, f"the request head is over {self.limits.max_head} bytes")

    def run(self, request: Request, head: Head) -> None:
        """Hand a parsed request to the server's handler."""
        self.server.waiting.pop(self, None)
        self.cancel_timer()
        self.state = RUNNING
        self.request = request
        self.started = time.monotonic()
        self.left = max(self.deadline - self.started, 0.0)
        self.unread = head.content_length
        self.expect_continue = head.expect_continue
        self.server.dispatch(self, lambda: self.server.handler(request), request.describe())

    def request_timed_out(self) -> None:
        """The deadline passed while reading a request or waiting idle."""
        self.timer = None
        if self.state == BODY:
            self.fail_body(HttpError(408, "the request did not come in time"))
            return
        if self.state != WAITING:
            return
        self.server.counts["timed_out"] += 1
        if self.buffer and self.scanned:
            self.refuse(408, f"the request took over {self.limits.request_timeout:g} s")
        else:
            self.abort()

    # -- the body, read when a handler asks -------------------------------------

    def start_body(self, future: concurrent.futures.Future[bytes]) -> None:
        """A handler wants the body (on the loop): read it within the request's deadline."""
        if self.state != RUNNING or self.transport is None:
            future.set_exception(HttpError(400, "the connection was lost"))
            return
        if self.unread > self.limits.max_body:
            future.set_exception(HttpError(413, f"the body is over {self.limits.max_body} bytes"))
            return
        self.state = BODY
        self.body_future = future
        # What was left of the request's deadline when its head came: the time the
        # handler took before asking for the body is ours, not the client's.
        self.arm(max(self.left, 0.5), self.request_timed_out)
        if self.expect_continue and len(self.buffer) < self.unread:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.resume_reading()
        self.read_body()

    def read_body(self) -> None:
        """Hand the body over once all of it is in the buffer."""
        if self.body_future is None or len(self.buffer) < self.unread:
            return
        body = bytes(self.buffer[: self.unread])
        del self.buffer[: self.unread]
        self.unread = 0
        self.cancel_timer()
        self.state = RUNNING
        future, self.body_future = self.body_future, None
        future.set_result(body)

    def fail_body(self, error: HttpError) -> None:
        """The body cannot come: the handler's read raises `error`."""
        future, self.body_future = self.body_future, None
        if self.state == BODY:
            self.state = RUNNING
        if future is not None and not future.done():
            future.set_exception(error)

    # -- answering ----------------------------------------------------------------

    def answer(self, result: Response | Hold) -> None:
        """The handler's result (on the loop): send it, or park the connection."""
        if self.state == CLOSED:
            return
        if isinstance(result, Hold):
            if self.peer_closed:
                self.abort()
            elif self.server.closing:
                what = self.request.describe() if self.request else "GET (held)"
                self.server.dispatch(self, result.answer, what)
            elif self.server.hold(self, result):
                self.state = HELD
                self.hold = result
                self.arm(result.seconds, self.hold_over)
            else:
                busy = HttpError(503, "too many held requests; retry later", {"Retry-After": "5"})
                self.send(busy.response())
            return
        self.send(result)

    def hold_over(self) -> None:
        """The hold ends (news, its time is up, or the server closes): compute the answer."""
        hold = self.hold
        if self.state != HELD or hold is None:
            return
        self.cancel_timer()
        self.server.unhold(self, hold.key)
        self.hold = None
        self.state = RUNNING
        what = self.request.describe() if self.request else "GET (held)"
        self.server.dispatch(self, hold.answer, what)

    def refuse(self, status: int, reason: str) -> None:
        """A request that cannot be served: answer `status` and close."""
        self.server.waiting.pop(self, None)
        self.server.note(logging.INFO, '%s %d "%s" (refused)', self.peer, status, reason)
        self.request = None
        self.send(HttpError(status, reason).response(), close=True)

    def send(self, response: Response, close: bool = False) -> None:
        """Write `response`; then wait for the next request or close."""
        request = self.request
        if self.transport is None or self.state == CLOSED:
            return
        keep = (
            request is not None and request.keep_alive and not close
            and self.unread == 0 and not self.peer_closed and not self.server.closing
        )  # fmt: skip
        try:
            head = self.server.head_bytes(response, len(response.body), keep)
        except (ValueError, UnicodeEncodeError):
            log.exception("an HTTP handler made a response that cannot be written")
            response, keep = HttpError(500, "internal error").response(), False
            head = self.server.head_bytes(response, len(response.body), keep)
        head_only = request is not None and request.method == "HEAD"
        body = b"" if head_only or response.status in (204, 304) else response.body
        self.server.log_access(request, response, self.started)
        self.state = SENDING
        self.keep_alive = keep
        self.transport.write(head)
        self.out = memoryview(body)
        self.answer_began, self.answer_size = time.monotonic(), len(head) + len(body)
        self.server.senders.add(self)
        if self.writing_paused:
            self.arm(self.limits.send_timeout, self.send_timed_out)
        self.pump()

    def pump(self) -> None:
        """Write the answer in chunks while the client keeps up."""
        while self.out is not None and not self.writing_paused and self.transport is not None:
            chunk, self.out = self.out[:CHUNK], self.out[CHUNK:]
            if chunk:
                self.transport.write(chunk)
            if not self.out:
                self.out = None
                self.sent()

    def sent(self) -> None:
        """The whole answer is queued: next request, or close."""
        self.server.counts["served"] += 1
        if self.keep_alive:
            self.wait_for_request()
        else:
            self.close_after_answer()

    def send_timed_out(self) -> None:
        """The client has read nothing of its answer for `send_timeout`."""
        self.timer = None
        self.server.counts["timed_out"] += 1
        self.abort()

    # -- closing ------------------------------------------------------------------

    def close_after_answer(self) -> None:
        """Half-close once the answer is flushed; drop what the client still sends, then close."""
        assert self.transport is not None
        self.state = CLOSING
        self.server.waiting.pop(self, None)
        self.closing_since = time.monotonic()
        if self.peer_closed or not self.transport.can_write_eof():
            self.transport.close()  # after the buffer is flushed
            self.arm(self.limits.send_timeout, self.abort)
            return
        self.resume_reading()
        self.transport.write_eof()
        self.arm(self.limits.linger, self.linger_over)

    def linger_over(self) -> None:
        """Close for good (waiting up to `send_timeout` for a slow reader to take the answer)."""
        self.timer = None
        if self.transport is None:
            return
        slow = time.monotonic() - self.closing_since < self.limits.send_timeout
        if self.transport.get_write_buffer_size() and slow:
            self.arm(1.0, self.linger_over)
        else:
            self.abort()

    def delivered(self) -> int:
        """Bytes of the current answer the client has acknowledged: what is not in
        our buffer, nor in the kernel's send queue (SIOCOUTQ, Linux; elsewhere the
        kernel's queue counts as delivered)."""
        if self.transport is None:
            return self.answer_size
        unsent = len(self.out or b"") + self.transport.get_write_buffer_size()
        return self.answer_size - unsent - _kernel_queue(self.transport)

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        self.server.waiting.pop(self, None)
        if self.transport is not None:
            self.transport.abort()

    # -- small helpers --------------------------------------------------------------

    def arm(self, seconds: float, callback: Callable[[], None]) -> None:
        """One timer per connection: (re)set it."""
        self.cancel_timer()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(seconds, callback)

    def cancel_timer(self) -> None:
        """No timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_reading(self) -> None:
        """Stop reading from the client (its bytes wait in the kernel)."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the client again."""
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
