"""What a daemon (`meshmedia serve`, `meshmedia sync`) does to its own process at start-up.

The library's objects (Engine, Curator, SyncClient) leave the process alone; the
daemons' entry points call `prepare_daemon()` and hold `stop_on_signals(stop)`.

glibc malloc: at transfer speed libtorrent allocates and frees buffers fast
enough that glibc keeps giving memory back to the kernel and faulting it in
again (179,000 page faults for a 1 GiB loopback transfer). A 32 MiB top pad
keeps that memory mapped: 56,000 faults, and the 1 GiB transfer's median fell
from 1.72 to 1.38 s with the same peak RSS (native_notes/engine.md, "malloc top pad").
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import resource
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

M_TOP_PAD = -2
TOP_PAD = 32 * 1024 * 1024
_state = {"done": False}


def prepare_daemon() -> None:
    """Raise the open-files limit, set the malloc top pad and keep group and others
    from writing what the daemon creates (a daemon's start-up)."""
    raise_open_files_limit()
    tune_malloc()
    mask_group_writes()


def mask_group_writes() -> int:
    """Add 022 to the umask (libtorrent's files and folders, ours: never group- or
    other-writable, while a 027 or 077 the user chose stays); return the new umask.
    Under umask 000 placed media were 0666 (review12 finding 12)."""
    old = os.umask(0o022)
    os.umask(old | 0o022)
    return old | 0o022


def tune_malloc() -> bool:
    """Set glibc's M_TOP_PAD once per process; True when it was set.

    Nothing is done off glibc, or when MALLOC_TOP_PAD_ is in the environment
    (the user's choice wins).
    """
    if _state["done"]:
        return True
    if "MALLOC_TOP_PAD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = _state["done"] = mallopt(M_TOP_PAD, TOP_PAD) == 1
    log.debug("malloc top pad %d MiB: %s", TOP_PAD >> 20, "set" if done else "refused")
    return done


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (as Go's runtime does).

    Daemons call it at start-up: a login shell's 1024 is far below what a
    server under load needs. Returns the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.debug("cannot raise the open-files limit to %d: %s", hard, exc)
        return soft
    log.debug("open-files limit raised from %d to %d", soft, hard)
    return hard


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


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set `stop` while inside (when called on the main thread; elsewhere,
    e.g. a daemon run from a test's thread, the signals are left alone)."""
    main = threading.current_thread() is threading.main_thread()
    restore = install_signal_handlers(stop) if main else None
    try:
        yield
    finally:
        if restore:
            restore()
