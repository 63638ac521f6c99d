"""meshmedia on arm64 (a Raspberry Pi 4/5 on 64-bit Raspberry Pi OS), emulated here.

    sudo .venv/bin/python -m benchmarks.arm64          # about 2 min with a cached root

An arm64 Debian 12 root made by mmdebstrap (cached, see rootfs.py) is unpacked into a
temporary folder and entered with chroot; its programs run under qemu-user through
binfmt_misc. meshmedia is installed there from wheels alone: its own (pure Python)
wheel and PyPI's aarch64 wheels of its dependencies, libtorrent 2.1 among them. A
curator and a client then run in that root, on 127.0.0.1 (a chroot shares the host's
network, so free ports are used and nothing leaves loopback: no DHT, LSD, UPnP or
NAT-PMP), and a small file dropped into the curator's share must arrive, verified, in
the client's media folder. Prints how long each step took; exits 1 on any failure.
Needs root, qemu-user-static, binfmt-support, arch-test and mmdebstrap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import rootfs
from benchmarks.common import Processes, free_port, random_file, wait_until

BINFMT = Path("/proc/sys/fs/binfmt_misc")
VENV = "/opt/meshmedia"
QUIET = {
    "MESHMEDIA_DHT": "false",
    "MESHMEDIA_LSD": "false",
    "MESHMEDIA_UPNP": "false",
    "MESHMEDIA_NATPMP": "false",
    "MESHMEDIA_LISTEN_HOST": "127.0.0.1",
    "MESHMEDIA_ADVERTISE_HOST": "127.0.0.1",
}
FILE_SIZE = 4 << 20


def missing() -> str | None:
    """Why this cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, chroot, binfmt_misc)"
    for tool, package in (
        ("mmdebstrap", "mmdebstrap"),
        ("arch-test", "arch-test"),
        ("qemu-aarch64-static", "qemu-user-static"),
        ("update-binfmts", "binfmt-support"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install {package}; .ci/run does)"
    return None


def enable_qemu() -> None:
    """Mount binfmt_misc and enable qemu-aarch64 (neither is done on a fresh machine)."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True)


def in_root(root: Path, *argv: str) -> list[str]:
    """argv run inside `root`, with /proc mounted in a mount namespace of its own (the
    mount ends with the process, so nothing is left mounted in the temporary folder)."""
    enter = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", enter, str(root), *argv]


def environment(**settings: str) -> dict[str, str]:
    """A clean environment for a process in the root, with meshmedia's settings."""
    # The same PATH finds unshare and chroot on the host, and meshmedia in the root.
    path = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    base = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8"}
    return {**base, **QUIET, **settings}


def timed(times: dict[str, float], name: str, step: Callable[[], object]) -> object:
    """Run `step`, keep its duration under `name`."""
    started = time.monotonic()
    value = step()
    times[name] = time.monotonic() - started
    return value


def answers(url: str) -> object:
    """The JSON at `url`, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)
    except OSError:
        return None


def chrooted(root: Path, *argv: str) -> str:
    """Run argv in the root to its end; its output (CalledProcessError on failure)."""
    done = subprocess.run(
        in_root(root, *argv), check=True, env=environment(), capture_output=True, text=True
    )
    return done.stdout.strip()


def install(root: Path) -> str:
    """Install meshmedia in the root from wheels only; libtorrent's version and machine."""
    wheels = root / "wheels"
    shutil.copytree(rootfs.wheelhouse("aarch64"), wheels)
    rootfs.own_wheel(wheels)
    chrooted(root, "python3", "-m", "venv", VENV)
    chrooted(root, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/wheels",
             "meshmedia")  # fmt: skip
    probe = "import libtorrent, platform; print(libtorrent.__version__, platform.machine())"
    return chrooted(root, f"{VENV}/bin/python", "-c", probe)


def sync_a_file(root: Path, work: Path, times: dict[str, float]) -> None:
    """A curator and a client in the root; a file dropped into the share is placed."""
    srv = root / "srv"
    for name in ("share", "media"):
        (srv / name).mkdir(parents=True)
    port, status_port = free_port(), free_port()
    curator = environment(
        MESHMEDIA_STATE_DIR="/srv/curator", MESHMEDIA_SHARE="/srv/share",
        MESHMEDIA_HOST="127.0.0.1", MESHMEDIA_PORT=str(port),
        MESHMEDIA_LISTEN_PORT=str(free_port()),
    )  # fmt: skip
    client = environment(
        MESHMEDIA_STATE_DIR="/srv/client", DOWNLOAD_DIR="/srv/media", MESHMEDIA_MIN_FREE="0",
        MANIFEST_URL=f"http://127.0.0.1:{port}/manifest/default.json",
        MESHMEDIA_STATUS_PORT=str(status_port), MESHMEDIA_LISTEN_PORT=str(free_port()),
    )  # fmt: skip
    procs = Processes()
    daemons = []
    try:
        started = time.monotonic()
        for name, env in (("serve", curator), ("sync", client)):
            argv = in_root(root, "meshmedia", name)
            daemons.append(procs.start(argv, work / f"{name}.log", env=env))
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/"), 180, "the curator's GET /")
        wait_until(
            lambda: answers(f"http://127.0.0.1:{status_port}/status"), 180, "the client's status"
        )
        times["daemons up"] = time.monotonic() - started
        staged = random_file(work / "film.mkv", FILE_SIZE)
        want = hashlib.sha256(staged.read_bytes()).hexdigest()
        placed = srv / "media" / "film.mkv"
        dropped = time.monotonic()
        shutil.move(staged, srv / "share" / "film.mkv")

        def arrived() -> bool:
            if not procs.alive():
                raise RuntimeError("a daemon exited early")
            return placed.exists() and hashlib.sha256(placed.read_bytes()).hexdigest() == want

        wait_until(arrived, 300, "the file in the client's media folder")
        times["publish -> placed"] = time.monotonic() - dropped
    except (RuntimeError, TimeoutError) as exc:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in work.glob("*.log"))
        raise RuntimeError(f"{exc}\n{logs}") from exc
    finally:
        procs.close()
    codes = [p.returncode for p in daemons]
    if any(codes):
        raise RuntimeError(f"a daemon exited with {codes} on SIGTERM")


def run(keep: bool = False) -> tuple[dict[str, float], str]:
    """The whole run; the time of each step and libtorrent's version in the root."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    times: dict[str, float] = {}
    began = time.monotonic()
    enable_qemu()
    tarball = timed(
        times, "root (mmdebstrap, cached after once)", lambda: rootfs.debian_root("arm64")
    )
    work = Path(tempfile.mkdtemp(prefix="meshmedia-arm64."))
    root = work / "root"
    root.mkdir()
    try:
        tar = ["tar", "-xf", str(tarball), "-C", str(root)]
        timed(times, "unpack", lambda: subprocess.run(tar, check=True))
        libtorrent = str(timed(times, "install from wheels", lambda: install(root)))
        sync_a_file(root, work, times)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    times["total"] = time.monotonic() - began
    return times, libtorrent


def main() -> int:
    """Run, print the times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the unpacked root")
    args = parser.parse_args()
    try:
        times, libtorrent = run(keep=args.keep)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        print(f"arm64: FAILED: {exc}\n{detail}", file=sys.stderr)
        return 1
    print(f"arm64 (qemu-user): libtorrent {libtorrent}; load average {os.getloadavg()[0]:.2f}")
    for name, seconds in times.items():
        print(f"  {name:<40} {seconds:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
