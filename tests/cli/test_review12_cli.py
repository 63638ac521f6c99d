"""The command line against the holes of the second attacker review of issue 12.

Real `meshmedia` processes throughout.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import free_port, run_meshmedia


def _serve_args(tmp_path: Path, *extra: str) -> list[str]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    return [
        "serve", "--share", f"default={share}", "--state-dir", str(tmp_path / "state"),
        "--host", "127.0.0.1", "--port", str(free_port()), "--listen-port", str(free_port()),
        "--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp", *extra,
    ]  # fmt: skip


def test_a_host_name_as_advertise_host_is_a_usage_error(tmp_path: Path) -> None:
    """Finding 6: --advertise-host nas.local was taken and put in every magnet's x.pe,
    which libtorrent drops (no peer) and connect_peer raised ArgumentError on."""
    result = run_meshmedia(*_serve_args(tmp_path, "--advertise-host", "nas.local"), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "'nas.local' is not accepted; expected an IP address or 'none'" in result.stderr
    assert "Traceback" not in result.stderr
