"""Why an item is not in place: one phrase a person reads in `sync --once`'s summary."""

from __future__ import annotations

from meshmedia.config import format_size as human
from meshmedia.engine import Engine, TorrentState
from meshmedia.store import ClientItem, ItemState


def why_not_finished(ci: ClientItem, engine: Engine) -> str:
    """`path: state: why` for an item that is not placed (no peer, no space, a hash...)."""
    if ci.state == ItemState.DOWNLOADING:
        return f"{ci.path}: downloading: {_download(ci, engine)}"
    if ci.state == ItemState.QUEUED:
        return f"{ci.path}: queued: {ci.error or 'not started (waiting for a download slot)'}"
    return f"{ci.path}: {ci.state.value}: {ci.error or 'not finished'}"


def _download(ci: ClientItem, engine: Engine) -> str:
    status = engine.status(ci.info_hash) if ci.info_hash else None
    if status is None:
        return "not in the engine"
    if status.state == TorrentState.METADATA:
        done = "no metadata yet"
    else:
        total = status.total_wanted or int(ci.item.get("size") or 0)
        done = f"{human(status.total_done)} of {human(total)}"
    if status.state == TorrentState.ERROR:
        return f"{done}, error: {status.error}"
    if status.num_peers == 0:
        return f"{done}, no peer"
    return f"{done}, {status.num_peers} peers at {human(status.download_rate)}/s"
