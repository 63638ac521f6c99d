"""`invite` reads the running curator's advertised addresses from GET /status on
loopback; whatever answers on that port is untrusted input (a real server here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meshmedia.cli.groups import MAX_ADVERTISED, running_curator_addresses
from tests.helpers import make_config

Reply = Callable[[BaseHTTPRequestHandler], None]


def body(data: bytes, status: int = 200) -> Reply:
    """An answer with `data` as its body."""

    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def status(urls: object) -> Reply:
    """A /status body advertising `urls`."""
    return body(json.dumps({"role": "curator", "advertised_http": urls}).encode())


def endless(handler: BaseHTTPRequestHandler) -> None:
    """A body with no length that never ends."""
    handler.send_response(200)
    handler.end_headers()
    chunk = b" " * 65536
    try:
        for _ in range(10_000):  # 640 MiB at most, far over the reader's cap
            handler.wfile.write(chunk)
    except OSError:
        pass  # the reader hung up: what it should do


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], int]]:
    """Start a server answering every GET with a reply; gives its port."""
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Reply) -> int:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                reply(self)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def addresses(tmp_path: Path, port: int) -> list[tuple[str, int]]:
    return running_curator_addresses(make_config(tmp_path, port=port))


def test_the_advertised_addresses_of_a_well_formed_answer_are_taken(
    tmp_path: Path, serve: Callable[[Reply], int]
) -> None:
    port = serve(status(["http://192.0.2.50:8000", "http://[2001:db8::1]:8000"]))
    assert addresses(tmp_path, port) == [("192.0.2.50", 8000), ("2001:db8::1", 8000)]


@pytest.mark.parametrize(
    "reply",
    [
        body(b"not json"),
        body(b"[1, 2, 3]"),
        body(b'{"advertised_http": "http://192.0.2.50:8000"}'),  # a string, not a list
        body(b"{}", status=500),
        body(b"\xff\xfe{}"),
        body(b"[" * 100_000),
        endless,
    ],
    ids=["not-json", "a-list", "not-a-list", "500", "not-utf8", "deep", "endless"],
)
def test_an_unusable_answer_gives_no_addresses(
    tmp_path: Path, serve: Callable[[Reply], int], reply: Reply
) -> None:
    assert addresses(tmp_path, serve(reply)) == []


def test_only_literal_ip_addresses_with_a_port_are_taken(
    tmp_path: Path, serve: Callable[[Reply], int]
) -> None:
    """A name would send a joining home's first request wherever that name points."""
    hostile = [
        "http://attacker.example:8000",  # a name, not an address
        "http://192.0.2.1",  # no port
        "http://192.0.2.2:99999",  # no such port
        "http://192.0.2.3:0",
        "https://192.0.2.4:8000",  # not what a curator serves
        "ftp://192.0.2.5:21",
        "http://[::1:8000",  # a broken bracket
        "http://192.0.2.6:" + "1" * 200,
        7,
        None,
        {"url": "http://192.0.2.7:8000"},
        "http://0.0.0.0:8000",  # no address to dial
        "http://[::]:8000",
        "http://224.0.0.1:8000",  # multicast
        "http://[ff02::1]:8000",
        "http://255.255.255.255:8000",
        "http://[fe80::1%25eth0]:8000",  # a zone names this machine's interface
        "http://192.0.2.8:8000",
        "http://192.0.2.8:8000",  # the same once
    ]
    assert addresses(tmp_path, serve(status(hostile))) == [("192.0.2.8", 8000)]


def test_at_most_a_few_addresses_are_taken(tmp_path: Path, serve: Callable[[Reply], int]) -> None:
    many = [f"http://10.0.{k // 250}.{k % 250 + 1}:8000" for k in range(5000)]
    found = addresses(tmp_path, serve(status(many)))
    assert found == [(f"10.0.0.{k + 1}", 8000) for k in range(MAX_ADVERTISED)]


def test_no_curator_running_gives_no_addresses(tmp_path: Path) -> None:
    assert addresses(tmp_path, make_config(tmp_path, "free").port) == []


def test_a_redirect_or_a_proxy_does_not_answer_for_the_curator(
    tmp_path: Path, serve: Callable[[Reply], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever answers elsewhere (a redirect's target, a proxy from the environment) is
    not the curator on this machine's port (review 7, finding 3)."""
    other = serve(status(["http://192.0.2.66:8000"]))

    def to_other(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"http://127.0.0.1:{other}/status")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    assert addresses(tmp_path, serve(to_other)) == []
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{other}")
    monkeypatch.setenv("NO_PROXY", "")
    free = make_config(tmp_path, "free").port  # nothing listens: only a proxy could answer
    assert addresses(tmp_path, free) == []
