"""meshmedia on arm64: benchmarks/arm64.py installs it from wheels (PyPI's aarch64
libtorrent) in an arm64 Debian root under qemu-user, and a curator and a client there
sync a file, verified by its SHA-256.

Long (marked `arm64`): about 45 s with the root cached, plus about 6 min once per
machine for mmdebstrap to make the root. It skips where it cannot run (not root, a
tool missing), except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import arm64

pytestmark = [pytest.mark.arm64, pytest.mark.timeout(1200)]


def test_a_curator_and_a_client_sync_a_file_on_arm64(pytestconfig: pytest.Config) -> None:
    reason = arm64.missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the arm64 test: {reason}")
        pytest.skip(reason)
    times, libtorrent = arm64.run()
    version, machine = libtorrent.split()
    assert machine == "aarch64"
    assert version.startswith("2.1.")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\narm64, libtorrent {version}: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        )
