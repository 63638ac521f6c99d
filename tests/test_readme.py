"""The README is followed literally: its set-up commands, its walkthrough, its Python example."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import random_file, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text of one `## title` section of the README."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return [b.strip() for b in re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = blocks(section("Set up"), "sh")
    assert len(setup) == 2
    serve, tests = setup
    assert serve.endswith("meshmedia serve")
    assert tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    for part in tests.split(" && "):
        assert part.replace(" -q", "") in ci.replace(" -q", ""), f".ci/run lacks {part!r}"


def test_python_example_runs(tmp_path: Path) -> None:
    (example,) = blocks(section("Use it from Python"), "python")
    result = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published hello.txt magnet:?xt=urn:btih:" in result.stdout
    assert result.stdout.endswith("hello from the curator\n")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


# The README's ports, and the settings a command without port flags takes them from.
# 6882 is the curator's SSL port (6881 + 1): the friend's BitTorrent port is 6883
README_PORTS = {5000: "MESHMEDIA_PORT", 6881: "MESHMEDIA_LISTEN_PORT", 5002: None, 6883: None}


def port_plan() -> dict[int, int]:
    """Each of the README's ports mapped to itself where it is free here, else to a free port."""
    return {port: port if _port_free(port) else _free_port() for port in README_PORTS}


def with_ports(command: str, plan: dict[int, int]) -> str:
    """`command` with every README port number replaced by its planned port."""
    return re.sub(r"\b(\d{4})\b", lambda m: str(plan.get(int(m[1]), m[1])), command)


def test_busy_ports_are_replaced_in_the_commands_not_skipped() -> None:
    plan = {5000: 41000, 6881: 6881, 5002: 41002, 6883: 6883}
    sync = "meshmedia sync --manifest-url http://127.0.0.1:5000/m.json --status-port 5002"
    assert with_ports(sync, plan) == (
        "meshmedia sync --manifest-url http://127.0.0.1:41000/m.json --status-port 41002"
    )


def _started(curator: subprocess.Popen[bytes], log: Path) -> bool:
    text = log.read_text(errors="replace")
    assert curator.poll() is None, f"the curator command exited:\n{text[-3000:]}"
    return "curator running" in text


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _shell(command: str, checkout: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_walkthrough_in_a_fresh_checkout(tmp_path: Path) -> None:
    plan = port_plan()  # the README's ports where free; elsewhere free ones (never a skip)
    checkout, home = tmp_path / "checkout", tmp_path / "home"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes((ROOT / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHMEDIA_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=os.defpath)
    env.update({name: str(plan[port]) for port, name in README_PORTS.items() if name})
    for key in ("MANIFEST_URL", "GROUP", "DOWNLOAD_DIR", "JELLYFIN_URL", "JELLYFIN_API_KEY"):
        env.pop(key, None)
    holiday = random_file(home / "Videos" / "holiday.mp4", 3_000_000, seed=7)
    (home / "share").mkdir(parents=True)

    serve_command = blocks(section("Set up"), "sh")[0]
    copy, status, join, sync = (
        with_ports(b, plan) for b in blocks(section("Try it on one machine"), "sh")
    )
    log = (tmp_path / "serve.log").open("w")
    curator = subprocess.Popen(
        ["sh", "-c", serve_command], cwd=checkout, env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: _started(curator, tmp_path / "serve.log"), 400, 0.5)
        assert _shell(copy, checkout, env).returncode == 0
        wait_for(lambda: "seeding" in _shell(status, checkout, env).stdout, 30, 0.5)
        joined = _shell(join, checkout, env)
        assert joined.returncode == 0, joined.stderr[-3000:]
        assert "joined group default" in joined.stdout
        synced = _shell(sync, checkout, env)
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert "1 in place, 0 not" in synced.stdout
        placed = home / "friend" / "media" / "holiday.mp4"
        digest = hashlib.sha256(holiday.read_bytes()).hexdigest()
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == digest
    finally:
        os.killpg(curator.pid, signal.SIGTERM)  # Ctrl-C's effect on the shell and its children
        curator.wait(timeout=60)
        wait_for(lambda: not _group_alive(curator.pid), timeout=60)
        log.close()
    assert "curator stopped" in (tmp_path / "serve.log").read_text()
