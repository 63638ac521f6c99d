"""A sync client that SIGKILLs itself just after it moved a download into place.

    python tests/crash_worker.py BASE MANIFEST_URL MODE INFO_HASH

Runs a SyncClient with a real Engine (state and media under BASE/client, like
tests.daemons.Client) and wraps Engine.relocate: once libtorrent confirms the
move, the process kills itself, before the client records anything. MODE
`moved` kills at once (the resume data still points at the staging folder);
`resumed` first waits until the resume data saved after the move is in the
store (then it points at the final place). Only the move of INFO_HASH kills;
other items are placed as usual. Prints `RELOCATED <info hash>` first.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# The repository root replaces this script's folder (sys.path[0]): tests/http would
# otherwise shadow the standard library's http package.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt
import requests

from meshmedia.client import SyncClient
from meshmedia.engine import Engine
from meshmedia.store import Store
from tests.helpers import make_config


def _resume_points_at(store: Store, ih: str, save_path: Path) -> bool:
    for record in store.load_resume():
        if record.info_hash == ih:
            params = lt.read_resume_data(record.data)
            return os.path.normpath(params.save_path) == os.path.normpath(save_path)
    return False


def main() -> int:
    """Sync until the first relocation, then die; see the module docstring."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    base, url, mode, victim = sys.argv[1:5]
    config = make_config(Path(base), "client", manifest_urls=(url,), listen_port=0)
    store = Store.in_state_dir(config.state_dir)
    engine = Engine(config, store, resume_interval=0.2)
    relocate = Engine.relocate

    def relocate_then_die(self: Engine, ih: str, save_path: Path, *args: Any, **kw: Any) -> None:
        relocate(self, ih, save_path, *args, **kw)
        if ih != victim:
            return
        print(f"RELOCATED {ih}", flush=True)
        deadline = time.monotonic() + 20
        while mode == "resumed" and not _resume_points_at(store, ih, save_path):
            if time.monotonic() > deadline:
                print("resume data never followed the move", flush=True)
                return
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)

    Engine.relocate = relocate_then_die  # type: ignore[method-assign]
    client = SyncClient(config, store, engine)
    client.apply(url, requests.get(url, timeout=30).content)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client.step()
        client.wait(0.1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
