"""CI's rule: a test that would skip locally fails when CI=true (every part must be present)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run a one-test file that skips, with this suite's conftest loaded as a plugin."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("import pytest\n\ndef test_needs_a_part():\n    pytest.skip('no part')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_skip_fails_the_run_in_ci(tmp_path: Path) -> None:
    done = run_probe(tmp_path, "true")
    assert done.returncode == 1, done.stdout
    assert "skipped in CI" in done.stdout
    assert "no part" in done.stdout


def test_a_skip_stays_a_skip_locally(tmp_path: Path) -> None:
    done = run_probe(tmp_path, None)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout


def test_ci_script_fails_loudly_when_a_debian_package_cannot_be_had() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "dependent tests will skip" not in script
    assert 'export CI="${CI:-true}"' in script


def test_ci_script_type_checks_with_mypy_after_ruff() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    runs = [line.split("#")[0].strip() for line in lines]
    assert ".venv/bin/mypy meshmedia" in runs
    assert runs.index(".venv/bin/mypy meshmedia") > runs.index(".venv/bin/ruff format --check .")
    assert runs.index(".venv/bin/mypy meshmedia") < runs.index(".venv/bin/python -m pytest")
    extras = (ROOT / "setup.cfg").read_text().split("[options.extras_require]")[1]
    assert "mypy" in extras.split("[options.entry_points]")[0]


# `.ci/run`'s preflight, run for real from a copy (so `cd "$(dirname "$0")/.."` lands in
# tmp_path) with a PATH of stand-ins: apt-get always fails, and python3 records that the
# preflight let the run go on (it would create .venv and run the suite).
STANDINS = ("podman", "mmdebstrap", "qemu-aarch64-static", "nft", "miniupnpd", "upnpc",
            "natpmpc", "conntrack", "chromium", "systemd-analyze", "ip")  # fmt: skip
NO_NETNS = '[ "$1" = netns ] && { echo "mount of /run/netns failed" >&2; exit 1; }; exit 0'


def run_ci_preflight(
    tmp_path: Path, missing: str = "", broken: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """`CI=true bash .ci/run` without `missing` on PATH and with `broken`'s stand-ins
    (name: shell body); the run and whether it got past the preflight."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "tail"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    marker = tmp_path / "got-past-preflight"
    bodies = {name: "exit 0" for name in STANDINS if name != missing}
    bodies.update(broken or {})
    bodies["apt-get"] = "echo 'E: Unable to locate package' >&2; exit 100"
    bodies["python3"] = f": > {marker}; exit 97"
    for name, body in bodies.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(tmp_path / ".ci" / "run")],
        env={"PATH": str(bin_dir), "CI": "true", "HOME": str(tmp_path)},
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done, marker.exists()


def test_ci_preflight_lets_the_run_go_on_when_every_part_is_there(tmp_path: Path) -> None:
    done, got_past = run_ci_preflight(tmp_path)
    assert got_past, done.stderr  # the control: the stand-ins pass the preflight
    assert done.returncode != 0  # python3 (and so what follows it) is a stand-in


@pytest.mark.parametrize("missing", ["chromium", "systemd-analyze", "ip"])
def test_ci_fails_when_a_part_is_missing_and_cannot_be_installed(
    tmp_path: Path, missing: str
) -> None:
    done, got_past = run_ci_preflight(tmp_path, missing=missing)
    assert done.returncode == 1, done.stderr
    assert not got_past
    assert "apt-get could not install" in done.stderr
    assert "Unable to locate package" in done.stdout  # the apt log's tail is shown


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"ip": NO_NETNS}, "'ip netns add' failed"),
        ({"chromium": "exit 127"}, "'chromium --version' failed"),
        ({"systemd-analyze": "exit 1"}, "'systemd-analyze --version' failed"),
    ],
)
def test_ci_fails_when_a_part_is_there_but_does_not_work(
    tmp_path: Path, broken: dict[str, str], reason: str
) -> None:
    done, got_past = run_ci_preflight(tmp_path, broken=broken)
    assert done.returncode == 1, done.stderr
    assert not got_past
    assert reason in done.stderr


def test_ci_stops_with_a_reason_when_the_install_fails(tmp_path: Path) -> None:
    """`set -e` does not stop at a failure inside an `&&` list: the run once went on to
    the linters after a failed `pip install` and failed on a missing `.venv/bin/ruff`."""
    ruff = tmp_path / ".venv" / "bin" / "ruff"
    ruff.parent.mkdir(parents=True)
    ran_on = tmp_path / "ran-on"
    ruff.write_text(f"#!/bin/sh\n: > {ran_on}\n")
    ruff.chmod(0o755)
    done, got_past = run_ci_preflight(tmp_path)  # its python3 fails, as pip would
    assert got_past
    assert done.returncode == 1, done.stderr
    assert "installing meshmedia with its test extras failed" in done.stderr
    assert not ran_on.exists()
