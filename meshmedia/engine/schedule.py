"""Upload and download limits by weekday and time of day (`--limit-schedule`).

    mon-fri 08:00-23:00 up=1M down=5M; * 23:00-08:00 up=0 down=0; sat,sun 10:00-18:00 down=paused

Windows are separated by `;`. Each names its days (`*`, `mon`, `mon-fri`,
`sat,sun`), a local time range (a range past midnight belongs to the day it
starts on; `00:00-00:00` is the whole day) and `up=` / `down=` (a size in
bytes/s, `0` = unlimited, `paused` = nothing moves that way; a direction not
named keeps `--upload-limit` / `--download-limit`). The first window that holds
wins; outside every window the plain limits hold. `LimitScheduler` applies the
window on the minute (a thread that wakes at each minute boundary), or on each
tick of an injected clock (tests move the clock instead of sleeping).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from meshmedia.config import parse_size
from meshmedia.errors import ConfigError

log = logging.getLogger(__name__)

PAUSED = -1  # a direction that moves nothing
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK_FILE = "MESHMEDIA_TEST_CLOCK_FILE"  # tests: the time is read from this file (ISO 8601)
TEST_TICK = 0.1  # seconds between looks at a test clock
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)$")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Window:
    """One window of the schedule: days, minutes of the day, and its limits."""

    text: str
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int
    up: int | None  # bytes/s, 0 unlimited, PAUSED; None: the plain limit
    down: int | None

    def holds(self, now: datetime) -> bool:
        """True when `now` (local time) falls inside this window."""
        minute, day = now.hour * 60 + now.minute, now.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        if self.start == self.end:
            return day in self.days
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


def _fail(text: str, why: str) -> ConfigError:
    return ConfigError("limit_schedule", f"{text!r}: {why}")


def _days(text: str, window: str) -> frozenset[int]:
    if text == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise _fail(window, f"{part!r} is not a day or range like mon-fri")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(days)


def _rate(text: str, window: str) -> int:
    if text.lower() == "paused":
        return PAUSED
    try:
        return parse_size(text, "limit_schedule")
    except ConfigError:
        raise _fail(window, f"{text!r} is not a rate: 0 (unlimited), 500K, 5M or paused") from None


def parse_window(text: str) -> Window:
    """`mon-fri 08:00-23:00 up=1M down=5M` -> Window (ConfigError naming the fault)."""
    words = text.split()
    if len(words) < 3:
        raise _fail(text, "expected DAYS HH:MM-HH:MM up=RATE and/or down=RATE")
    match = _TIME.match(words[1])
    if match is None:
        raise _fail(text, f"{words[1]!r} is not a time range like 08:00-23:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    rates: dict[str, int] = {}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        if not sep or key not in ("up", "down") or key in rates:
            raise _fail(text, f"{word!r} is not up=RATE or down=RATE (each once)")
        rates[key] = _rate(value, text)
    days = _days(words[0], text)
    return Window(
        " ".join(words), days, h1 * 60 + m1, h2 * 60 + m2, rates.get("up"), rates.get("down")
    )


def parse_schedule(text: str) -> tuple[Window, ...]:
    """Every `;`-separated window of a schedule (empty text: none)."""
    return tuple(parse_window(part) for part in text.split(";") if part.strip())


@dataclass(frozen=True)
class Limits:
    """What holds now: the window's text (None: no window, the plain limits) and rates."""

    window: str | None
    up: int
    down: int


def limits_at(windows: tuple[Window, ...], now: datetime, up: int, down: int) -> Limits:
    """The limits at `now`: the first window that holds, else the plain `up` and `down`."""
    for window in windows:
        if window.holds(now):
            return Limits(
                window.text,
                up if window.up is None else window.up,
                down if window.down is None else window.down,
            )
    return Limits(None, up, down)


class Limited(Protocol):
    """What the scheduler drives (the Engine)."""

    def set_limits(self, upload: int, download: int, window: str | None = None) -> None:
        """Apply rates in bytes/s (0 unlimited, PAUSED)."""


def system_clock() -> datetime:
    """Local time now."""
    return datetime.now()


def file_clock(path: Path) -> Clock:
    """A clock that reads an ISO 8601 time from `path` (tests), the system's when unreadable."""

    def now() -> datetime:
        try:
            return datetime.fromisoformat(path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return datetime.now()

    return now


def daemon_clock() -> tuple[Clock, float | None]:
    """The daemons' clock and tick: the system's on the minute, or a test's (CLOCK_FILE)."""
    path = os.environ.get(CLOCK_FILE)
    return (file_clock(Path(path)), TEST_TICK) if path else (system_clock, None)


class LimitScheduler:
    """Applies the schedule's window to the engine now and whenever it changes."""

    def __init__(
        self,
        engine: Limited,
        windows: tuple[Window, ...],
        up: int,
        down: int,
        *,
        clock: Clock = system_clock,
        tick: float | None = None,
    ) -> None:
        """`up`/`down`: the plain limits; `tick`: seconds between looks (None: on the minute)."""
        self._engine = engine
        self._windows = windows
        self._plain = (up, down)
        self._clock = clock
        self._tick = tick
        self._stop = threading.Event()
        self._applied: Limits | None = None
        self._thread = threading.Thread(target=self._run, name="limit-schedule", daemon=True)

    def start(self) -> LimitScheduler:
        """Apply the current window and follow the clock on a thread."""
        self.apply()
        self._thread.start()
        return self

    def apply(self) -> Limits:
        """Apply the window that holds now (when it differs from the one applied)."""
        now = limits_at(self._windows, self._clock(), *self._plain)
        if now != self._applied:
            self._engine.set_limits(now.up, now.down, now.window)
            log.info(
                "limits now: up %s, down %s (%s)", _shown(now.up), _shown(now.down),
                now.window or "no window: the plain limits",
            )  # fmt: skip
            self._applied = now
        return now

    def _run(self) -> None:
        while not self._stop.wait(self._wait()):
            try:
                self.apply()
            except Exception:  # the schedule must not die with one bad apply
                log.exception("applying the limit schedule failed")

    def _wait(self) -> float:
        if self._tick is not None:
            return self._tick
        now = datetime.now()
        return 60.0 - now.second - now.microsecond / 1e6 + 0.05  # just after the minute

    def close(self) -> None:
        """Stop following the clock."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def _shown(rate: int) -> str:
    return "paused" if rate == PAUSED else "unlimited" if rate == 0 else f"{rate} B/s"


def start_schedule(
    engine: Limited, schedule: str | None, up: int, down: int
) -> LimitScheduler | None:
    """A daemon's scheduler for `--limit-schedule` (None when there is no schedule)."""
    if not schedule:
        return None
    clock, tick = daemon_clock()
    return LimitScheduler(
        engine, parse_schedule(schedule), up, down, clock=clock, tick=tick
    ).start()
