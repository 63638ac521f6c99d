"""The state database (SQLite): resume data, the hash cache, the curator's catalog,
the client's items and placed files, with an append-only list of migrations."""

from __future__ import annotations

from .database import Store
from .schema import (
    MIGRATIONS,
    CatalogEntry,
    ClientItem,
    HashRecord,
    ItemState,
    PlacedFile,
    ResumeRecord,
)

__all__ = [
    "MIGRATIONS",
    "CatalogEntry",
    "ClientItem",
    "HashRecord",
    "ItemState",
    "PlacedFile",
    "ResumeRecord",
    "Store",
]
