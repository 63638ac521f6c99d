"""Download progress: a bar per item with rate and ETA on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from meshmedia.config import format_size
from meshmedia.manifest import printable

log = logging.getLogger(__name__)

BAR_WIDTH = 24
TITLE_WIDTH = 32


@dataclass(frozen=True)
class Row:
    """One download at one moment."""

    title: str
    done: int
    total: int
    rate: int  # bytes/s

    @property
    def fraction(self) -> float:
        """0..1 (0 while the size is unknown)."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def eta(self) -> str:
        """`m:ss` left at the current rate, `--:--` when unknown."""
        if self.rate <= 0 or self.total <= 0:
            return "--:--"
        seconds = int((self.total - self.done) / self.rate)
        hours, rest = divmod(seconds, 3600)
        return (
            f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
            if hours
            else f"{rest // 60}:{rest % 60:02d}"
        )


def render(row: Row) -> str:
    """`title  [#####.....]  45.0%  3.2 MiB/s  ETA 0:12`."""
    title = printable(row.title)  # a manifest's title: no ESC reaches the terminal
    title = title if len(title) <= TITLE_WIDTH else title[: TITLE_WIDTH - 1] + "~"
    filled = int(row.fraction * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (
        f"{title:<{TITLE_WIDTH}} [{bar}] {row.fraction * 100:5.1f}% "
        f"{format_size(row.rate):>10}/s  ETA {row.eta()}"
    )


class ProgressView:
    """Shows the current downloads: redrawn bars on a terminal, a log line now and then else."""

    def __init__(self, stream: TextIO, tty: bool, every: float | None = None) -> None:
        self.stream = stream
        self.tty = tty
        self.every = every if every is not None else (0.5 if tty else 10.0)
        self._drawn = 0
        self._last = 0.0

    def update(self, rows: Sequence[Row]) -> None:
        """Show `rows` (at most every `every` seconds)."""
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        if not self.tty:
            for row in rows:
                log.info("%s", render(row))
            return
        self.clear()
        for row in rows:
            self.stream.write(render(row) + "\n")
        self._drawn = len(rows)
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bars drawn last (terminal only), e.g. before the summary."""
        if self.tty and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.flush()
        self._drawn = 0
