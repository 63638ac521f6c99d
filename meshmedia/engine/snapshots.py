"""Frozen values the engine hands out: torrent states, status snapshots, events.

Nothing here holds a libtorrent object; the server and the CLI see only these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import libtorrent as lt


class TorrentState(str, Enum):
    """The state of one torrent; the values are the JSON strings."""

    CHECKING = "checking"
    METADATA = "metadata"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    PAUSED = "paused"
    ERROR = "error"


@dataclass(frozen=True)
class TorrentStatus:
    """One torrent at one moment."""

    info_hash: str
    name: str
    state: TorrentState
    progress: float
    download_rate: int
    upload_rate: int
    num_peers: int
    num_seeds: int
    total_done: int
    total_wanted: int
    total_download: int
    total_upload: int
    save_path: str
    error: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the state as its string value)."""
        data = asdict(self)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class EngineSnapshot:
    """The whole session at one moment."""

    listen_port: int
    download_rate: int
    upload_rate: int
    torrents: tuple[TorrentStatus, ...]
    taken_at: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "listen_port": self.listen_port,
            "download_rate": self.download_rate,
            "upload_rate": self.upload_rate,
            "torrents": [t.to_json() for t in self.torrents],
            "taken_at": self.taken_at,
        }


@dataclass(frozen=True)
class EngineEvent:
    """Something subscribers hear about: finished, error, file_error, hash_failed,
    metadata or removed."""

    kind: str
    info_hash: str
    message: str = ""


_STATES = {
    lt.torrent_status.states.checking_files: TorrentState.CHECKING,
    lt.torrent_status.states.checking_resume_data: TorrentState.CHECKING,
    lt.torrent_status.states.queued_for_checking: TorrentState.CHECKING,
    lt.torrent_status.states.allocating: TorrentState.CHECKING,
    lt.torrent_status.states.downloading_metadata: TorrentState.METADATA,
    lt.torrent_status.states.downloading: TorrentState.DOWNLOADING,
    lt.torrent_status.states.finished: TorrentState.SEEDING,
    lt.torrent_status.states.seeding: TorrentState.SEEDING,
}


def hex_of(hashes: Any) -> str:
    """The v1 info hash (40 hex chars) of an `info_hash_t`."""
    return str(hashes.v1)


def status_from_lt(st: Any) -> TorrentStatus:
    """Copy a libtorrent `torrent_status` into a frozen TorrentStatus."""
    error = st.errc.message() if st.errc.value() != 0 else None
    if error:
        state = TorrentState.ERROR
    elif st.flags & lt.torrent_flags.paused:
        state = TorrentState.PAUSED
    else:
        state = _STATES.get(st.state, TorrentState.DOWNLOADING)
    return TorrentStatus(
        info_hash=hex_of(st.info_hashes),
        name=st.name,
        state=state,
        progress=float(st.progress),
        download_rate=int(st.download_payload_rate),
        upload_rate=int(st.upload_payload_rate),
        num_peers=int(st.num_peers),
        num_seeds=int(st.num_seeds),
        total_done=int(st.total_wanted_done),
        total_wanted=int(st.total_wanted),
        total_download=int(st.total_payload_download),
        total_upload=int(st.total_payload_upload),
        save_path=st.save_path,
        error=error,
    )
