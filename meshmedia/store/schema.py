"""The state database's schema and the records it holds (re-exported by the package)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

# Append only: migration N takes the schema from version N to N + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE resume (
        info_hash TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        role TEXT NOT NULL,
        files TEXT NOT NULL DEFAULT '[]',
        updated_at REAL NOT NULL
    );
    CREATE TABLE hash_cache (
        dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL, piece_size INTEGER NOT NULL,
        sha256 TEXT NOT NULL, xxh3 TEXT NOT NULL, pieces BLOB NOT NULL,
        used_at REAL NOT NULL,
        PRIMARY KEY (dev, ino, size, mtime_ns, piece_size)
    );
    CREATE INDEX hash_cache_xxh3 ON hash_cache (xxh3, size, piece_size);
    CREATE TABLE catalog (
        grp TEXT NOT NULL, path TEXT NOT NULL, info_hash TEXT NOT NULL,
        source TEXT NOT NULL, item TEXT NOT NULL,
        PRIMARY KEY (grp, path)
    );
    CREATE TABLE client_items (
        url TEXT NOT NULL, path TEXT NOT NULL, info_hash TEXT,
        state TEXT NOT NULL, item TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0,
        error TEXT, updated_at REAL NOT NULL,
        PRIMARY KEY (url, path)
    );
    """,
    # 2: what the client placed, file by file, so --delete-removed deletes only
    # those (and only while they are unchanged), and a folder is known to be its own.
    """
    CREATE TABLE placed_files (
        url TEXT NOT NULL, item_path TEXT NOT NULL, rel TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        dev INTEGER NOT NULL, ino INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        placed_at REAL NOT NULL,
        PRIMARY KEY (url, item_path, rel)
    );
    CREATE INDEX client_items_state ON client_items (state, next_attempt);
    CREATE INDEX client_items_hash ON client_items (info_hash);
    """,
    # 3: the curator's lookups by torrent (is it still published?) and by source
    # file or folder (unpublish, move) through an index, not a scan in Python.
    """
    CREATE INDEX catalog_hash ON catalog (info_hash);
    CREATE INDEX catalog_source ON catalog (source);
    """,
    # 4: the curator's `.torrent` of each published item, written with its batch in one
    # transaction: a file each (temp, fchmod, write, rename) cost 0.3 ms of CPU and 0.7 ms
    # of the publisher's thread per item, a row 3 us (benchmarks.md, "Session 7").
    """
    CREATE TABLE torrents (info_hash TEXT PRIMARY KEY, data BLOB NOT NULL);
    """,
)


@dataclass(frozen=True)
class ResumeRecord:
    """Resume data of one torrent, with the size and mtime_ns we saw for each file."""

    info_hash: str
    data: bytes
    role: str
    files: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class HashRecord:
    """Cached hashes of one file version, keyed by (dev, ino, size, mtime_ns, piece_size).

    `pieces` is the concatenation of the 20-byte SHA-1 piece hashes.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    piece_size: int
    sha256: str
    xxh3: str
    pieces: bytes


@dataclass(frozen=True)
class CatalogEntry:
    """One published item of the curator: (group, path) -> info hash, source file, item JSON."""

    group: str
    path: str
    info_hash: str
    source: str
    item: dict[str, Any]


class ItemState(str, Enum):
    """The state of one client item (stored as its value; see meshmedia/client/sync.py)."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PLACED = "placed"
    FAILED = "failed"
    PAUSED = "paused"
    REFUSED = "refused"  # the torrent cannot be this item (unsafe names...): not retried
    SKIPPED = "skipped"  # not selected (client/selection.py): listed, not downloaded


@dataclass(frozen=True)
class ClientItem:
    """One manifest item as the client tracks it (table client_items).

    `item` is the manifest item as JSON; `next_attempt` is a time.time() value.
    """

    url: str
    path: str
    info_hash: str | None
    state: ItemState
    item: dict[str, Any]
    attempts: int = 0
    next_attempt: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class PlacedFile:
    """One file the client placed (table placed_files): `rel` is relative to the
    download dir; (dev, ino, size, mtime_ns) tell whether it is still the file placed."""

    url: str
    item_path: str
    rel: str
    size: int
    sha256: str
    dev: int
    ino: int
    mtime_ns: int
