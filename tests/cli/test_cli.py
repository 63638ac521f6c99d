"""The command line: help with examples everywhere, clear errors, never a traceback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest

from meshmedia.cli import cli
from meshmedia.cli.doctor import check_socket_buffers
from tests.helpers import run_meshmedia


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_has_help_with_an_example() -> None:
    missing = [
        name
        for name, command in _commands(cli)
        if not isinstance(command, click.Group) and "Example" not in (command.help or "")
    ]
    assert not missing, f"commands without an example in their help: {missing}"
    assert len(list(_commands(cli))) >= 3


def test_help_runs_as_a_real_process() -> None:
    result = run_meshmedia("--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["status", "--bogus"], {}, "No such option"),
        (["doctor", "--listen-port", "99999"], {}, "99999"),
        (["doctor", "--ssl-listen-port", "65536"], {}, "65536"),
        (["doctor"], {"MESHMEDIA_SSL_LISTEN_PORT": "ssl"}, "ssl_listen_port"),
        (["doctor", "--upload-limit", "fast"], {}, "not a size"),
        (["doctor"], {"MESHMEDIA_PORT": "http"}, "port"),
        (["doctor"], {"MESHMEDIA_DHT": "sometimes"}, "dht"),
    ],
)
def test_bad_flags_and_config_are_usage_errors(
    args: list[str], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    result = run_meshmedia(*args, env={**env, "MESHMEDIA_STATE_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_reports_a_busy_port_with_a_fix(tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as busy:
        port = busy.server_address[1]
        result = run_meshmedia(
            "doctor",
            "--role",
            "curator",
            "--port",
            str(port),
            "--listen-port",
            "0",
            env={"MESHMEDIA_STATE_DIR": str(tmp_path / "state"), "MESHMEDIA_SHARE": str(tmp_path)},
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert f"FAIL http port: 127.0.0.1:{port} is in use" in result.stdout
    assert "fix:" in result.stdout
    assert "ok   state dir" in result.stdout


class _StatusHandler(BaseHTTPRequestHandler):
    body = {
        "role": "client",
        "listen_port": 6881,
        "download_rate": 2_500_000,
        "upload_rate": 0,
        "torrents": [
            {
                "name": "clip.mkv",
                "state": "downloading",
                "progress": 0.5,
                "download_rate": 2_500_000,
                "upload_rate": 0,
                "num_peers": 3,
                "error": None,
            },
        ],
    }

    def do_GET(self) -> None:
        data = json.dumps(self.body).encode()
        self.send_response(200 if self.path == "/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_status_renders_one_line_per_torrent(tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        plain = run_meshmedia("status", "--url", url, cwd=tmp_path)
        raw = run_meshmedia("status", "--url", url, "--json", cwd=tmp_path)
        server.shutdown()
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("client: 1 torrents, down 2.4 MiB/s")
    assert "downloading" in lines[1]
    assert " 50.0%" in lines[1]
    assert "peers   3  clip.mkv" in lines[1]
    assert json.loads(raw.stdout)["torrents"][0]["name"] == "clip.mkv"


def test_status_without_a_daemon_is_one_clear_line(tmp_path: Path) -> None:
    result = run_meshmedia("status", "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 1
    assert "no meshmedia daemon answered" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_flags_small_socket_buffers(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_text("212992\n")
    big.write_text("4194304\n")
    bad = check_socket_buffers((small, big))
    assert not bad.ok
    assert "212992" in bad.detail
    assert "net.core.rmem_max=4194304" in bad.fix
    assert check_socket_buffers((big, big)).ok
