"""The malloc top pad set for libtorrent's sake, observed through glibc's own counters."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from meshmedia.malloc_tuning import tune_malloc

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                 "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
print(tune_malloc())
before = libc.mallinfo2().arena
blocks = [libc.malloc(64 * 1024) for _ in range(64)]  # 4 MiB more from the main heap
print((libc.mallinfo2().arena - before) >> 20)
"""


def probe(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_heap_grows_by_the_pad_not_by_the_request() -> None:
    tuned, grown = probe()
    assert tuned == "True"
    assert int(grown) >= 32  # one sbrk of request + 32 MiB pad, not 64 KiB steps
    untouched, grown = probe(MALLOC_TOP_PAD_="0")  # the user's own choice wins
    assert untouched == "False"
    assert int(grown) < 8
