"""--limit-schedule: windows parsed and chosen by an injected clock; as real curator and
client processes, a window boundary changes the limits libtorrent holds (issue 17)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from meshmedia.engine.schedule import CLOCK_FILE, PAUSED, limits_at, parse_schedule
from meshmedia.errors import ConfigError
from tests.daemons import Client, Curator, Daemon, get_json
from tests.helpers import run_meshmedia, wait_for

SCHEDULE = (
    "mon-fri 08:00-23:00 up=1M down=5M; sat,sun 00:00-00:00 up=paused down=paused;"
    " * 23:00-08:00 down=300K"
)
MONDAY = "2026-12-07"


def test_windows_by_day_and_time() -> None:
    windows = parse_schedule(SCHEDULE)
    at = lambda text: limits_at(windows, datetime.fromisoformat(text), 7, 9)  # noqa: E731
    assert at(f"{MONDAY}T12:00").up == 1 << 20
    assert at(f"{MONDAY}T07:59").window == "* 23:00-08:00 down=300K"
    assert (at(f"{MONDAY}T07:59").up, at(f"{MONDAY}T07:59").down) == (7, 300 * 1024)
    assert at("2026-12-12T03:00").up == PAUSED  # Saturday: the first window that holds
    assert at("2026-12-11T23:30").down == 300 * 1024  # Friday night
    night = parse_schedule("fri 22:00-02:00 up=0")
    assert limits_at(night, datetime.fromisoformat("2026-12-12T01:00"), 5, 5).up == 0  # Sat 01:00
    assert limits_at(night, datetime.fromisoformat("2026-12-13T01:00"), 5, 5).window is None
    assert parse_schedule("sun-tue 10:00-11:00 up=1K")[0].days == frozenset({6, 0, 1})


@pytest.mark.parametrize(
    "bad", ["mon-fri 8-23 up=1M", "mon 08:00-23:00", "mo 08:00-09:00 up=1", "* 08:00-09:00 up=fast"]
)
def test_bad_schedules_name_the_window(bad: str) -> None:
    with pytest.raises(ConfigError, match="limit_schedule"):
        parse_schedule(bad)
    result = run_meshmedia(
        "sync", "--manifest-url", "http://127.0.0.1:9/m.json", "--limit-schedule", bad
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_a_window_boundary_changes_libtorrents_limits_on_both_daemons(
    tmp_path: Path, stop_later: list[Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = tmp_path / "clock"
    clock.write_text(f"{MONDAY}T07:59:30")
    monkeypatch.setenv(CLOCK_FILE, str(clock))
    monkeypatch.setenv("MESHMEDIA_LIMIT_SCHEDULE", SCHEDULE)
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    curator.start()
    client = Client(tmp_path / "client", [curator.manifest_url])
    stop_later.append(client)
    client.start()

    def held() -> list[dict[str, object]]:
        ours = (client.status() or {}).get("engine", {}).get("limits", {})
        theirs = get_json(f"http://127.0.0.1:{curator.port}/status").get("limits", {})
        return [ours, theirs]

    def holding(window: str, up: int, down: int, paused: bool = False) -> bool:
        expected = {"upload_rate_limit": up, "download_rate_limit": down, "session_paused": paused}
        return all(h.get("window") == window and h.get("libtorrent") == expected for h in held())

    wait_for(lambda: holding("* 23:00-08:00 down=300K", 0, 300 * 1024), timeout=60)
    clock.write_text(f"{MONDAY}T08:00:00")
    wait_for(lambda: holding("mon-fri 08:00-23:00 up=1M down=5M", 1 << 20, 5 << 20), timeout=10)
    shown = run_meshmedia("status", "--url", f"http://127.0.0.1:{client.status_port}")
    assert "limits now: up 1.0 MiB/s, down 5.0 MiB/s (window mon-fri 08:00-23:00" in shown.stdout
    clock.write_text("2026-12-12T12:00:00")  # Saturday: both directions paused
    wait_for(lambda: holding("sat,sun 00:00-00:00 up=paused down=paused", 1, 1, True), timeout=10)
    clock.write_text(f"{MONDAY}T23:00:00")
    wait_for(lambda: holding("* 23:00-08:00 down=300K", 0, 300 * 1024), timeout=10)
