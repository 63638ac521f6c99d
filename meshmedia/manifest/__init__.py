"""Manifests: the format (parse, validate, paths, canonical JSON), the curator's durable
store of them, and their signatures.

Depends only on the shared modules; the curator, the client and the HTTP routes use it.
"""

from __future__ import annotations

from .format import (
    FileEntry,
    Item,
    Manifest,
    Nesting,
    Overlap,
    PathSet,
    Rejected,
    canonical_json,
    check_files,
    check_relative_path,
    load_document,
    magnet_info_hash,
    parse_items,
    parse_manifest,
    printable,
    utc_now,
    validate_item,
)
from .pointers import Pointer, parse_follow, source_name
from .signing import (
    RollbackError,
    SignatureError,
    SigningKey,
    TrustPolicy,
    generate_key,
    load_key,
    parse_public_key,
    save_key,
    verify,
)
from .store import ManifestStore, check_curated_path, check_group

__all__ = [
    "FileEntry",
    "Item",
    "Manifest",
    "ManifestStore",
    "Nesting",
    "Overlap",
    "PathSet",
    "Pointer",
    "Rejected",
    "RollbackError",
    "SignatureError",
    "SigningKey",
    "TrustPolicy",
    "canonical_json",
    "check_curated_path",
    "check_files",
    "check_group",
    "check_relative_path",
    "generate_key",
    "load_document",
    "load_key",
    "magnet_info_hash",
    "parse_follow",
    "parse_items",
    "parse_manifest",
    "parse_public_key",
    "printable",
    "save_key",
    "source_name",
    "utc_now",
    "validate_item",
    "verify",
]
