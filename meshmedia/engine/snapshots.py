"""Frozen values the engine hands out: torrent states, status snapshots, events.

Nothing here holds a libtorrent object or imports libtorrent; the server and the CLI
see only these (convert.py copies libtorrent's objects into them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class TorrentState(str, Enum):
    """The state of one torrent; the values are the JSON strings."""

    CHECKING = "checking"
    METADATA = "metadata"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    PAUSED = "paused"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TorrentStatus:
    """One torrent at one moment (slots: the table holds one per torrent, 5,000 and more)."""

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
    # the rate limits libtorrent holds now (read back when set) and the schedule's window
    limits: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "listen_port": self.listen_port,
            "download_rate": self.download_rate,
            "upload_rate": self.upload_rate,
            "torrents": [t.to_json() for t in self.torrents],
            "taken_at": self.taken_at,
            "limits": dict(self.limits),
        }


@dataclass(frozen=True)
class EngineTally:
    """The session's torrents counted, not listed: what /metrics reads at every scrape
    (a snapshot sorts every status: 11% of a curator's samples while a benchmark
    asked every 50 ms during a burst of 5,000 publishes)."""

    states: dict[str, int]  # torrents by TorrentState value (only states held)
    num_peers: int
    download_rate: int
    upload_rate: int


class EventKind(str, Enum):
    """What happened to a torrent (the values are the names used in logs)."""

    FINISHED = "finished"  # every piece downloaded and on disk
    ERROR = "error"
    FILE_ERROR = "file_error"  # reading or writing a file failed (a full disk among others)
    HASH_FAILED = "hash_failed"  # a piece failed its check and is downloaded again
    METADATA = "metadata"  # a magnet's torrent is known
    REMOVED = "removed"


@dataclass(frozen=True)
class EngineEvent:
    """Something subscribers hear about."""

    kind: EventKind
    info_hash: str
    message: str = ""
