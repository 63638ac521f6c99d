"""The systemd units pass `systemd-analyze verify`, and .env.example documents every setting."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshmedia.config import ENVIRONMENT, Config, load_config, read_env_file

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"client": "sync", "curator": "serve"}
INSTALLED = "/usr/local/bin/meshmedia"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is absent (apt-get install systemd; .ci/run does)"
)
SETTING_LINE = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")


def unit_path(role: str) -> Path:
    return ROOT / "systemd" / f"meshmedia-{role}.service"


def directives(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists; keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def verify(path: Path) -> tuple[int, list[str]]:
    """Run systemd-analyze verify; its output lines that concern this unit."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=path.parent,
    )
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if path.name in line or str(path) in line]


def copy_for_verify(role: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's meshmedia, which exists here.

    The installed path (/usr/local/bin/meshmedia) does not exist in the test
    environment and verify would rightly complain; everything else is unchanged,
    so any other complaint is a real defect of the unit.
    """
    text = unit_path(role).read_text(encoding="utf-8")
    exec_start = f"ExecStart={INSTALLED} {UNITS[role]}"
    assert text.count(exec_start) == 1, f"expected exactly one {exec_start!r}"
    copy = tmp_path / unit_path(role).name
    here = f"ExecStart={sys.executable} -m meshmedia {UNITS[role]}"
    copy.write_text(text.replace(exec_start, here), encoding="utf-8")
    return copy


@needs_analyze
@pytest.mark.parametrize("role", UNITS)
def test_unit_passes_systemd_analyze_verify(role: str, tmp_path: Path) -> None:
    code, complaints = verify(copy_for_verify(role, tmp_path))
    assert complaints == []
    assert code == 0


@needs_analyze
def test_verify_does_complain_about_a_broken_unit(tmp_path: Path) -> None:
    copy = copy_for_verify("client", tmp_path)
    copy.write_text(
        copy.read_text(encoding="utf-8") + "[Service]\nRestart=sometimes\nProtectSytem=strict\n",
        encoding="utf-8",
    )
    _, complaints = verify(copy)
    assert any("sometimes" in line for line in complaints)
    assert any("ProtectSytem" in line for line in complaints)
    _, missing = verify(unit_path("client"))  # the real ExecStart path is absent here
    assert any(INSTALLED in line for line in missing) or Path(INSTALLED).exists()


@needs_analyze
@pytest.mark.parametrize("role", UNITS)
def test_unit_exposure_is_low(role: str, tmp_path: Path) -> None:
    assert ANALYZE is not None
    copy = copy_for_verify(role, tmp_path)
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", copy.name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    if found is None:
        pytest.skip(f"this systemd-analyze has no offline security report: {done.stderr[-200:]}")
    assert float(found.group(1)) <= 2.5, done.stdout


@pytest.mark.parametrize("role", UNITS)
def test_unit_runs_as_a_sandboxed_dedicated_user(role: str) -> None:
    unit = directives(unit_path(role).read_text(encoding="utf-8"))
    expected = {
        "User": "meshmedia",
        "EnvironmentFile": f"-/etc/meshmedia/{role}.env",
        "ExecStart": f"{INSTALLED} {UNITS[role]}",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
    }
    for key, value in expected.items():
        assert values(unit, "Service", key) == [value], key
    assert "meshmedia" in values(unit, "Service", "StateDirectory")[0].split()
    assert values(unit, "Service", "ReadWritePaths")
    assert values(unit, "Service", "TimeoutStopSec")
    families = values(unit, "Service", "RestrictAddressFamilies")[0].split()
    assert {"AF_INET", "AF_INET6", "AF_NETLINK"} <= set(families)  # libtorrent's sockets
    assert "network-online.target" in values(unit, "Unit", "After")[0].split()
    assert "network-online.target" in values(unit, "Unit", "Wants")[0].split()


@pytest.mark.parametrize("role", UNITS)
def test_unit_environment_names_are_meshmedia_settings(role: str) -> None:
    unit = directives(unit_path(role).read_text(encoding="utf-8"))
    known = {name for names, _ in ENVIRONMENT.values() for name in names}
    known |= {"MESHMEDIA_SHARE", "PYTHONUNBUFFERED"}
    for assignment in values(unit, "Service", "Environment"):
        assert assignment.partition("=")[0] in known, assignment


# .env.example: every setting, with its true default, so it cannot drift.


def example_settings() -> dict[str, str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return {m[1]: m[2] for line in text.splitlines() if (m := SETTING_LINE.match(line))}


def test_env_example_lists_every_environment_name() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    settings = example_settings()
    for names, _ in ENVIRONMENT.values():
        assert names[0] in settings, f"{names[0]} has no NAME= line in .env.example"
        for alias in names[1:]:
            assert alias in text, f"{alias} is not mentioned in .env.example"
    assert "MESHMEDIA_SHARE" in settings
    earlier = ["MANIFEST_URL", "GROUP", "DOWNLOAD_DIR", "JELLYFIN_URL", "JELLYFIN_API_KEY"]
    assert list(settings)[:5] == earlier


def test_env_example_shows_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    defaults = Config()
    settings = example_settings()
    for setting, (names, parse) in ENVIRONMENT.items():
        text = settings[names[0]]
        default: Any = getattr(defaults, setting)
        if text:
            assert parse(text) == default, f"{names[0]}={text} but the default is {default!r}"
        else:
            assert default in (None, ()), f"{names[0]} is empty but the default is {default!r}"
    assert Path(settings["MESHMEDIA_SHARE"]).expanduser() == Path.home() / "share"


def test_env_example_loads_as_is(tmp_path: Path) -> None:
    example = ROOT / ".env.example"
    assert set(read_env_file(example)) == {"MANIFEST_URL", "JELLYFIN_URL", "JELLYFIN_API_KEY"}
    config = load_config({"state_dir": tmp_path}, environ={}, env_file=example)
    assert config.manifest_urls == ()
    assert config.jellyfin_url is None
