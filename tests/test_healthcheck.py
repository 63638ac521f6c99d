"""The image's HEALTHCHECK (container/healthcheck.py) asks the right daemon at the right
address; tests/test_image.py runs it in real containers."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "container" / "healthcheck.py"


@pytest.fixture
def health(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name in ("MESHMEDIA_HOST", "MESHMEDIA_PORT", "MESHMEDIA_STATUS_PORT"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_curator_bound_to_all_addresses_is_asked_on_loopback(
    health: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHMEDIA_HOST", "0.0.0.0")
    monkeypatch.setenv("MESHMEDIA_PORT", "5050")
    serve = ["/opt/meshmedia/bin/python3", "/opt/meshmedia/bin/meshmedia", "serve"]
    assert health.target(serve) == "http://127.0.0.1:5050/"
    assert health.target([*serve, "--port", "6000"]) == "http://127.0.0.1:6000/"
    assert health.target([*serve, "--host=::1"]) == "http://[::1]:5050/"


def test_a_client_is_asked_on_its_status_port(
    health: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = ["catatonit", "--", "meshmedia-entrypoint", "sync"]  # under an init, too
    assert health.target(sync) == "http://127.0.0.1:5001/status"
    monkeypatch.setenv("MESHMEDIA_STATUS_PORT", "5099")
    assert health.target(sync) == "http://127.0.0.1:5099/status"
    assert health.target([*sync, "--status-port=5100"]) == "http://127.0.0.1:5100/status"
    assert health.target(["meshmedia", "keygen"]) is None


class _Answer(BaseHTTPRequestHandler):
    body: bytes = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("answer", "code"), [({"status": "ok"}, 0), ({"status": "starting"}, 1), (None, 1)]
)
def test_only_an_ok_curator_is_healthy(
    health: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    server: ThreadingHTTPServer,
    answer: object,
    code: int,
) -> None:
    _Answer.body = json.dumps(answer).encode() if answer else b"<html>"
    monkeypatch.setenv("MESHMEDIA_PORT", str(server.server_address[1]))
    monkeypatch.setattr(health, "command_line", lambda: ["meshmedia", "serve"])
    assert health.main() == code
