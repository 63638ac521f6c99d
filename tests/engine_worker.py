"""A downloading Engine in its own process, for the kill/restart tests.

    python tests/engine_worker.py STATE_DIR TORRENT SAVE_PATH PEER_PORT DOWNLOAD_LIMIT

Restores whatever the state dir holds, adds the torrent when it is not there,
prints `progress total_download` lines, then `DONE total_download` and exits 0.
SIGTERM closes the engine in order (resume data saved) and exits 0.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

# The repository root replaces this script's folder (sys.path[0]): tests/http would
# otherwise shadow the standard library's http package.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshmedia.engine import Engine, TorrentState
from meshmedia.process import install_signal_handlers
from meshmedia.store import Store
from tests.helpers import make_config


def main() -> int:
    """Run the worker; see the module docstring."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    state, torrent, save_path, port, limit = sys.argv[1:6]
    stop = threading.Event()
    install_signal_handlers(stop)
    base = Path(state)
    config = make_config(base, "worker", download_limit=int(limit), listen_port=0)
    with (
        Store.in_state_dir(config.state_dir) as store,
        Engine(config, store, resume_interval=0.5) as engine,
    ):
        data = Path(torrent).read_bytes()
        ih = engine.add_download(data, Path(save_path), peers=[("127.0.0.1", int(port))])
        while not stop.is_set():
            try:
                status = engine.wait_until(ih, TorrentState.SEEDING, 0.2)
            except TimeoutError:
                current = engine.status(ih)
                print(f"{current.progress:.4f} {current.total_download}", flush=True)
                continue
            print(f"DONE {status.total_download}", flush=True)
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
