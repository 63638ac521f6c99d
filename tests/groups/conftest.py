"""Shared pieces of the private-group tests: an address of this machine that is not loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.groups.nodes import PrivateCurator


def outside_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8: a connection to it from here
    comes from that address, so the server sees a request that is not from loopback."""
    candidates = []
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet: picks the source address
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    for address in candidates:
        if not ipaddress.ip_address(address).is_loopback:
            return str(address)
    return None


@pytest.fixture
def outside() -> str:
    """This machine's non-loopback address (skipped without one, failed under CI=true)."""
    address = outside_address()
    if address is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no non-loopback IPv4 address on this machine")
        pytest.skip("no non-loopback IPv4 address on this machine")
    return address


@pytest.fixture
def curator(tmp_path: Path) -> Iterator[PrivateCurator]:
    """A running curator of the private group `family` (its signing key made by an invite)."""
    running = PrivateCurator(tmp_path / "curator")
    running.invite("--no-qr")  # the first invite makes the signing key: before serve
    running.start()
    yield running
    running.stop()
