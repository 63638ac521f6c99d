"""Pytest configuration shared by every test."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.daemons import Daemon


@pytest.fixture
def stop_later() -> Iterator[list[Daemon]]:
    """Daemons to stop after the test: SIGKILL when still running, else reap."""
    daemons: list[Daemon] = []
    yield daemons
    for daemon in daemons:
        daemon.stop(signal.SIGKILL if daemon.alive else signal.SIGTERM)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Tests that build network namespaces (the labs share the "mmlab" prefix and clean up its
# leftovers), or run podman, or qemu: one xdist worker runs them one after another
# (`--dist loadgroup` in pyproject.toml); everything else is spread over the workers.
SERIAL_GROUP = "namespaces"
SERIAL_MARKERS = ("system", "image", "arm64")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the namespace, image and arm64 tests in one xdist group (one worker, in turn)."""
    system_dir = Path(__file__).parent / "system"
    for item in items:
        in_system = system_dir in Path(str(item.path)).parents
        if in_system or any(item.get_closest_marker(name) for name in SERIAL_MARKERS):
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """In CI (CI=true) a skipped test fails: every part it needs must be there.

    Locally a test may skip with its reason (no Chromium, not root, podman absent); in CI that
    would leave the run green without the tests that matter.
    """
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every part a test needs must be present: {reason}"
