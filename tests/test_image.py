"""The container image: built from the Containerfile with podman, it runs a curator and
a client, and a file dropped into the curator's share volume arrives, verified, in the
client's media volume, owned by PUID:PGID, with neither daemon running as root.

Long (marked `image`): measured 61 s on a machine's first run, which makes a Debian
base with mmdebstrap and fetches the wheels, and 19-21 s later, reusing both (see
benchmarks/rootfs.py; the build itself is 10-16 s). It skips where podman cannot
run, except under CI=true, where that is a failure. MESHMEDIA_IMAGE_BASE names another
base (e.g. python:3.11-slim).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import rootfs
from tests.helpers import free_port, random_file, wait_for

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PODMAN = ("podman", "--runtime", "runc")  # crun refuses this machine's hybrid cgroups
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")  # below the host's
PUID, PGID = 4242, 4243
QUIET = {  # no traffic off loopback: no DHT, LSD, UPnP or NAT-PMP, peers on 127.0.0.1
    "MESHMEDIA_DHT": "false",
    "MESHMEDIA_LSD": "false",
    "MESHMEDIA_UPNP": "false",
    "MESHMEDIA_NATPMP": "false",
    "MESHMEDIA_LISTEN_HOST": "127.0.0.1",
    "MESHMEDIA_HOST": "127.0.0.1",
    "MESHMEDIA_ADVERTISE_HOST": "127.0.0.1",
    "PUID": str(PUID),
    "PGID": str(PGID),
}


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run podman with this machine's runtime; its output as text."""
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def unavailable() -> str | None:
    """Why the image cannot be built and run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman buildah runc; .ci/run does)"
    if os.geteuid() != 0:
        return "needs root: rootless podman maps PUID to a subordinate id on the host"
    if "MESHMEDIA_IMAGE_BASE" not in os.environ and shutil.which("mmdebstrap") is None:
        return "no registry here: the base is made by mmdebstrap, which is not installed"
    info = podman("info", check=False, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-300:]}"
    return None


def base_image() -> str:
    """The build's base: MESHMEDIA_IMAGE_BASE, else a Debian root from mmdebstrap,
    imported once under a tag named after the tarball's inputs."""
    explicit = os.environ.get("MESHMEDIA_IMAGE_BASE")
    if explicit:
        return explicit
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    )
    tarball = rootfs.debian_root(arch.stdout.strip(), hooks=("merged-usr",))
    tag = f"localhost/meshmedia-base:{tarball.stem}"
    if podman("image", "exists", tag, check=False).returncode != 0:
        podman("import", "--quiet", str(tarball), tag)
    return tag


def megabytes(image: str) -> float:
    """An image's size in MB."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config) -> Iterator[str]:
    """The meshmedia image, built offline (--network none) from this checkout."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the image test: {reason}")
        pytest.skip(reason)
    started = time.monotonic()
    base = base_image()
    wheels = rootfs.wheelhouse(platform.machine())
    prepared = time.monotonic()
    tag = f"localhost/meshmedia-test:{os.getpid()}"
    build = podman(
        "build", "--format", "docker", "--layers=false", "--network", "none", *LIMITS,
        "--build-arg", f"BASE={base}", "--build-arg", "WHEELHOUSE=/wheelhouse",
        "--volume", f"{wheels}:/wheelhouse:ro", "--tag", tag, str(ROOT),
        check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    built = time.monotonic()
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown on every run, as capsys.disabled()
        print(
            f"\nimage {tag}: {megabytes(tag):.0f} MB (base {base}: {megabytes(base):.0f} MB); "
            f"base and wheels {prepared - started:.0f} s, build {built - prepared:.0f} s"
        )
    yield tag
    podman("rmi", "--force", tag, check=False)


class Container:
    """One detached container of the image on the host's network, removed by close()."""

    def __init__(self, image: str, name: str, command: str, env: dict[str, str], **vols: Path):
        self.name = f"meshmedia-{name}-{os.getpid()}"
        args = [f"--env={key}={value}" for key, value in {**QUIET, **env}.items()]
        args += [f"--volume={path}:/{target}" for target, path in vols.items()]
        podman("rm", "--force", self.name, check=False)
        podman("run", "--detach", "--name", self.name, "--network", "host", *LIMITS, *args,
               image, command)  # fmt: skip

    def logs(self) -> str:
        """The container's output so far (its last 3000 characters)."""
        out = podman("logs", self.name, check=False)
        return f"--- {self.name}\n{(out.stdout + out.stderr)[-3000:]}"

    def healthy(self) -> bool:
        """The image's HEALTHCHECK passes now (AssertionError once the container stopped)."""
        if podman("healthcheck", "run", self.name, check=False).returncode == 0:
            return True
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name)
        assert state.stdout.startswith("running"), f"stopped: {state.stdout}{self.logs()}"
        return False

    def process_status(self) -> dict[str, str]:
        """Fields of /proc/1/status in the container (Uid, Gid, NoNewPrivs...)."""
        out = podman("exec", self.name, "cat", "/proc/1/status").stdout
        return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        podman("stop", "--time", "30", self.name)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout)

    def close(self) -> None:
        """Remove the container (and its anonymous volumes)."""
        podman("rm", "--force", "--volumes", self.name, check=False)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def owners(folder: Path) -> set[tuple[int, int]]:
    """Every (uid, gid) found on the folder and under it."""
    paths = [folder, *folder.rglob("*")]
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in paths}


