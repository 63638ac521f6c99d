"""This machine's floor for a loopback transfer, with no BitTorrent at all.

A sender process pushes the file with sendfile(); the receiver reads 1 MiB at a
time, writes it to a file and computes SHA-1 on a second thread: the least any
verifying downloader must do. transfer.py prints it beside meshmedia and aria2c,
so a reader sees how far each is from what the machine allows.

    .venv/bin/python benchmarks/rawpipe.py FILE
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CHUNK = 1 << 20


def send(port: int, src: Path) -> None:
    """Connect to 127.0.0.1:`port` and sendfile() all of `src`."""
    size = src.stat().st_size
    with socket.create_connection(("127.0.0.1", port)) as conn, src.open("rb") as f:
        offset = 0
        while offset < size:
            offset += os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)


def _hash_chunks(chunks: queue.Queue[bytes | None]) -> None:
    digest = hashlib.sha1()  # BitTorrent v1 piece hashes are SHA-1
    while (chunk := chunks.get()) is not None:
        digest.update(chunk)


def raw_pipe(src: Path, dst: Path) -> float:
    """Seconds to move `src` to `dst` over loopback TCP, written and SHA-1 hashed."""
    size = src.stat().st_size
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = subprocess.Popen([sys.executable, __file__, "--send", str(port), str(src)])
        conn, _ = server.accept()
    chunks: queue.Queue[bytes | None] = queue.Queue(64)
    hasher = threading.Thread(target=_hash_chunks, args=(chunks,))
    started = time.monotonic()
    hasher.start()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with conn, dst.open("wb", buffering=0) as out:
        got = 0
        while got < size:
            n = conn.recv_into(view[: min(CHUNK, size - got)], 0, socket.MSG_WAITALL)
            if not n:
                break
            out.write(view[:n])
            chunks.put(bytes(view[:n]))
            got += n
    chunks.put(None)
    hasher.join()
    elapsed = time.monotonic() - started
    sender.wait(30)
    if got != size:
        raise RuntimeError(f"raw pipe moved {got} of {size} bytes")
    return elapsed


def main() -> None:
    """`rawpipe.py FILE`: time one raw transfer; `--send PORT FILE` is the sender."""
    if sys.argv[1:2] == ["--send"]:
        send(int(sys.argv[2]), Path(sys.argv[3]))
        return
    src = Path(sys.argv[1])
    dst = src.with_name(src.name + ".rawpipe")
    try:
        seconds = raw_pipe(src, dst)
    finally:
        dst.unlink(missing_ok=True)
    print(f"raw pipe {seconds:.2f} s, {src.stat().st_size / seconds / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main()
