"""Fixtures of the client's hostile-input tests: a real libtorrent seeder and a hostile web site."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile import Seeder, Site, serve


@pytest.fixture
def seeder(tmp_path: Path) -> Iterator[Seeder]:
    """A libtorrent session on 127.0.0.1 seeding hand-built torrents."""
    seeding = Seeder(tmp_path)
    try:
        yield seeding
    finally:
        seeding.close()


@pytest.fixture
def site() -> Iterator[Site]:
    """An HTTP server on a free port answering what a test tells it to."""
    with serve() as running:
        yield running
