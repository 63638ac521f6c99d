"""The strict request-head parser: what it accepts, and that garbage only ever gives WireError."""

from __future__ import annotations

import random

import pytest

from meshmedia.http.wire import WireError, find_head_end, parse_head

GOOD = (
    b"POST /manifest/default.json?replace=1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
    b"Content-Type: application/json\r\nContent-Length: 12\r\nAccept: a\r\nAccept: b\r\n"
    b"Authorization: Bearer t\r\nX-Value:  spaced out \t"
)


def test_a_good_head_is_parsed() -> None:
    head = parse_head(GOOD)
    assert (head.method, head.target, head.version) == (
        "POST",
        "/manifest/default.json?replace=1",
        "HTTP/1.1",
    )
    assert head.content_length == 12
    assert head.keep_alive
    assert not head.expect_continue
    assert head.headers["content-type"] == "application/json"
    assert head.headers.get("ACCEPT") == "a, b"  # repeated fields joined (RFC 9110 5.3)
    assert head.headers["X-Value"] == "spaced out"  # surrounding whitespace is not the value


def test_http_1_0_and_connection_close_do_not_keep_alive() -> None:
    assert not parse_head(b"GET / HTTP/1.0").keep_alive  # no Host needed in 1.0
    assert not parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close").keep_alive
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue").expect_continue


def test_bare_lf_line_ends_are_accepted() -> None:
    assert parse_head(b"GET / HTTP/1.1\nHost: x").headers["Host"] == "x"
    assert find_head_end(b"GET / HTTP/1.1\nHost: x\n\nbody") == (22, 24)
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody") == (23, 27)
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") is None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /  HTTP/1.1\r\nHost: x", 400),  # two spaces
        (b"GET / HTTP/1.1 \r\nHost: x", 400),
        (b"GET /\x7f HTTP/1.1\r\nHost: x", 400),
        (b"G(T / HTTP/1.1\r\nHost: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad\x00: y", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nNo colon", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n: empty name", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999", None),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"Host: x", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", 411),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity", 400),
        (b"GET / HTTP/9.9\r\nHost: x", 505),
        (b"GET / HTTP/1.x\r\nHost: x", 400),
        (b"GET /", 400),  # HTTP/0.9
    ],
)
def test_refused_heads(raw: bytes, status: int | None) -> None:
    if status is None:  # a valid but absurd length: parsed, refused by the body limit later
        assert parse_head(raw).content_length >= 10**18
        return
    with pytest.raises(WireError) as refused:
        parse_head(raw)
    assert refused.value.status == status


def test_random_damage_to_a_head_gives_a_head_or_wire_error_only() -> None:
    rnd = random.Random(12)
    alphabet = b" \t\r\n:,;\x00\x7f\x80\xff0123456789aAzZ-/?%"
    statuses: set[int] = set()
    for _ in range(20_000):
        raw = bytearray(GOOD)
        for _ in range(rnd.randint(1, 6)):
            at = rnd.randrange(len(raw))
            action = rnd.random()
            if action < 0.4:
                raw[at] = rnd.choice(alphabet)
            elif action < 0.7:
                raw.insert(at, rnd.choice(alphabet))
            else:
                del raw[at]
        try:
            head = parse_head(bytes(raw))
        except WireError as exc:
            statuses.add(exc.status)
        else:
            assert head.content_length >= 0
    assert statuses <= {400, 411, 417, 431, 501, 505}
