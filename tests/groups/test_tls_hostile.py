"""TLS on the curator's port: plain HTTP and TLS side by side, and hostile openers bounded.

A new connection waits for its first byte (0x16: a TLS handshake) before it is
adopted. Such a connection has sent nothing, so it is the first to go when the
connection cap is reached, and it is closed at the request deadline; a stalled
handshake is cut at the same deadline.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from meshmedia.bounded import bounded_session
from meshmedia.groups.curator_tls import fingerprint, server_context, tls_files
from meshmedia.http import ManifestServer
from meshmedia.http.messages import Limits
from meshmedia.manifest import ManifestStore
from tests.helpers import make_config, wait_for


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., tuple[ManifestServer, requests.Session]]]:
    servers: list[ManifestServer] = []

    def make(**limits: Any) -> tuple[ManifestServer, requests.Session]:
        config = make_config(tmp_path, "curator", port=0)
        store = ManifestStore(tmp_path / "manifests")
        tls = server_context(config.state_dir)
        server = ManifestServer(config, store, None, None, "t", limits=Limits(**limits), tls=tls)
        servers.append(server.start())
        cert, _ = tls_files(config.state_dir)
        pin = fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))
        return server, bounded_session({f"https://127.0.0.1:{server.port}": pin})

    yield make
    for server in servers:
        server.close()


def closed(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_plain_and_tls_answer_on_one_port(start: Callable[..., Any]) -> None:
    server, tls = start()
    plain = requests.get(f"http://127.0.0.1:{server.port}/", timeout=10)
    secure = tls.get(f"https://127.0.0.1:{server.port}/", timeout=10)
    assert plain.json() == secure.json()
    assert server.stats().connections <= 2
    other = bounded_session({f"https://127.0.0.1:{server.port}": "00" * 32})
    with pytest.raises(requests.exceptions.SSLError):  # another certificate: refused
        other.get(f"https://127.0.0.1:{server.port}/", timeout=10)


def test_silent_openers_go_first_and_a_stalled_handshake_is_cut(start: Callable[..., Any]) -> None:
    server, tls = start(max_connections=8, request_timeout=2.0)
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(8)]
    for _ in range(3):  # at the cap, each real request evicts a silent one
        assert tls.get(f"https://127.0.0.1:{server.port}/", timeout=10).status_code == 200
        assert requests.get(f"http://127.0.0.1:{server.port}/", timeout=10).status_code == 200
    assert server.stats().evicted >= 2  # the TLS session keeps its one connection alive
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    stalled.sendall(b"\x16\x03\x01")  # a handshake's first bytes, then nothing
    assert closed(stalled)  # within the 2 s request deadline (the read's 20 s bound)
    for sock in silent:
        assert closed(sock)  # each at its deadline at the latest
        sock.close()
    tls.close()  # its kept-alive connection would wait for the idle timeout
    wait_for(lambda: server.stats().connections == 0 and not server.http.peeking, 20)
    assert tls.get(f"https://127.0.0.1:{server.port}/", timeout=10).status_code == 200
