"""The shared HTTP server against the holes of the second attacker review of issue 12.

Real servers on free ports and real sockets; the waits are on what the server did
(an answer, a close, its counters), never on how fast.
"""

from __future__ import annotations

from collections.abc import Callable

from meshmedia.http import ManifestServer
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
        return b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n"

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
