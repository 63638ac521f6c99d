"""`meshmedia doctor`: checks the things that most often stop a node, each with a fix."""

from __future__ import annotations

import errno
import functools
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from meshmedia.config import Config

INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
MIN_WATCHES = 8192


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ok, what was seen, and how to fix it when not ok."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_libtorrent() -> Check:
    """libtorrent imports and is a 2.x build."""
    try:
        import libtorrent  # noqa: PLC0415 - the import itself is what is checked
    except ImportError as exc:
        return Check("libtorrent", False, str(exc), "pip install 'libtorrent>=2.1,<2.2'")
    version = str(getattr(libtorrent, "__version__", "?"))
    if not version.startswith("2."):
        return Check("libtorrent", False, f"version {version}", "install libtorrent 2.1")
    return Check("libtorrent", True, f"version {version}")


def check_port(name: str, host: str, port: int, kind: int = socket.SOCK_STREAM) -> Check:
    """The port can be bound (it is free, or we may not be running yet)."""
    if port == 0:
        return Check(name, True, "a free port is picked at start")
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Check(
                    name,
                    False,
                    f"{host}:{port} is in use",
                    "stop the other program, or pick another port (is meshmedia running?)",
                )
            return Check(name, False, f"{host}:{port}: {exc.strerror}", "pick another address")
    return Check(name, True, f"{host}:{port} is free")


def check_writable(name: str, folder: Path) -> Check:
    """The folder exists (or can be made) and a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".meshmedia-doctor-"):
            pass
    except OSError as exc:
        return Check(
            name,
            False,
            f"{folder}: {exc.strerror}",
            f"create it and give the meshmedia user write access: chown meshmedia {folder}",
        )
    return Check(name, True, f"{folder} is writable")


def check_inotify(path: Path = INOTIFY_WATCHES) -> Check:
    """The inotify watch limit is high enough for a media library."""
    try:
        watches = int(path.read_text())
    except (OSError, ValueError):
        return Check("inotify", False, "no inotify here", "the watcher will poll (slower)")
    if watches < MIN_WATCHES:
        return Check(
            "inotify",
            False,
            f"max_user_watches is {watches}",
            "echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-meshmedia.conf"
            " && sudo sysctl --system",
        )
    return Check("inotify", True, f"max_user_watches is {watches}")


SOCKET_MAX = (Path("/proc/sys/net/core/rmem_max"), Path("/proc/sys/net/core/wmem_max"))
UTP_BUFFER = 4 * 1024 * 1024


def check_socket_buffers(paths: tuple[Path, ...] = SOCKET_MAX) -> Check:
    """The kernel lets libtorrent have the 4 MiB UDP buffers uTP needs (see engine notes)."""
    try:
        limits = [int(path.read_text()) for path in paths]
    except (OSError, ValueError):
        return Check("socket buffers", True, "limits unknown here")
    if min(limits) < UTP_BUFFER:
        return Check(
            "socket buffers",
            False,
            f"net.core.rmem_max/wmem_max are {limits[0]}/{limits[1]}: uTP stalls at LAN speed",
            "printf 'net.core.rmem_max=4194304\\nnet.core.wmem_max=4194304\\n' | sudo tee "
            "/etc/sysctl.d/90-meshmedia-utp.conf && sudo sysctl --system",
        )
    return Check("socket buffers", True, f"rmem_max/wmem_max {limits[0]}/{limits[1]}")


def check_jellyfin(config: Config) -> Check:
    """Jellyfin answers and accepts the API key (when configured)."""
    if not config.jellyfin_url:
        return Check("jellyfin", True, "not configured (JELLYFIN_URL unset)")
    from meshmedia.jellyfin import check  # noqa: PLC0415 - only when configured

    result = check(config.jellyfin_url, config.jellyfin_api_key or "")
    ok = bool(getattr(result, "ok", False))
    detail = str(getattr(result, "detail", result))
    fix = "" if ok else "check JELLYFIN_URL, and create an API key in Dashboard > API Keys"
    return Check("jellyfin", ok, detail, fix)


def run_checks(config: Config, role: str) -> Iterator[Check]:
    """Every check for a curator (`serve`) or a client (`sync`)."""
    checks: list[Callable[[], Check]] = [
        check_libtorrent,
        check_socket_buffers,
        lambda: check_writable("state dir", config.state_dir),
        lambda: check_port("bittorrent port", config.listen_host, config.listen_port),
    ]
    if role == "curator":
        checks += [lambda: check_port("http port", config.host, config.port), check_inotify]
        checks += [
            functools.partial(check_writable, f"share {share.group}", share.path)
            for share in config.shares
        ]
    else:
        checks += [
            lambda: check_writable("download dir", config.download_dir),
            lambda: check_port("status port", "127.0.0.1", config.status_port),
            lambda: check_jellyfin(config),
        ]
    for check in checks:
        yield check()
