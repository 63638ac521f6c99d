"""The bounded readers: a real HTTP server on a free port, real gzip/deflate, exact limits."""

from __future__ import annotations

import gzip
import json
import random
import socket
import ssl
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from meshmedia.bounded import (
    CHUNK,
    MAX_DEPTH,
    MAX_INT_DIGITS,
    Answer,
    ReadError,
    bad_text,
    bounded_session,
    depth_over,
    http_get,
    load_json,
)
from meshmedia.groups.curator_tls import fingerprint, server_context, tls_files

Reply = Callable[[BaseHTTPRequestHandler], None]


@contextmanager
def serving(reply: Reply) -> Iterator[str]:
    """A real HTTP server whose every GET is answered by `reply`; its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            reply(self)

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/doc"
        finally:
            server.shutdown()


def body(data: bytes, status: int = 200, **headers: str) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        sent = {"Content-Length": str(len(data)), **headers}
        for name, value in sent.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def get(reply: Reply, **kwargs: Any) -> Answer:
    with serving(reply) as url:
        return http_get(bounded_session(), url, **kwargs)


def test_a_body_of_exactly_the_cap_is_read_one_more_byte_is_refused() -> None:
    answer = get(body(b"x" * 100), max_bytes=100)
    assert (answer.status, answer.body) == (200, b"x" * 100)
    assert answer.headers["Content-Length"] == "100"
    with pytest.raises(ReadError, match="101 bytes, over the cap of 100"):
        get(body(b"x" * 101), max_bytes=100)


def test_headers_sent() -> None:
    seen: list[dict[str, str]] = []

    def reply(handler: BaseHTTPRequestHandler) -> None:
        seen.append(dict(handler.headers))
        body(b"ok")(handler)

    get(reply, headers={"If-None-Match": '"a"'})
    assert seen[0]["Accept-Encoding"] == "gzip, deflate"
    assert seen[0]["If-None-Match"] == '"a"'
    with serving(reply) as url:  # a plain requests session: watched from the body on
        assert http_get(requests.Session(), url).body == b"ok"


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZIP ", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", gzip.compress),  # what some servers send as deflate
        ("identity", lambda d: d),
        ("", lambda d: d),
    ],
)
def test_compressed_answers_are_decoded(encoding: str, pack: Callable[[bytes], bytes]) -> None:
    data = json.dumps({"items": list(range(2000))}).encode()
    answer = get(body(pack(data), Content_Encoding=encoding))
    assert answer.body == data


def test_a_decoded_body_of_exactly_the_cap_passes_one_more_byte_is_refused() -> None:
    assert get(body(gzip.compress(b"a" * 5000), Content_Encoding="gzip"), max_bytes=5000).body
    with pytest.raises(ReadError, match="over the cap of 4999 bytes once decoded"):
        get(body(gzip.compress(b"a" * 5000), Content_Encoding="gzip"), max_bytes=4999)


def test_a_gzip_bomb_is_cut_off_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB in ~64 KiB
    with pytest.raises(ReadError, match="once decoded"):
        get(body(bomb, Content_Encoding="gzip"), max_bytes=1 << 20)


def test_a_compressed_body_may_declare_a_length_over_the_cap() -> None:
    """The cap is on decoded bytes: a compressed length over it is read (and decoded)."""
    data = b"abc" * 10
    packed = gzip.compress(data) + b"\0" * 200  # trailing garbage after the gzip member
    assert get(body(packed, Content_Encoding="gzip"), max_bytes=100).body == data


def test_corrupt_compression_and_unknown_encodings_are_refused() -> None:
    with pytest.raises(ReadError, match="compressed answer is corrupt"):
        get(body(b"not gzip at all", Content_Encoding="gzip"))
    with pytest.raises(ReadError, match="unsupported Content-Encoding 'br'"):
        get(body(b"x", Content_Encoding="br"))


def test_only_a_200_has_its_body_read() -> None:
    answer = get(body(b"gone", status=404))
    assert (answer.status, answer.reason, answer.body) == (404, "Not Found", b"")
    answer = get(body(b"", status=304))
    assert (answer.status, answer.body) == (304, b"")


def test_a_trickling_server_is_cut_off_at_the_deadline() -> None:
    release = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            if release.wait(0.1):  # a byte every 0.1 s: every read is well within its timeout
                return

    try:
        with pytest.raises(ReadError, match="no complete answer within 1 s"):
            get(trickle, deadline=1.0, read_timeout=30)
    finally:
        release.set()


def test_network_errors_become_read_errors() -> None:
    with pytest.raises(ReadError, match="ConnectionError"):
        http_get(bounded_session(), "http://127.0.0.1:9/doc", deadline=5)


# -- JSON --------------------------------------------------------------------------
def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_load_json_takes_bytes_text_and_a_bom() -> None:
    assert load_json(b'{"a": [1, 2.5, "\\u00e9"]}') == {"a": [1, 2.5, "é"]}
    assert load_json('{"a": 1}') == {"a": 1}
    assert load_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_load_json_size_limit_is_exact() -> None:
    assert load_json(b"[1]", max_bytes=3) == [1]
    with pytest.raises(ReadError, match="the document is 4 bytes, over the cap of 3"):
        load_json(b"[10]", max_bytes=3)


def test_load_json_refuses_what_is_not_utf8_or_not_json() -> None:
    with pytest.raises(ReadError, match="not UTF-8 text: invalid start byte at byte 2"):
        load_json(b'["\xff"]')
    with pytest.raises(ReadError, match="not JSON: Expecting value at line 1 column 2"):
        load_json(b"[")
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ReadError, match=f"not usable JSON: {constant} is not a JSON number"):
            load_json(f"[{constant}]")


def test_load_json_number_length_is_capped_exactly() -> None:
    assert load_json("9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    with pytest.raises(ReadError, match=f"a number of {MAX_INT_DIGITS + 1} digits"):
        load_json("9" * (MAX_INT_DIGITS + 1))


def test_load_json_depth_is_capped_exactly() -> None:
    assert load_json(nested(MAX_DEPTH)) is not None
    with pytest.raises(ReadError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_json(nested(MAX_DEPTH + 1))
    with pytest.raises(ReadError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_json(nested(100_000))  # past the parser's own recursion limit


def test_depth_over_counts_lists_and_objects() -> None:
    assert depth_over(1, 0) is False
    assert depth_over([], 1) is False
    assert depth_over([], 0) is True
    assert depth_over({"a": {"b": [1]}}, 3) is False
    assert depth_over({"a": {"b": [1]}}, 2) is True
    assert depth_over([1, [2, [3]], {"x": 1}], 3) is False
    assert depth_over([1, [2, [3, []]]], 3) is True
    assert depth_over([[], [[[]]]], 3) is True  # the deep one is not the first child


def test_bad_text_finds_lone_surrogates_in_keys_values_and_lists() -> None:
    assert bad_text({"a": ["b", {"c": "d"}], "é": "ü"}) is None
    assert bad_text("x\ud800") == "x\ud800"
    assert bad_text({"k\udfff": 1}) == "k\udfff"
    assert bad_text({"a": [1, ["fine", "\udc00"]]}) == "\udc00"
    assert bad_text([{"a": "\U0001f600"}]) is None
    assert bad_text(load_json('["\\ud83d\\ude00"]')) is None  # an escaped pair is text
    assert bad_text(load_json('["\\ud800"]')) == "\ud800"


# -- what mutation testing found unchecked (native_notes/testing.md, bounded.py) -----
# A call that a broken reader would never finish runs on a thread, waited on with a
# bound far above what it needs (a deadline of 1 s, a bound of 30 s): a wait on the
# call's end, not a timing.


def outcome_of(call: Callable[[], Any], bound: float = 30.0) -> Any:
    """What `call()` returned or raised, waited for on a thread (at most `bound`)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # the test looks at what it was
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert result, f"still running after {bound} s"
    return result[0]


