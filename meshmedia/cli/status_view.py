"""Render a daemon's /status answer for `meshmedia status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def human_rate(rate: float) -> str:
    """A rate in bytes/s as a short human string (`1.2 MB/s`)."""
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if rate < 1000 or unit == "GB/s":
            return f"{rate:.0f} {unit}" if unit == "B/s" else f"{rate:.1f} {unit}"
        rate /= 1000
    return f"{rate:.1f} GB/s"


def render_status(status: Mapping[str, Any]) -> list[str]:
    """One header line, then one line per torrent: state, progress, rates, peers.

    A client's /status nests the engine snapshot under "engine" (next to its items);
    the curator's /status is the snapshot itself.
    """
    if isinstance(status.get("engine"), Mapping):
        status = {"role": "client", **status["engine"]}
    elif "role" not in status and "torrents" in status:
        status = {"role": "curator", **status}
    torrents = list(status.get("torrents", []))
    lines = [
        f"{status.get('role', 'daemon')}: {len(torrents)} torrents,"
        f" down {human_rate(status.get('download_rate', 0))},"
        f" up {human_rate(status.get('upload_rate', 0))},"
        f" BitTorrent port {status.get('listen_port', '?')}"
    ]
    for torrent in sorted(torrents, key=lambda t: str(t.get("name", ""))):
        lines.append(
            f"{torrent.get('state', '?')!s:<11} {100 * float(torrent.get('progress', 0)):5.1f}%"
            f"  down {human_rate(torrent.get('download_rate', 0)):>10}"
            f"  up {human_rate(torrent.get('upload_rate', 0)):>10}"
            f"  peers {torrent.get('num_peers', 0):>3}  {torrent.get('name', '')}"
            + (f"  error: {torrent['error']}" if torrent.get("error") else "")
        )
    return lines
