"""SIGTERM and SIGINT for the daemons: set an Event the main thread waits on."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def install_signal_handlers(
    on_signal: Callable[[], None] | threading.Event,
) -> Callable[[], None]:
    """Make SIGTERM and SIGINT call `on_signal()` (or set the Event); returns an undo function.

    Keep `on_signal` short; a daemon typically sets an Event its main thread waits
    on and then calls `engine.close()` there. Must be called from the main thread.
    """
    callback = on_signal.set if isinstance(on_signal, threading.Event) else on_signal

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        callback()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
