"""Pytest configuration shared by every test."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

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