def test_a_file_dropped_in_the_curator_volume_arrives_in_the_client_volume(
    image: str, tmp_path: Path
) -> None:
    # Folders made by root, as a new volume is: the entrypoint hands them to PUID:PGID.
    share, media, curator_state, client_state = (
        tmp_path / name for name in ("share", "media", "curator", "client")
    )
    for folder in (share, media, curator_state, client_state):
        folder.mkdir()
    port = free_port()
    containers: list[Container] = []
    try:
        curator = Container(
            image, "curator", "serve",
            {  # a public group: the client has not joined (tests/groups does that)
                "MESHMEDIA_PORT": str(port),
                "MESHMEDIA_LISTEN_PORT": str(free_port()),
                "MESHMEDIA_SSL_LISTEN_PORT": str(free_port()),
                "MESHMEDIA_PUBLIC": "*",
            },
            share=share, config=curator_state,
        )  # fmt: skip
        containers.append(curator)
        client = Container(
            image, "client", "sync",
            {
                "MANIFEST_URL": f"http://127.0.0.1:{port}/manifest/default.json",
                "MESHMEDIA_LISTEN_PORT": str(free_port()),
                "MESHMEDIA_SSL_LISTEN_PORT": str(free_port()),
                "MESHMEDIA_STATUS_PORT": str(free_port()),
                "MESHMEDIA_MIN_FREE": "0",
            },
            media=media, config=client_state,
        )  # fmt: skip
        containers.append(client)

        def describe() -> str:
            return "\n".join(c.logs() for c in containers)

        wait_for(curator.healthy, timeout=90, interval=0.5, describe=describe)
        wait_for(client.healthy, timeout=90, interval=0.5, describe=describe)

        dropped = random_file(share / "Film (2001)" / "film.mkv", 3 << 20, seed=16)
        placed = media / "Film (2001)" / "film.mkv"
        want = sha256(dropped)
        wait_for(
            lambda: placed.exists() and sha256(placed) == want,
            timeout=120, interval=0.2, describe=describe,
        )  # fmt: skip

        assert owners(placed.parent) == {(PUID, PGID)}
        for state in (curator_state, client_state):
            assert owners(state) == {(PUID, PGID)}, state
        for container in containers:
            status = container.process_status()
            assert status["Uid"].split() == [str(PUID)] * 4, status["Uid"]
            assert status["Gid"].split() == [str(PGID)] * 4, status["Gid"]
            assert status["NoNewPrivs"].strip() == "1"
        assert [c.stop() for c in (client, curator)] == [0, 0], describe()
    finally:
        for container in containers:
            container.close()


def test_the_entrypoint_runs_any_command_as_puid_and_refuses_root(image: str) -> None:
    def run(*args: str, puid: int = PUID) -> subprocess.CompletedProcess[str]:
        ids = ("--env", f"PUID={puid}", "--env", f"PGID={PGID}")
        return podman("run", "--rm", "--network", "none", *LIMITS, *ids, image, *args, check=False)

    version = run("--version")  # a word or an option is meshmedia's
    assert version.returncode == 0, version
    assert "meshmedia, version" in version.stdout
    # `sync` is also coreutils' program on PATH: the word must still mean meshmedia's.
    assert "Usage: meshmedia sync" in run("sync", "--help").stdout
    ids = run("/bin/sh", "-c", "id -u; id -G")  # a path is run as it is, as the user too
    assert ids.stdout.split() == [str(PUID), str(PGID)], ids
    refused = run("serve", puid=0)
    assert refused.returncode == 64, refused
    assert "PUID=0 would run meshmedia as root" in refused.stderr
