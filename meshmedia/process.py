"""What a daemon (`meshmedia serve`, `meshmedia sync`) does to its own process at start-up.

The library's objects (Engine, Curator, SyncClient) leave the process alone; the
daemons' entry points call `prepare_daemon()` and hold `stop_on_signals(stop)`.

glibc malloc: at transfer speed libtorrent allocates and frees buffers fast
enough that glibc keeps giving memory back to the kernel and faulting it in
again (179,000 page faults for a 1 GiB loopback transfer). A 32 MiB top pad
keeps that memory mapped: 56,000 faults, and the 1 GiB transfer's median fell
from 1.72 to 1.38 s with the same peak RSS (native_notes/engine.md, "malloc top pad").

The pad's price is memory an idle daemon keeps: every arena keeps up to 32 MiB of
freed pages, and each thread that mallocs may get an arena of its own (up to 8 per
core). With 5,000 items at most 2 arenas and one malloc_trim(0) once a burst of work
is over took 10-20 MiB off each daemon's idle RSS (native_notes/memory.md).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

M_TOP_PAD = -2
M_ARENA_MAX = -8
TOP_PAD = 32 * 1024 * 1024
ARENA_MAX = 2
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
    """Set glibc's M_TOP_PAD and M_ARENA_MAX once per process; True when the pad was set.

    Nothing is done off glibc; MALLOC_TOP_PAD_ or MALLOC_ARENA_MAX in the environment
    leaves that one setting alone (the user's choice wins). Call it before the
    process starts threads: an arena, once made, stays.
    """
    if _state["done"]:
        return True
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if "MALLOC_ARENA_MAX" not in os.environ:
        capped = mallopt(M_ARENA_MAX, ARENA_MAX) == 1
        log.debug("malloc arenas at most %d: %s", ARENA_MAX, "set" if capped else "refused")
    if "MALLOC_TOP_PAD_" in os.environ:
        return False
    done = _state["done"] = mallopt(M_TOP_PAD, TOP_PAD) == 1
    log.debug("malloc top pad %d MiB: %s", TOP_PAD >> 20, "set" if done else "refused")
    return done


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt and malloc_trim are glibc's), else None.
    Looked up once: `platform.libc_ver()` reads the Python executable to find out."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 (present: a glibc)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> bool:
    """Give the pages malloc holds free back to the kernel (glibc's malloc_trim(0): every
    arena, the pad too); True when some were. 1-5 ms with 150 MiB of heap."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim.restype = ctypes.c_int
    return bool(libc.malloc_trim(0))


def _rss_bytes() -> int:
    """This process's resident set size in bytes (0 where /proc has no statm)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


class IdleTrimmer:
    """Trims the heap once after each burst of work: the first window in which the
    process used under `idle_share` of a core after one in which it used more, or
    a quiet window when RSS grew by `grown` bytes over the highest RSS a trim started
    from (slow work that never looked busy: a client's moves and resume saves after
    its downloads).

    A transfer or a publish keeps the process busy, so the top pad's pages stay
    mapped while they are reused; the daemon's idle RSS is what is left after.
    5% of a core: an idle daemon with 5,000 items whose /status is asked every 2 s
    (benchmarks/scale.py waiting for quiet) is still quiet; 10 s windows under 2%
    found no quiet window there before the idle RSS was read (159 / 140 MiB).
    `step()` is one window; `run(stop)` calls it every `window` seconds.
    """

    def __init__(
        self,
        window: float = 5.0,
        idle_share: float = 0.05,
        *,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[], bool] = trim_heap,
        rss: Callable[[], int] = _rss_bytes,
        grown: int = 8 << 20,
    ) -> None:
        """Look every `window` s; `cpu`, `clock`, `trim` and `rss` are replaceable (tests)."""
        self.window, self.idle_share, self.grown = window, idle_share, grown
        self._cpu, self._clock, self._trim, self._rss = cpu, clock, trim, rss
        self._last = (cpu(), clock())
        self._worked = True  # start-up itself is a burst (imports, restoring torrents)
        self._trimmed_at = 0  # the highest RSS a trim started from
        self.trims = 0

    def step(self) -> bool:
        """Judge the window since the last step; True when it trimmed."""
        cpu, now = self._cpu(), self._clock()
        used, wall = cpu - self._last[0], now - self._last[1]
        self._last = (cpu, now)
        if wall <= 0 or used > self.idle_share * wall:
            self._worked = True
            return False
        rss = self._rss()
        if not self._worked and rss - self._trimmed_at < self.grown:
            return False
        self._worked = False
        # RSS before the trim: the pages it gives back and the heap touches again bring
        # RSS back to this, not above, so they never trigger another trim
        self._trimmed_at = max(self._trimmed_at, rss)
        self._trim()
        self.trims += 1
        log.debug("heap trimmed after a burst (%d so far)", self.trims)
        return True

    def run(self, stop: threading.Event) -> None:
        """step() every `window` seconds until `stop` is set."""
        while not stop.wait(self.window):
            self.step()


@contextmanager
def trimming_when_idle(window: float = 5.0) -> Iterator[IdleTrimmer]:
    """An IdleTrimmer on its own thread while inside (a daemon's lifetime)."""
    trimmer, stop = IdleTrimmer(window), threading.Event()
    thread = threading.Thread(target=trimmer.run, args=(stop,), name="heap trim", daemon=True)
    thread.start()
    try:
        yield trimmer
    finally:
        stop.set()
        thread.join(timeout=5)


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
