"""What the daemons do to their process at start-up (meshmedia.process), observed from outside:
the malloc top pad through glibc's own counters, the signal handlers through signal.getsignal."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import ctypes, signal, sys, tempfile
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
