"""What the daemons do to their process at start-up (meshmedia.process), observed from outside:
the malloc top pad through glibc's own counters, the signal handlers through signal.getsignal."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from meshmedia.process import IdleTrimmer

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import ctypes, resource, signal, sys, tempfile
from pathlib import Path

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                 "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p

def grown():
    # MiB the main heap grows by when it next has to grow (64 KiB blocks until it does)
    before = libc.mallinfo2().arena
    for _ in range(4096):
        libc.malloc(64 * 1024)
        if libc.mallinfo2().arena != before:
            return (libc.mallinfo2().arena - before) >> 20
    return -1
"""

TUNE = (
    MEASURE
    + """
from meshmedia.process import tune_malloc
print(tune_malloc())
print(grown())
"""
)

ENGINE_THEN_DAEMON = (
    MEASURE
    + """
from meshmedia.engine import Engine
from meshmedia.process import prepare_daemon
from meshmedia.store import Store
from tests.helpers import make_config

with tempfile.TemporaryDirectory() as tmp:
    config = make_config(Path(tmp))
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store):
        print(grown(), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
prepare_daemon()
print(grown())
"""
)


def probe(code: str, **env: str) -> list[str]:
    """Run `code` in a fresh interpreter (no MALLOC_ settings but `env`); its output words."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_heap_grows_by_the_pad_not_by_the_request() -> None:
    tuned, grown = probe(TUNE)
    assert tuned == "True"
    assert int(grown) >= 32  # one sbrk of request + 32 MiB pad, not 64 KiB + 128 KiB steps
    untouched, grown = probe(TUNE, MALLOC_TOP_PAD_="0")  # the user's own choice wins
    assert untouched == "False"
    assert int(grown) < 8


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_an_engine_leaves_the_process_alone_the_daemon_start_up_tunes_it() -> None:
    with_engine, default_sigterm, after_start_up = probe(ENGINE_THEN_DAEMON)
    assert int(with_engine) < 8  # the Engine constructor set no pad (it used to)
    assert default_sigterm == "True"
    assert int(after_start_up) >= 32


ARENAS = (
    MEASURE
    + """
import threading
from meshmedia.process import tune_malloc
tune_malloc()
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
here, done = threading.Barrier(7), threading.Event()

def worker():
    libc.malloc(1000)  # a thread's first malloc takes it an arena (a new one while allowed)
    here.wait()
    done.wait()

threads = [threading.Thread(target=worker) for _ in range(6)]
for t in threads:
    t.start()
here.wait()
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(Path(out.name).read_text().count("<heap nr="))
done.set()
"""
)

TRIM = (
    MEASURE
    + """
from meshmedia.process import trim_heap, tune_malloc
print(tune_malloc())
libc.free.argtypes = (ctypes.c_void_p,)

def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() >> 20

before = rss()
blocks = [libc.malloc(1024) for _ in range(24 * 1024)]  # a burst: 24 MiB of small blocks
for block in blocks:
    libc.free(block)
kept = rss() - before
print(kept, trim_heap(), rss() - before)
"""
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_six_threads_share_two_malloc_arenas_unless_the_user_says_otherwise() -> None:
    (capped,) = probe(ARENAS)
    assert int(capped) <= 2  # the main arena and one for every other thread
    (chosen,) = probe(ARENAS, MALLOC_ARENA_MAX="8")
    assert int(chosen) == 7  # the main thread's and one each


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_pad_keeps_a_bursts_freed_heap_until_trim_heap_gives_it_back() -> None:
    tuned, kept, trimmed, after = probe(TRIM)
    assert tuned == "True"
    assert int(kept) >= 20  # freed, still resident: the pad keeps it
    assert trimmed == "True"
    assert int(after) < 4


class Ticks:
    """A process's CPU seconds and the clock, moved by hand; the trims asked for."""

    def __init__(self) -> None:
        self.cpu = self.now = 0.0
        self.trimmed = 0
        self.rss = 100 << 20
        self.gives_back = 0  # bytes of RSS each trim gives back

    def trim(self) -> bool:
        self.trimmed += 1
        self.rss -= self.gives_back
        return True

    def window(self, used: float, trimmer: IdleTrimmer) -> bool:
        """30 s in which the process used `used` CPU seconds, then the trimmer's step."""
        self.cpu += used
        self.now += 30.0
        return trimmer.step()


def test_the_heap_is_trimmed_once_after_each_burst_never_during_one() -> None:
    ticks = Ticks()
    trimmer = IdleTrimmer(
        30.0,
        0.02,
        cpu=lambda: ticks.cpu,
        clock=lambda: ticks.now,
        trim=ticks.trim,
        rss=lambda: ticks.rss,
    )
    assert ticks.window(0.1, trimmer)  # start-up was the first burst: quiet now
    assert not ticks.window(0.1, trimmer)  # still quiet: nothing new to give back
    assert not ticks.window(20.0, trimmer)  # a transfer: its pages are reused, keep them
    assert not ticks.window(0.7, trimmer)  # 2.3% of a core: still busy
    assert ticks.window(0.5, trimmer)  # the burst is over
    assert not ticks.window(0.0, trimmer)
    assert ticks.trimmed == trimmer.trims == 2


def test_a_quiet_process_whose_heap_grew_is_trimmed_again() -> None:
    ticks = Ticks()
    trimmer = IdleTrimmer(
        5.0, 0.05, cpu=lambda: ticks.cpu, clock=lambda: ticks.now, trim=ticks.trim,
        rss=lambda: ticks.rss, grown=8 << 20,
    )  # fmt: skip
    ticks.gives_back = 10 << 20
    assert ticks.window(0.0, trimmer)  # after start-up, at 100 MiB: 90 after the trim
    ticks.gives_back = 0
    ticks.rss += 10 << 20  # the idle work touches those pages again: nothing new
    assert not ticks.window(0.1, trimmer)
    ticks.rss += 4 << 20  # slow work (under 5% of a core) that kept 4 MiB
    assert not ticks.window(0.1, trimmer)
    ticks.rss += 5 << 20  # 9 MiB over the RSS the last trim started from
    assert ticks.window(0.1, trimmer)
    assert not ticks.window(0.1, trimmer)
    assert ticks.trimmed == 2
