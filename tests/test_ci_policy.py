"""CI's rule: a test that would skip locally fails when CI=true (every part must be present)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
