"""Real meshmedia daemons inside lab hosts: a curator (`serve`) and clients (`sync`).

The test process talks to them over HTTP from inside their namespace: a socket
made while this thread has joined the host's network namespace (setns) stays
in that namespace, so even a client's loopback-only status port is reachable
without starting a process per request.
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import wait_for
from tests.system.netlab import Machine

HTTP_PORT = 5000
PEER_PORT = 6881
STATUS_PORT = 5001
QUIET = ("--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(host: Machine) -> Iterator[None]:
    """Run the block with this thread in `host`'s network namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{host.netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def get_bytes(
    host: Machine, address: str, port: int, path: str, timeout: float = 10.0
) -> bytes | None:
    """GET http://address:port/path from inside `host`; None unless it answers 200."""
    try:
        with inside(host):
            sock = socket.create_connection((address, port), timeout=timeout)
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
        conn.sock = sock
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
    except OSError:
        return None
    return body if answer.status == 200 else None


def get_json(host: Machine, address: str, port: int, path: str, timeout: float = 10.0) -> Any:
    """GET a JSON document from inside `host`; None unless it answers 200."""
    body = get_bytes(host, address, port, path, timeout)
    return None if body is None else json.loads(body)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Node:
    """One meshmedia process in one lab host, its stderr in a log file."""

    role = "node"

    def __init__(self, host: Machine, base: Path) -> None:
        self.host = host
        self.base = base
        self.state_dir = base / "state"
        self.log = base / f"{self.role}.log"
        base.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        """The meshmedia command line (without the interpreter)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the process in its host."""
        with self.log.open("ab") as err:
            command = [sys.executable, "-m", "meshmedia", *self.args()]
            self.proc = self.host.popen(
                command, stdout=subprocess.DEVNULL, stderr=err, cwd=self.base
            )

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Send `sig` and wait for the exit (SIGKILL after `timeout`); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        code, self.proc = self.proc.returncode, None
        return code

    def tail(self, lines: int = 25) -> str:
        """The last lines of its log, headed by who it is."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        body = "\n".join(text.splitlines()[-lines:])
        return f"--- {self.role} on {self.host.name} ({self.log}):\n{body}"


class CuratorNode(Node):
    """`meshmedia serve` on host:5000 (HTTP on every address), BitTorrent on host:6881."""

    role = "curator"

    def __init__(self, host: Machine, base: Path, *extra: str) -> None:
        super().__init__(host, base)
        self.share = base / "share"
        self.share.mkdir(parents=True, exist_ok=True)
        self.extra = list(extra)

    @property
    def manifest_url(self) -> str:
        """The default group's manifest URL, as clients reach it."""
        return f"http://{self.host.address}:{HTTP_PORT}/manifest/default.json"

    def args(self) -> list[str]:
        """serve with one share folder (group default) and fixed ports."""
        return [
            "serve", "--share", f"default={self.share}", "--state-dir", str(self.state_dir),
            "--host", "0.0.0.0", "--port", str(HTTP_PORT),
            "--listen-host", self.host.address, "--listen-port", str(PEER_PORT),
            "--settle-time", "0.2", "--public", "*", *self.extra,
        ]  # fmt: skip

    def get(self, path: str) -> Any:
        """GET a path of its HTTP module (from inside its host); None on failure."""
        return get_json(self.host, self.host.address, HTTP_PORT, path)

    def get_bytes(self, path: str) -> bytes | None:
        """GET a path of its HTTP module as bytes; None on failure."""
        return get_bytes(self.host, self.host.address, HTTP_PORT, path)

    def start(self) -> None:
        """Start and wait until the HTTP module answers."""
        super().start()
        wait_until(lambda: self.get("/"), 60, "the curator's HTTP module answers", [self])

    def manifest(self) -> dict[str, Any]:
        """The default group's manifest (empty when it does not answer)."""
        return dict(self.get("/manifest/default.json") or {})

    def wait_items(self, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        """Wait until the manifest lists `count` items; returns them."""
        wait_until(
            lambda: len(self.manifest().get("items", [])) >= count,
            timeout,
            f"{count} item(s) in the manifest",
            [self],
        )
        return list(self.manifest()["items"])

    def uploaded(self) -> int:
        """Payload bytes its engine has uploaded since it started (all torrents)."""
        status = self.get("/status") or {}
        return sum(t["total_upload"] for t in status.get("torrents", []))


class ClientNode(Node):
    """`meshmedia sync` following one curator, its status on the host's 127.0.0.1:5001."""

    role = "client"

    def __init__(self, host: Machine, base: Path, manifest_url: str, *extra: str) -> None:
        super().__init__(host, base)
        self.media = base / "media"
        self.manifest_url = manifest_url
        self.extra = list(extra)

    def args(self) -> list[str]:
        """sync with its own folders and fixed ports."""
        return [
            "sync", "--manifest-url", self.manifest_url, "--download-dir", str(self.media),
            "--state-dir", str(self.state_dir),
            "--listen-host", self.host.address, "--listen-port", str(PEER_PORT),
            "--status-port", str(STATUS_PORT), "--min-free", "0", "--interval", "2",
            *self.extra,
        ]  # fmt: skip

    def status(self) -> dict[str, Any]:
        """Its /status (empty when it does not answer)."""
        return dict(get_json(self.host, "127.0.0.1", STATUS_PORT, "/status") or {})

    def torrents(self) -> list[dict[str, Any]]:
        """Its engine's torrents."""
        return list(self.status().get("engine", {}).get("torrents", []))

    def placed(self, path: str) -> bool:
        """True when the item at `path` is verified and in place."""
        items = self.status().get("items", [])
        return any(i["path"] == path and i["state"] == "placed" for i in items)

    def counters(self) -> tuple[int, int]:
        """(payload downloaded, payload uploaded) by its engine since it started."""
        torrents = self.torrents()
        return (
            sum(t["total_download"] for t in torrents),
            sum(t["total_upload"] for t in torrents),
        )

    def progress(self) -> float:
        """Progress of its first torrent (0 when none yet)."""
        torrents = self.torrents()
        return float(torrents[0]["progress"]) if torrents else 0.0

    def pieces_written(self, source: Path, name: str, piece_size: int) -> set[int]:
        """Pieces of its copy of `name` (partial or placed) that equal the source's.

        Random source data: a piece that matches was received; read live from disk."""
        found = [self.media / name, *self.media.glob(f".meshmedia/incomplete/*/{name}")]
        copies = [path for path in found if path.is_file()]
        if not copies:
            return set()
        have: set[int] = set()
        with source.open("rb") as original, copies[0].open("rb") as copy:
            index = 0
            while expected := original.read(piece_size):
                if copy.read(piece_size) == expected:
                    have.add(index)
                index += 1
        return have


def tails(nodes: list[Node]) -> str:
    """The log tails of every node, for an assertion message."""
    return "\n".join(node.tail() for node in nodes)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    nodes: list[Node],
    interval: float = 0.2,
) -> Any:
    """Poll `predicate` until truthy; on timeout fail with `what` and the nodes' log tails."""
    return wait_for(predicate, timeout, interval, describe=lambda: f"{what}\n{tails(nodes)}")


def assert_identical(clients: list[ClientNode], path: str, digest: str) -> None:
    """Every client has `path` in place, byte-identical to the source (SHA-256)."""
    for client in clients:
        final = client.media / path
        assert final.is_file(), f"{final} missing\n{tails(list(clients))}"
        assert sha256(final) == digest, f"{final} differs from the source"
