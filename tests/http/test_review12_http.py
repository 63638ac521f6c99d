"""The shared HTTP server against the holes of the second attacker review of issue 12.

Real servers on free ports and real sockets; the waits are on what the server did
(an answer, a close, its counters), never on how fast.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from meshmedia.http import Limits, ManifestServer, StatusServer
from tests.helpers import wait_for
from tests.http.test_http_hostile import body_of, connect, read_until_closed, start, statuses

__all__ = ["start"]  # the fixture, used by name


def test_a_head_over_max_head_is_refused_even_when_it_arrives_in_one_read(
    start: Callable[..., ManifestServer],
) -> None:
    """Finding 14: the size was checked only while the head had no end yet, so an
    88 kB head in one read passed a 64 KiB max_head."""
    server = start(max_head=16384)

    def head_with(count: int) -> bytes:
        fields = b"".join(b"X-%d: %s\r\n" % (n, b"a" * 1000) for n in range(count))
        return b"GET / HTTP/1.1\r\nHost: localhost\r\n" + fields + b"Connection: close\r\n\r\n"

    head = head_with(20)
    assert len(head) > 16384
    with connect(server.port) as sock:
        sock.sendall(head)
        answer = read_until_closed(sock)
    assert statuses(answer) == [431]
    assert body_of(answer)["error"] == "the request head is over 16384 bytes"
    small = head_with(5)
    with connect(server.port) as sock:
        sock.sendall(small)
        assert statuses(read_until_closed(sock)) == [200]


def _slow_reader(port: int, stop: threading.Event) -> socket.socket:
    """A client that asks for the big answer, then reads 1 KiB every 0.1 s (10 KiB/s)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n")

    def read() -> None:
        while not stop.wait(0.1):  # the pace of a slow client, not a synchronisation
            try:
                if not sock.recv(1024):
                    return
            except OSError:
                return

    threading.Thread(target=read, daemon=True).start()
    return sock


def test_new_clients_are_answered_when_the_cap_is_full_of_slow_readers() -> None:
    """Finding 8: slow readers were never evicted (an answer under way was not
    evictable, and send_timeout is re-armed at each drain): 300 of them held a
    300-connection cap and 1 of 32 new clients was answered in 100 s."""
    big = {"blob": "x" * 4_000_000}
    limits = Limits(
        max_connections=4, max_held=0, send_timeout=3600, min_send_rate=65536, send_grace=0.5
    )  # send_timeout never fires here: only the slow-reader rule can make room
    server = StatusServer(0, lambda: big, limits)
    stop = threading.Event()
    readers: list[socket.socket] = []
    try:
        readers = [_slow_reader(server.port, stop) for _ in range(4)]
        wait_for(lambda: (server.stats().connections, server.stats().waiting) == (4, 0))

        def a_new_client_is_answered() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    sock.sendall(
                        b"HEAD /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    )
                    return statuses(read_until_closed(sock)) == [200]
            except OSError:
                return False

        for _ in range(3):  # each time the cap is full of slow readers again
            wait_for(a_new_client_is_answered, timeout=30, interval=0.2)
            wait_for(lambda: server.stats().connections == 3)  # the answered one has gone
            readers.append(_slow_reader(server.port, stop))
            wait_for(
                lambda: (server.stats().connections, server.stats().waiting) == (4, 0),
                describe=lambda: str(server.stats()),
            )
        stats = server.stats()
        assert stats.evicted == 3
        assert stats.connections <= 4
    finally:
        stop.set()
        for sock in readers:
            sock.close()
        server.close()
