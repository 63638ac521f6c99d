"""One client connection of the HTTP server: reads a request, hands it to the server,
writes the answer, under the deadlines of the server's Limits."""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import fcntl
import logging
import re
import termios
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

from .hosts import host_allowed
from .messages import CHUNK, Handler, Hold, HttpError, Limits, Request, Response
from .senders import Senders
from .wire import Head, WireError, find_head_end, parse_head

log = logging.getLogger(__name__)
_LEADING_EMPTY_LINES = re.compile(rb"[\r\n]*")

# The connection's states: waiting for a request, a handler running, reading a body for
# a handler, parked by a Hold, writing the answer, closing, closed.
WAITING, RUNNING, BODY, HELD, SENDING, CLOSING, CLOSED = range(7)


class Server(Protocol):
    """What a connection uses of its server (server.HttpServer), so that neither module
    imports the other both ways."""

    limits: Limits
    handler: Handler
    host_names: tuple[str, ...]
    closing: bool
    adopting: int
    counts: dict[str, int]
    connections: set[Connection]
    waiting: OrderedDict[Connection, None]
    senders: Senders

    def note(self, level: int, message: str, *args: object) -> None:
        """Log a protocol message, rate-limited."""

    def forget(self, conn: Connection) -> None:
        """The connection is closed: drop it from every table."""

    def dispatch(self, conn: Connection, job: Callable[[], Response | Hold], what: str) -> None:
        """Run a handler's job on a worker; the result comes back to `conn.answer`."""

    def read_body(self, conn: Connection) -> bytes:
        """Wait (on a worker) for the body of `conn`'s request."""

    def hold(self, conn: Connection, hold: Hold) -> bool:
        """Park `conn` until its hold ends; False when at the cap."""

    def unhold(self, conn: Connection, key: Hashable) -> None:
        """`conn` no longer waits on `key`."""

    def log_access(self, request: Request | None, response: Response, started: float) -> None:
        """One access line per answered request."""

    def head_bytes(self, response: Response, length: int, keep_alive: bool) -> bytes:
        """The status line and header fields of `response`."""


def _kernel_queue(transport: asyncio.Transport) -> int:
    """Bytes written to a socket that its peer has not acknowledged yet (0 if unknown)."""
    sock = transport.get_extra_info("socket")
    try:
        queued = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)  # SIOCOUTQ on a socket
    except (OSError, AttributeError, ValueError):
        return 0
    return max(queued[0], 0)


class Connection(asyncio.Protocol):
    """One client connection: reads a request, hands it to the server, writes the answer."""

    def __init__(self, server: Server) -> None:
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

    def _read_body(self) -> bytes:
        return self.server.read_body(self)

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
            request = Request(head, self.peer, self.tls, self._read_body)
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
