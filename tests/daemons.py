"""Real meshmedia daemons for tests: `meshmedia serve` and `meshmedia sync` child processes."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import free_port, meshmedia_command, wait_for

MIB = 1 << 20
NETWORK = ("--listen-host", "127.0.0.1", "--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def answers(url: str) -> Any:
    try:
        return get_json(url)
    except OSError:
        return None


class Daemon:
    """A meshmedia child process with its log in a file; stopped by stop()."""

    def __init__(self, base: Path, name: str) -> None:
        self.base = base
        self.log = base / f"{name}.log"
        base.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.open_files: int | None = None  # a soft RLIMIT_NOFILE to start the process with

    def spawn(self, *args: str) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                meshmedia_command(*args), stdout=subprocess.DEVNULL, stderr=err, cwd=self.base,
                preexec_fn=self._limit_files if self.open_files else None,  # noqa: PLW1509
            )  # fmt: skip

    def _limit_files(self) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, hard))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        code, self.proc = self.proc.returncode, None
        return code


class Curator(Daemon):
    """`meshmedia serve` with one share folder (group default) on fixed ports."""

    def __init__(self, base: Path, upload_limit: str = "0") -> None:
        super().__init__(base, "serve")
        self.share = base / "share"
        self.share.mkdir(parents=True, exist_ok=True)
        self.port, self.peer_port = free_port(), free_port()
        self.upload_limit = upload_limit

    @property
    def manifest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/manifest/default.json"

    def start(self) -> None:
        self.spawn(
            "serve", "--share", f"default={self.share}", "--state-dir", str(self.base / "state"),
            "--host", "127.0.0.1", "--port", str(self.port), "--listen-port", str(self.peer_port),
            "--upload-limit", self.upload_limit, "--settle-time", "0.2", *NETWORK,
            "--public", "*", "--ssl-listen-port", "0",
        )  # fmt: skip
        wait_for(lambda: answers(f"http://127.0.0.1:{self.port}/"), timeout=60, interval=0.2)

    def items(self) -> list[dict[str, Any]]:
        return list((answers(self.manifest_url) or {}).get("items", []))

    def wait_items(self, count: int) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.items()) >= count, timeout=60, interval=0.2)
        return self.items()


class Client(Daemon):
    """`meshmedia sync` with its own state dir, media folder and status port."""

    def __init__(self, base: Path, urls: list[str]) -> None:
        super().__init__(base, "sync")
        self.media = base / "media"
        self.status_port = free_port()
        self.urls = urls

    def args(self, *extra: str) -> list[str]:
        urls = [arg for url in self.urls for arg in ("--manifest-url", url)]
        return [
            "sync", *urls, "--download-dir", str(self.media),
            "--state-dir", str(self.base / "state"), "--listen-port", "0",
            "--status-port", str(self.status_port), "--min-free", "0", "--interval", "2",
            *NETWORK, *extra,
        ]  # fmt: skip

    def once(
        self, *extra: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                meshmedia_command(*self.args("--once", *extra)),
                capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base,
                env={**os.environ, **env} if env else None,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            # The daemon's own log says where it stalled; pytest would show only its start.
            said = exc.stderr or b""
            text = said.decode(errors="replace") if isinstance(said, bytes) else said
            log = text[-6000:]
            raise AssertionError(f"sync --once ran past {timeout} s; its log:\n{log}") from None

    def start(self, *extra: str) -> None:
        self.spawn(*self.args(*extra))

    def status(self) -> dict[str, Any] | None:
        return answers(f"http://127.0.0.1:{self.status_port}/status")

    def placed(self, path: str) -> bool:
        items = (self.status() or {}).get("items", [])
        return any(i["path"] == path and i["state"] == "placed" for i in items)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
