"""Render a daemon's /status answer for `meshmedia status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshmedia.config import format_size


def human_rate(rate: float) -> str:
    """A rate in bytes/s as a short human string (`1.2 MiB/s`)."""
    return f"{format_size(rate)}/s"


def render_status(status: Mapping[str, Any]) -> list[str]:
    """One header line, then one line per torrent: state, progress, rates, peers."""
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
