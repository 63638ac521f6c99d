"""Cached build inputs for the container image test and the arm64 run.

A Debian root made by mmdebstrap (no container registry is reachable here, Debian's
packages are) and a folder of wheels for a target platform, fetched from PyPI on the
host (pip inside a container or a foreign root has no index configuration). Both are
kept under a stable cache folder, keyed on what makes them, so a rerun only reuses:

    ~/.cache/meshmedia-build/debian-bookworm-arm64-<key>.tar
    ~/.cache/meshmedia-build/wheels-manylinux_2_17_aarch64-cp311-<key>/

MESHMEDIA_BUILD_CACHE names another folder.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PYTHON = "3.11"  # bookworm's python3, and the default base image's
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, manual pages and translations are not needed to run a daemon.
TRIM = tuple(
    f"--dpkgopt=path-{rule}"
    for rule in (
        "exclude=/usr/share/doc/*",
        "include=/usr/share/doc/*/copyright",
        "exclude=/usr/share/man/*",
        "exclude=/usr/share/info/*",
        "exclude=/usr/share/locale/*",
        "exclude=/usr/share/lintian/*",
    )
)
# Extra wheels pip needs to build meshmedia itself from source without an index.
BUILD_WHEELS = ("setuptools>=64", "wheel")


def cache_dir() -> Path:
    """The folder that keeps roots and wheels between runs."""
    explicit = os.environ.get("MESHMEDIA_BUILD_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshmedia-build"


def key(*parts: object) -> str:
    """A short digest naming a cache entry after everything that made it."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


def debian_root(arch: str, packages: Sequence[str] = PACKAGES, hooks: Sequence[str] = ()) -> Path:
    """A tarball of a minimal Debian root for `arch` (amd64, arm64) with `packages`.

    Made once by mmdebstrap (40 s for amd64; about 5 min for arm64, whose package
    scripts run under qemu) and reused while the command line is the same. `hooks`
    names mmdebstrap's hook folders, e.g. "merged-usr".
    """
    hook_dirs = [f"--hook-dir=/usr/share/mmdebstrap/hooks/{name}" for name in hooks]
    argv = [
        "mmdebstrap", "--variant=minbase", f"--arch={arch}",
        "--include=" + ",".join(packages), *TRIM, *hook_dirs, SUITE,
    ]  # fmt: skip
    out = cache_dir() / f"debian-{SUITE}-{arch}-{key(argv, MIRROR)}.tar"
    if out.exists():
        return out
    part = Path(tempfile.mkdtemp(prefix=out.stem + ".", dir=_parent(out)))
    try:
        # The mirror is given, and stdin closed: mmdebstrap would read a sources.list
        # from a standard input that is not a terminal.
        tar = part / "root.tar"
        subprocess.run([*argv, str(tar), MIRROR], check=True, stdin=subprocess.DEVNULL)
        tar.rename(out)  # a run beside this one may have renamed its own: same inputs
    finally:
        remove(part)
    return out


def requirements() -> list[str]:
    """meshmedia's install_requires, read from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    return [line.strip() for line in lines if line.strip()]


def platform_tags(machine: str) -> list[str]:
    """pip --platform values a Debian 12 (glibc 2.36) machine of `machine` accepts.

    pip does not widen an explicit manylinux tag to the older ones (asked for
    manylinux_2_36 it refused cryptography's manylinux_2_34 wheel), so all are listed.
    """
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def wheelhouse(machine: str, python: str = PYTHON) -> Path:
    """A folder with a wheel of every dependency of meshmedia for `machine` (x86_64,
    aarch64) and CPython `python`, plus setuptools and wheel; fetched once."""
    reqs = [*requirements(), *BUILD_WHEELS]
    out = cache_dir() / f"wheels-{machine}-cp{python.replace('.', '')}-{key(reqs)}"
    if out.exists():
        return out
    part = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=_parent(out)))
    platforms = [arg for tag in platform_tags(machine) for arg in ("--platform", tag)]
    try:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                *platforms, "--python-version", python, "--implementation", "cp",
                "--dest", str(part), *reqs,
            ],
            check=True,
        )  # fmt: skip
        try:
            part.rename(out)
        except OSError:  # a run beside this one made it first (rename onto a full folder)
            if not out.exists():
                raise
    finally:
        remove(part)
    return out


def own_wheel(dest: Path) -> Path:
    """Build meshmedia's own (pure Python) wheel from this checkout into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(ROOT)],
        check=True,
    )
    return next(dest.glob("meshmedia-*.whl"))


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def remove(path: Path) -> None:
    """Remove a file or folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