def endless(release: threading.Event, **headers: str) -> Reply:
    """A 200 whose body never ends (a byte every 0.05 s, or nothing at all with
    `silent`), until `release` is set."""

    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.flush()
        while not release.wait(0.05):
            handler.wfile.write(b"x" * int(headers.get("X_Step", "1")))
            handler.wfile.flush()

    return reply


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_a_plain_session_is_held_to_the_deadline_from_the_body_on(
    release: threading.Event,
) -> None:
    with serving(endless(release, Content_Length="1000000")) as url:
        error = outcome_of(lambda: http_get(requests.Session(), url, deadline=1, read_timeout=30))
    assert isinstance(error, ReadError)
    assert str(error) == "no complete answer within 1 s"


def test_a_server_that_never_answers_is_cut_off_at_the_deadline(
    release: threading.Event,
) -> None:
    def silent(handler: BaseHTTPRequestHandler) -> None:
        release.wait(60)

    with serving(silent) as url:
        error = outcome_of(lambda: http_get(bounded_session(), url, deadline=1, read_timeout=300))
    assert isinstance(error, ReadError)
    assert str(error) == "no complete answer within 1 s"


def test_a_stalled_body_is_cut_off_at_the_read_timeout(release: threading.Event) -> None:
    def stalled(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "10")
        handler.end_headers()
        handler.wfile.flush()
        release.wait(60)

    with serving(stalled) as url:
        error = outcome_of(lambda: http_get(bounded_session(), url, deadline=300, read_timeout=1))
    assert isinstance(error, ReadError)
    assert str(error).startswith("ConnectionError: ") or "timed out" in str(error), error


