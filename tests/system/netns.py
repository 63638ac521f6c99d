"""Low-level helpers for network namespaces: `ip` calls, owner locks, stale clean-up.

Every namespace the lab makes is named `<prefix>-<pid>-<n>-<role>`; the run that made
it holds an exclusive flock on `STATE_DIR/<prefix>-<pid>-<n>.lock` for as long as the
namespaces live. A lock file that can be locked (or is missing) therefore marks the
namespaces of a run that crashed or was killed, and `remove_stale()` removes them.
The lock works across PID namespaces, where a "is that pid alive" test would not.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/meshmedia-netlab")
NETNS_DIR = Path("/run/netns")
IP_TIMEOUT = 30.0


class NetlabError(RuntimeError):
    """A namespace, link or process of the test network could not be set up or removed."""


def ip(*args: str, netns: str | None = None) -> str:
    """Run `ip [-n netns] args...` and return its output; raise NetlabError on failure."""
    command = ["ip", *(["-n", netns] if netns else []), *args]
    return _run(command)


def in_netns(netns: str, *command: str) -> str:
    """Run `command` inside `netns` (ip netns exec) and return its output."""
    return _run(["ip", "netns", "exec", netns, *command])


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetlabError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise NetlabError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable_reason(prefix: str) -> str | None:
    """Why namespaces cannot be made here (not root, no `ip`, `ip netns add` fails), or None."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add)"
    if shutil.which("ip") is None:
        return "network-namespace tests need `ip` (Debian package iproute2)"
    probe = f"{prefix}-{os.getpid()}-probe"
    lock = OwnerLock(probe)
    try:
        ip("netns", "add", probe)
    except NetlabError as exc:
        lock.release()
        return f"cannot make a network namespace: {exc}"
    try:
        ip("link", "add", "p0", "type", "veth", "peer", "name", "p1", netns=probe)
    except NetlabError as exc:
        return f"cannot make a veth pair in a network namespace: {exc}"
    finally:
        delete_netns(probe)
        lock.release()
    return None


def list_netns() -> list[str]:
    """Names of every named network namespace on the machine."""
    return sorted(path.name for path in NETNS_DIR.glob("*")) if NETNS_DIR.is_dir() else []


def netns_pids(netns: str) -> list[int]:
    """Pids of the processes whose network namespace is `netns`."""
    try:
        return [int(pid) for pid in ip("netns", "pids", netns).split()]
    except NetlabError:
        return []


def kill_netns_processes(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in `netns` until none is left (or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while pids := netns_pids(netns):
        if time.monotonic() > deadline:
            raise NetlabError(f"processes {pids} in {netns} do not die")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def delete_netns(netns: str) -> None:
    """Kill what runs in `netns` and delete it (its veth ends go with it)."""
    if netns not in list_netns():
        return
    kill_netns_processes(netns)
    ip("netns", "delete", netns)


class OwnerLock:
    """The flock that marks a run's namespaces as in use."""

    def __init__(self, owner: str) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path = STATE_DIR / f"{owner}.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1


def _is_stale(owner: str) -> bool:
    path = STATE_DIR / f"{owner}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale(prefix: str) -> list[str]:
    """Delete the namespaces (and lock files) that crashed runs with `prefix` left behind."""
    pattern = re.compile(rf"^({re.escape(prefix)}-\d+-(?:\d+|probe))(?:-\w+)?$")
    owners: dict[str, list[str]] = {}
    for name in list_netns():
        if match := pattern.match(name):
            owners.setdefault(match.group(1), []).append(name)
    for path in STATE_DIR.glob(f"{prefix}-*.lock") if STATE_DIR.is_dir() else []:
        owners.setdefault(path.stem, [])
    removed = []
    for owner, names in owners.items():
        if not _is_stale(owner):
            continue
        for name in names:
            log.warning("removing stale network namespace %s", name)
            try:
                delete_netns(name)
            except NetlabError as exc:  # another run may be removing it at the same time
                log.warning("could not remove stale namespace %s: %s", name, exc)
            removed.append(name)
        (STATE_DIR / f"{owner}.lock").unlink(missing_ok=True)
    return removed
