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

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import resource
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from .connection import Connection
from .hosts import own_names
from .messages import AccessLog, Handler, Hold, HttpError, HttpStats, Limits, Request, Response
from .senders import Senders, Sending

log = logging.getLogger(__name__)

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


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
        self.connections: set[Connection] = set()
        self.adopting = 0
        self.accept_paused = False
        self.waiting: OrderedDict[Connection, None] = OrderedDict()
        self.senders = Senders(self.limits.min_send_rate, self.limits.send_grace)
        self.held: set[Connection] = set()
        self._holders: dict[Hashable, set[Connection]] = {}
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
            stalest: Connection | Sending = next(iter(self.waiting))
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
        conn = Connection(self)
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

    def forget(self, conn: Connection) -> None:
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

    def dispatch(self, conn: Connection, job: Callable[[], Response | Hold], what: str) -> None:
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

    def read_body(self, conn: Connection) -> bytes:
        """On a worker: wait for the current request's body (HttpError when it cannot come)."""
        assert self._loop is not None
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(conn.start_body, future)
        try:
            return future.result(timeout=self.limits.request_timeout + 5)
        except concurrent.futures.TimeoutError:
            raise HttpError(408, "the body did not come in time") from None

    # -- held requests --------------------------------------------------------------

    def hold(self, conn: Connection, hold: Hold) -> bool:
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

    def unhold(self, conn: Connection, key: Hashable) -> None:
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