def test_an_answer_with_no_length_that_ends_at_the_deadline_is_not_complete(
    release: threading.Event,
) -> None:
    """No Content-Length, Connection: close: the socket shut down at the deadline ends
    the body like the server's close would; it is still refused."""
    reply = endless(release, Connection="close")
    with serving(reply) as url:
        error = outcome_of(lambda: http_get(bounded_session(), url, deadline=1))
    assert isinstance(error, ReadError)
    assert str(error) == "no complete answer within 1 s"


def test_an_endless_answer_with_no_length_is_cut_off_at_the_cap(
    release: threading.Event,
) -> None:
    reply = endless(release, Connection="close", X_Step="40000")
    with serving(reply) as url:
        error = outcome_of(
            lambda: http_get(bounded_session(), url, max_bytes=200_000, deadline=300)
        )
    assert isinstance(error, ReadError)
    assert str(error) == "the answer is over the cap of 200000 bytes once decoded"


def test_accept_encoding_is_what_the_reader_can_decode_whatever_the_session_says() -> None:
    seen: list[str] = []

    def reply(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Accept-Encoding", ""))
        body(b"ok")(handler)

    session = bounded_session()
    session.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"  # requests with brotli
    with serving(reply) as url:
        http_get(session, url)
    assert seen == ["gzip, deflate"]


def test_a_network_error_is_named_by_its_type() -> None:
    with pytest.raises(ReadError) as caught:
        http_get(bounded_session(), "http://127.0.0.1:9/doc", deadline=5)
    assert str(caught.value).startswith("ConnectionError: ")


def test_an_empty_reason_phrase_stays_empty() -> None:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200, "")
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    answer = get(reply)
    assert (answer.status, answer.reason, answer.body) == (200, "", b"ok")


def test_a_body_cut_short_says_how_much_came() -> None:
    def short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"x" * 40)
        handler.wfile.flush()
        handler.close_connection = True

    with pytest.raises(ReadError) as caught:
        get(short)
    # urllib3 2 counts the body against Content-Length first (_read_body's own count is
    # for a reader that does not): the message is its
    assert "IncompleteRead(40 bytes read, 60 more expected)" in str(caught.value)


def test_a_body_of_many_reads_comes_back_whole() -> None:
    data = random.Random(5).randbytes(3 * CHUNK + 5)
    assert get(body(data)).body == data
    packed = gzip.compress(data, mtime=0)  # random bytes: stored, over three reads
    assert len(packed) > 3 * CHUNK
    assert get(body(packed, Content_Encoding="gzip")).body == data


def test_a_compressed_body_of_exactly_the_cap_whose_end_comes_in_a_later_read() -> None:
    """The decoded bytes reach the cap in one read; the gzip trailer is in the next."""
    source = random.Random(9).randbytes(2 * CHUNK)
    data = next(
        source[:n]
        for n in range(2 * CHUNK - 400, 2 * CHUNK)
        if len(gzip.compress(source[:n], mtime=0)) % CHUNK == 4
    )
    packed = gzip.compress(data, mtime=0)
    assert get(body(packed, Content_Encoding="gzip"), max_bytes=len(data)).body == data


