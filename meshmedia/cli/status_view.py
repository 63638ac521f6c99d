"""Render a daemon's /status answer for `meshmedia status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshmedia.config import format_size


def human_rate(rate: float) -> str:
    """A rate in bytes/s as a short human string (`1.2 MiB/s`)."""
    return f"{format_size(rate)}/s"


def render_status(status: Mapping[str, Any]) -> list[str]:
    """One header line, then one line per torrent: state, progress, rates, peers; for a
    client, then the items its selection skips.

    A client's /status nests the engine snapshot under "engine" (next to its items);
    the curator's /status is the snapshot itself.
    """
    if isinstance(status.get("engine"), Mapping):  # a client: engine, items, selection
        return [*render_status({"role": "client", **status["engine"]}), *_client_lines(status)]
    if "role" not in status and "torrents" in status:
        status = {"role": "curator", **status}
    torrents = list(status.get("torrents", []))
    lines = [
        f"{status.get('role', 'daemon')}: {len(torrents)} torrents,"
        f" down {human_rate(status.get('download_rate', 0))},"
        f" up {human_rate(status.get('upload_rate', 0))},"
        f" BitTorrent port {status.get('listen_port', '?')}"
    ]
    if isinstance(limits := status.get("limits"), Mapping) and limits:
        lines.append(_limits_line(limits))
    for torrent in sorted(torrents, key=lambda t: str(t.get("name", ""))):
        lines.append(
            f"{torrent.get('state', '?')!s:<11} {100 * float(torrent.get('progress', 0)):5.1f}%"
            f"  down {human_rate(torrent.get('download_rate', 0)):>10}"
            f"  up {human_rate(torrent.get('upload_rate', 0)):>10}"
            f"  peers {torrent.get('num_peers', 0):>3}  {torrent.get('name', '')}"
            + (f"  error: {torrent['error']}" if torrent.get("error") else "")
        )
    return lines


def _client_lines(status: Mapping[str, Any]) -> list[str]:
    """The client's schedule window and the items not synced because of the selection."""
    lines = []
    skipped = [i for i in status.get("items", []) if i.get("state") == "skipped"]
    if skipped:
        lines.append(f"skipped by selection: {len(skipped)}")
        lines.extend(f"skipped     {i.get('path')}  ({i.get('error')})" for i in skipped)
    return lines


def _limits_line(limits: Mapping[str, Any]) -> str:
    """`limits now: up 1.0 MB/s, down unlimited (window mon-fri 08:00-23:00 ...)`."""

    def shown(rate: Any) -> str:
        return str(rate) if isinstance(rate, str) else "unlimited" if not rate else human_rate(rate)

    window = limits.get("window")
    where = f"window {window}" if window else "no schedule window"
    up, down = shown(limits.get("upload")), shown(limits.get("download"))
    return f"limits now: up {up}, down {down} ({where})"
