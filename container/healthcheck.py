#!/usr/bin/env python3
"""The meshmedia image's HEALTHCHECK: exit 0 when the daemon in this container answers.

A curator (`serve`) must answer `GET /` with {"status": "ok"}; a client (`sync`)
must answer `GET /status` on its loopback status port. The role, and any --host,
--port or --status-port, are read from the command line of process 1 (meshmedia
itself, or the init that started it); the environment gives the rest. Any other
command (keygen, doctor...) has nothing to check.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

TIMEOUT = 5.0
ANY_ADDRESS = {"", "0.0.0.0", "::"}  # noqa: S104 - what a bound-to-all daemon is reached at


def command_line() -> list[str]:
    """The arguments of process 1."""
    with open("/proc/1/cmdline", "rb") as f:
        return [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]


def flag(argv: list[str], name: str, default: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE` in argv, else `default`."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def target(argv: list[str]) -> str | None:
    """The URL that shows this container's daemon is alive, or None for no daemon."""
    role = next((arg for arg in argv if arg in ("serve", "sync")), None)
    if role == "serve":
        host = flag(argv, "--host", os.environ.get("MESHMEDIA_HOST", "127.0.0.1"))
        host = "127.0.0.1" if host in ANY_ADDRESS else host
        port = flag(argv, "--port", os.environ.get("MESHMEDIA_PORT", "5000"))
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    if role == "sync":
        port = flag(argv, "--status-port", os.environ.get("MESHMEDIA_STATUS_PORT", "5001"))
        return f"http://127.0.0.1:{port}/status"
    return None


def main() -> int:
    """Check the daemon; print why it is unhealthy."""
    url = target(command_line())
    if url is None:
        return 0
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - http only
            body = json.load(answer)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if url.endswith("/") and body.get("status") != "ok":
        print(f"unhealthy: {url} answered {body!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