def test_a_gzip_bomb_is_decoded_a_bounded_piece_at_a_time() -> None:
    """Memory, not time: the bomb's first read would decode to 64 MiB at once."""
    bomb = gzip.compress(b"\0" * (64 << 20))
    with serving(body(bomb, Content_Encoding="gzip")) as url:
        session = bounded_session()
        tracemalloc.start()
        try:
            with pytest.raises(ReadError, match="once decoded"):
                http_get(session, url, max_bytes=1 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_a_bounded_session_works_outside_http_get_on_any_thread() -> None:
    """Its connections look for a deadline on the thread; none there is no error."""
    session = bounded_session()
    with serving(body(b"ok")) as url:
        assert http_get(session, url).body == b"ok"
        assert session.get(url, timeout=30).content == b"ok"  # after http_get, same thread
        fresh = outcome_of(lambda: session.get(url, timeout=30).content)
    assert fresh == b"ok"


def test_an_overflowing_float_is_named_by_its_first_40_characters() -> None:
    text = "1" + "0" * 50 + "e999"
    with pytest.raises(ReadError) as caught:
        load_json(f"[{text}]")
    assert str(caught.value) == f"not usable JSON: the number {text[:40]} is out of range"


def test_a_bomb_after_half_the_cap_is_decoded_only_up_to_the_cap() -> None:
    """Each decode step may take only what is left under the cap: a body that decodes
    to half the cap (8 of 16 MiB, 2:1, many reads) and then turns into a bomb never
    holds much more than the cap (peak 19.7 MiB measured); a step sized by the cap
    *plus* what came held 70 MiB."""
    cap = 16 << 20
    nibbles = random.Random(7).randbytes(8 << 20).translate(bytes(i & 15 for i in range(256)))
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    packed = [packer.compress(nibbles)]
    zeros = bytes(1 << 20)
    packed += [packer.compress(zeros) for _ in range(64)]
    packed.append(packer.flush())
    with serving(body(b"".join(packed), Content_Encoding="gzip")) as url:
        session = bounded_session()
        tracemalloc.start()
        try:
            with pytest.raises(ReadError, match="once decoded"):
                http_get(session, url, max_bytes=cap)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 28 << 20, peak


def test_a_tls_server_that_never_answers_is_cut_off_at_the_deadline(
    tmp_path: Path, release: threading.Event
) -> None:
    """A pinned https origin (a private group's curator) that takes the request after
    the handshake and then says nothing: the watchdog shuts the TLS socket down too."""
    context = server_context(tmp_path)
    cert, _ = tls_files(tmp_path)
    pin = fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    listener = socket.create_server(("127.0.0.1", 0))

    def silent() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)  # the request
            release.wait(60)

    threading.Thread(target=silent, daemon=True).start()
    origin = f"https://127.0.0.1:{listener.getsockname()[1]}"
    session = bounded_session({origin: pin})
    try:
        error = outcome_of(lambda: http_get(session, f"{origin}/doc", deadline=1, read_timeout=300))
    finally:
        listener.close()
    assert isinstance(error, ReadError)
    assert str(error) == "no complete answer within 1 s"


def test_a_bounded_session_reads_through_an_http_proxy_held_to_the_deadline(
    release: threading.Event,
) -> None:
    """A session with a proxy gets its connections from the adapter's proxy manager:
    the same watched pools, so an answer comes through and a silent proxy is cut."""
    with serving(body(b"via the proxy")) as proxy:
        session = bounded_session()
        session.proxies = {"http": proxy.removesuffix("/doc")}
        assert http_get(session, "http://media.invalid/doc").body == b"via the proxy"

    def silent(handler: BaseHTTPRequestHandler) -> None:
        release.wait(60)

    with serving(silent) as proxy:
        session = bounded_session()
        session.proxies = {"http": proxy.removesuffix("/doc")}
        error = outcome_of(
            lambda: http_get(session, "http://media.invalid/doc", deadline=1, read_timeout=300)
        )
    assert isinstance(error, ReadError)
    assert str(error) == "no complete answer within 1 s"
