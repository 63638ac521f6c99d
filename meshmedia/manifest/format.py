"""The manifest format: parse, validate, path safety, canonical serialization.

A manifest is `{"group", "version", "updated_at", "items": [...]}`; the earlier
webtorrent-cli format (`{"group", "items": [{"title", "torrent", "path",
"sha256"?}]}`, no version) is accepted unchanged. Each item is checked on its
own: a bad item is reported as a `Rejected` value and the others are used. A
document that is not a manifest at all raises `ManifestError`. Unknown fields,
of the document and of each item, are kept and written back.

`ManifestStore` (the curator's manifests on disk) lives in `store.py`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from meshmedia.bounded import MAX_FILES, ReadError, bad_text, load_json
from meshmedia.errors import ManifestError

_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_BASE32 = re.compile(r"^[A-Za-z2-7]{32}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_XXH3 = re.compile(r"^[0-9a-fA-F]{32}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096  # PATH_MAX: the longest path a Linux system call takes
MAX_SEGMENTS = 128  # a media library nests 3 to 6 deep
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f]")
MAX_TORRENT_CHARS = 8192  # a magnet or .torrent URL; ours are under 200 (finding 3)
MAX_ITEMS = 100_000  # 150k items (15 MB) took a client to 475 MB RSS before this bound
KNOWN_ITEM_FIELDS = ("title", "torrent", "path", "sha256", "size", "xxh3", "added_at")
KNOWN_FIELDS = ("group", "version", "updated_at", "items")


def utc_now() -> str:
    """The current time as `2026-11-24T21:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Item:
    """One file of a manifest."""

    title: str
    torrent: str
    path: str
    sha256: str | None = None
    size: int | None = None
    xxh3: str | None = None
    added_at: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The item as a JSON object: unknown fields first, known fields over them."""
        out = {k: v for k, v in self.extra.items() if k not in KNOWN_ITEM_FIELDS}
        for name in KNOWN_ITEM_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @cached_property
    def canonical(self) -> bytes:
        """The item's canonical JSON, made once: a manifest of 5,000 items joins them
        instead of serialising every item again for every version."""
        return canonical_json(self.to_json())

    @cached_property
    def info_hash(self) -> str | None:
        """The v1 info hash (40 lowercase hex) of a magnet `torrent`, else None."""
        return magnet_info_hash(self.torrent)

    @cached_property
    def files(self) -> tuple[FileEntry, ...] | None:
        """A folder item's per-file list (`files` in its JSON), None when it has none."""
        raw = self.extra.get("files")
        return None if raw is None else check_files(raw, self.size)


@dataclass(frozen=True)
class FileEntry:
    """One file of a folder item: its path inside the item's folder, size and hashes."""

    path: str
    size: int
    sha256: str
    xxh3: str | None = None


@dataclass(frozen=True)
class Manifest:
    """One group's list of items, with a version that grows on every change."""

    group: str
    version: int
    updated_at: str
    items: tuple[Item, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object (unknown top-level fields kept)."""
        out = {k: v for k, v in self.extra.items() if k not in KNOWN_FIELDS}
        out.update(
            group=self.group,
            version=self.version,
            updated_at=self.updated_at,
            items=[item.to_json() for item in self.items],
        )
        return out

    def dumps(self) -> bytes:
        """Canonical JSON (sorted keys, compact, UTF-8): what the server sends."""
        return self._canonical

    @cached_property
    def _canonical(self) -> bytes:
        # canonical_json(self.to_json()), with each item's cached bytes spliced in:
        # publishing 3,000 items spent 54 of 85 s serialising every item again.
        top = self.to_json_without_items()
        top["items"] = None
        parts = [
            canonical_json(key)
            + b":"
            + (b"[" + b",".join(item.canonical for item in self.items) + b"]"
               if key == "items" else canonical_json(value))
            for key, value in sorted(top.items())
        ]  # fmt: skip
        return b"{" + b",".join(parts) + b"}"

    def to_json_without_items(self) -> dict[str, Any]:
        """The top-level fields of `to_json()`, without `items`."""
        out = {k: v for k, v in self.extra.items() if k not in KNOWN_FIELDS}
        out.update(group=self.group, version=self.version, updated_at=self.updated_at)
        return out

    @cached_property
    def etag(self) -> str:
        """A quoted strong ETag of `dumps()`."""
        return '"' + hashlib.sha256(self._canonical).hexdigest()[:32] + '"'

    def item_for(self, path: str) -> Item | None:
        """The item at `path`, or None."""
        return next((item for item in self.items if item.path == path), None)


@dataclass(frozen=True)
class Rejected:
    """An item that was skipped, and why."""

    index: int
    name: str  # the item's path or title, or "#<index>" when it has neither
    reason: str
    path: str | None = None  # the item's path as given, when it is a string (finding 7)

    def __str__(self) -> str:
        """`item 3 (a/b.mkv): reason`, control characters escaped (the name is input)."""
        return printable(f"item {self.index} ({self.name}): {self.reason}")

    def to_json(self) -> dict[str, Any]:
        """The rejection as a JSON object."""
        return {"index": self.index, "name": self.name, "reason": self.reason}


def printable(text: str) -> str:
    """`text` with every control character (C0 such as newline and ESC, DEL, C1)
    escaped as `\\n` or `\\x1b`: quoted input stays one inert line in a log or on a
    terminal (review12 finding 11: a path with a newline forged a log line)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no spaces, UTF-8: equal documents give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def check_relative_path(path: str) -> str:
    """Return `path` if it is a safe relative path inside the download dir.

    Refused: empty, absolute, backslashes, a drive letter, NUL and control
    characters, lone surrogates, empty segments (`a//b`, a trailing `/`), `.`
    and `..` segments, a segment over 255 bytes, a path over 4096 bytes or 128
    segments. Raises ManifestError with the reason.
    """
    if not isinstance(path, str):
        raise ManifestError(f"path must be a string, not {type(path).__name__}")
    if not path:
        raise ManifestError("path is empty")
    _check_size(path)
    if match := _CONTROL.search(path):
        raise ManifestError(f"path contains the control character {match.group()!r}")
    if bad_text(path) is not None:
        raise ManifestError("path contains a lone surrogate (e.g. '\\ud800'), which is not text")
    if "\\" in path:
        raise ManifestError("path contains a backslash")
    if path.startswith("/"):
        raise ManifestError("path is absolute")
    if _DRIVE.match(path):
        raise ManifestError("path starts with a drive letter")
    _check_segments(path)
    return path


def _check_size(path: str) -> None:
    if len(path) > MAX_PATH_BYTES or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ManifestError(f"path is over {MAX_PATH_BYTES} bytes")
    if path.count("/") >= MAX_SEGMENTS:
        raise ManifestError(f"path has over {MAX_SEGMENTS} segments")


def _check_segments(path: str) -> None:
    for segment in path.split("/"):
        if segment == "":
            raise ManifestError("path has an empty segment")
        if segment in (".", ".."):
            raise ManifestError(f"path has a {segment!r} segment")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise ManifestError(f"path has a segment over {MAX_SEGMENT_BYTES} bytes")


def magnet_info_hash(uri: str) -> str | None:
    """The v1 info hash of a magnet URI as 40 lowercase hex, or None."""
    if len(uri) > MAX_TORRENT_CHARS:  # never cached: 40 x 4 MB magnets held 134 MiB (finding 3)
        return _info_hash_of(uri)
    return _cached_info_hash(uri)


@functools.lru_cache(maxsize=1024)  # validation and Item.info_hash ask about the same URI
def _cached_info_hash(uri: str) -> str | None:
    return _info_hash_of(uri)


def _info_hash_of(uri: str) -> str | None:
    if not uri.startswith("magnet:?"):
        return None
    for key, value in parse_qsl(uri[len("magnet:?") :], keep_blank_values=True):
        if key != "xt" and not re.fullmatch(r"xt\.\d+", key):
            continue
        if not value.lower().startswith("urn:btih:"):
            continue
        digest = value[len("urn:btih:") :]
        if _HEX40.match(digest):
            return digest.lower()
        if _BASE32.match(digest):
            return base64.b32decode(digest.upper()).hex()
    return None


def check_torrent(torrent: object) -> str:
    """Return `torrent` if it is a magnet with a v1 info hash or an http(s) URL."""
    if not isinstance(torrent, str) or not torrent:
        raise ManifestError("torrent must be a non-empty string")
    if len(torrent) > MAX_TORRENT_CHARS:
        raise ManifestError(
            f"torrent is {len(torrent):,} characters long; at most {MAX_TORRENT_CHARS:,} "
            "are accepted"
        )
    if torrent.startswith("magnet:"):
        if magnet_info_hash(torrent) is None:
            raise ManifestError(
                "torrent is a magnet without xt=urn:btih:<40 hex or 32 base32 characters>"
            )
        return torrent
    parts = urlsplit(torrent)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ManifestError("torrent must be a magnet URI or an http(s) URL")
    if _CONTROL.search(torrent) or " " in torrent:
        raise ManifestError("torrent URL contains spaces or control characters")
    return torrent


def _optional(obj: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise ManifestError(f"{name} must be {what}, got {value!r:.80}")
    return value.lower()


def validate_item(obj: object) -> Item:
    """Check one item and return it; ManifestError names the first problem."""
    if not isinstance(obj, Mapping):
        raise ManifestError(f"an item must be an object, not {type(obj).__name__}")
    if "path" not in obj:
        raise ManifestError("path is missing")
    path = check_relative_path(obj["path"])
    if "torrent" not in obj:
        raise ManifestError("torrent is missing")
    torrent = check_torrent(obj["torrent"])
    if (bad := bad_text(dict(obj))) is not None:
        raise ManifestError(f"the item holds a lone surrogate in {bad!r:.60}, which is not text")
    title = obj.get("title", path.rsplit("/", 1)[-1])
    if not isinstance(title, str):
        raise ManifestError(f"title must be a string, not {type(title).__name__}")
    size = _size(obj.get("size"), "size")
    added_at = obj.get("added_at")
    if added_at is not None and not isinstance(added_at, str):
        raise ManifestError("added_at must be a string")
    item = Item(
        title=title,
        torrent=torrent,
        path=path,
        sha256=_optional(obj, "sha256", _SHA256, "64 hex digits"),
        size=size,
        xxh3=_optional(obj, "xxh3", _XXH3, "32 hex digits (XXH3-128)"),
        added_at=added_at,
        extra={k: v for k, v in obj.items() if k not in KNOWN_ITEM_FIELDS},
    )
    _ = item.files  # checks `files` now, so a bad list rejects the item
    return item


def _size(value: object, name: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ManifestError(f"{name} must be a whole number of bytes >= 0, got {value!r:.40}")
    return value


def check_files(raw: object, total: int | None) -> tuple[FileEntry, ...]:
    """Validate a folder item's `files`: paths like item paths, each once, none inside
    another, at most MAX_FILES, sizes adding up to the item's `size` when it has one."""
    if not isinstance(raw, list):
        raise ManifestError(f"files must be a list, not {type(raw).__name__}")
    if not raw:
        raise ManifestError("files is empty")
    if len(raw) > MAX_FILES:
        raise ManifestError(f"files lists {len(raw)} files; at most {MAX_FILES:,} are accepted")
    entries: list[FileEntry] = []
    paths = PathSet("files entry")
    for number, obj in enumerate(raw):
        if not isinstance(obj, Mapping):
            raise ManifestError(f"files[{number}] must be an object")
        try:
            path = check_relative_path(obj.get("path", ""))
            size = _size(obj.get("size"), "size")
            sha256 = _optional(obj, "sha256", _SHA256, "64 hex digits")
            if size is None or sha256 is None:
                raise ManifestError("size and sha256 are required")
            paths.add(path, number)
        except ManifestError as exc:
            raise ManifestError(f"files[{number}]: {exc}") from None
        xxh3 = _optional(obj, "xxh3", _XXH3, "32 hex digits (XXH3-128)")
        entries.append(FileEntry(path, size, sha256, xxh3))
    if total is not None and sum(e.size for e in entries) != total:
        raise ManifestError(
            f"the sizes in files add up to {sum(e.size for e in entries)}, not {total}"
        )
    return tuple(entries)


class Nesting(Enum):
    """How a path meets one already taken."""

    SAME = "same"  # it is the taken path
    INSIDE = "inside"  # it lies inside the taken path (which would have to be a folder)
    HOLDS = "holds"  # it is a folder above the taken path


@dataclass(frozen=True)
class Overlap:
    """A path meets `other`, which `holder` took."""

    nesting: Nesting
    holder: object
    other: str

    def reason(self, what: str) -> str:
        """`path lies inside item 0 ('A')`-style, `what` naming the holders ("item")."""
        if self.nesting is Nesting.SAME:
            return f"path is already used by {what} {self.holder}"
        where = "lies inside" if self.nesting is Nesting.INSIDE else "is a folder holding"
        return f"path {where} {what} {self.holder} ({self.other!r:.200})"


class PathSet:
    """The one rule on paths side by side: none may repeat or nest with another (`A` and
    `A/b`: no client can place both). Used for a manifest's items, a folder item's files,
    a curator's new items beside its listed ones, a client's manifests beside each other
    and a torrent's own file names.

    Linear in the length of the paths: each taken path is a chain of nodes, one per
    segment, keyed by (parent node, segment), so checking or taking a path costs its
    segments once. (Keeping every folder prefix as a string cost O(segments^2): 10.4 s
    and 927 MB for two 20,000-segment paths, review 12, finding 2.)
    """

    def __init__(self, what: str = "item") -> None:
        """`what` names a holder in messages: "item" gives `path lies inside item 0 ('A')`."""
        self._what = what
        self._nodes: dict[tuple[int, str], int] = {}  # (parent node, segment) -> node
        self._taken: dict[int, tuple[object, str]] = {}  # node of a taken path -> holder, path
        self._below: dict[int, tuple[object, str]] = {}  # folder node -> one taken under it
        self.paths: set[str] = set()  # every path taken

    def overlap(self, path: str) -> Overlap | None:
        """How `path` meets a path taken, or None when it meets none."""
        node, start = 0, 0
        while True:
            end = path.find("/", start)
            found = self._nodes.get((node, path[start:] if end < 0 else path[start:end]))
            if found is None:
                return None
            node = found
            if node in self._taken:
                holder, other = self._taken[node]
                return Overlap(Nesting.SAME if end < 0 else Nesting.INSIDE, holder, other)
            if end < 0:
                holder, other = self._below[node]
                return Overlap(Nesting.HOLDS, holder, other)
            start = end + 1

    def add(self, path: str, holder: object) -> None:
        """Take `path` for `holder`; ManifestError naming the other holder on an overlap."""
        if (found := self.overlap(path)) is not None:
            raise ManifestError(found.reason(self._what))
        self.take(path, holder)

    def take(self, path: str, holder: object) -> None:
        """Take `path` for `holder` without a check (paths listed before this rule)."""
        node = 0
        parts = path.split("/")
        for part in parts[:-1]:
            node = self._nodes.setdefault((node, part), len(self._nodes) + 1)
            self._below.setdefault(node, (holder, path))
        node = self._nodes.setdefault((node, parts[-1]), len(self._nodes) + 1)
        self._taken.setdefault(node, (holder, path))
        self.paths.add(path)


def _item_name(obj: object, index: int) -> str:
    if isinstance(obj, Mapping):
        for key in ("path", "title"):
            if isinstance(obj.get(key), str) and obj[key]:
                text = str(obj[key])[:200].encode("utf-8", "backslashreplace").decode()
                return printable(text)
    return f"#{index}"


def parse_items(
    raw: object,
    *,
    one_place_per_torrent: bool = False,
    validate: Callable[[object], Item] | None = None,
) -> tuple[list[Item], list[Rejected]]:
    """Validate a list of items one by one (with `validate`, validate_item by default:
    the client's cache of unchanged items, client/versions.py).

    Refused as well: a path another item has, a path inside another item's
    (`A` and `A/b`: the later one), and with `one_place_per_torrent` (a client:
    one torrent is seeded from one place) a magnet whose info hash another item has.
    """
    validate = validate or validate_item
    if not isinstance(raw, list):
        raise ManifestError(f"'items' must be a list, not {type(raw).__name__}")
    if len(raw) > MAX_ITEMS:
        raise ManifestError(
            f"the manifest lists {len(raw)} items; at most {MAX_ITEMS:,} are accepted"
        )
    items: list[Item] = []
    rejected: list[Rejected] = []
    paths = PathSet("item")
    hashes: dict[str, str] = {}
    for index, obj in enumerate(raw):
        try:
            item = validate(obj)
            ih = item.info_hash
            if (overlap := paths.overlap(item.path)) is not None:
                raise ManifestError(overlap.reason("item"))
            if one_place_per_torrent and ih is not None and ih in hashes:
                raise ManifestError(f"its torrent {ih} is already listed at {hashes[ih]!r}")
            paths.take(item.path, index)
        except ManifestError as exc:
            given = obj.get("path") if isinstance(obj, Mapping) else None
            path = given if isinstance(given, str) else None
            rejected.append(Rejected(index, _item_name(obj, index), str(exc), path))
            continue
        if ih is not None:
            hashes[ih] = item.path
        items.append(item)
    return items, rejected


def load_document(data: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    """Decode JSON bytes or text (bounded: size, depth, numbers) into an object;
    ManifestError when it is not one."""
    if isinstance(data, Mapping):
        return data
    try:
        obj = load_json(data)
    except ReadError as exc:
        raise ManifestError(str(exc)) from None
    if not isinstance(obj, dict):
        raise ManifestError(f"a manifest must be a JSON object, not {type(obj).__name__}")
    return obj


def parse_manifest(
    data: bytes | str | Mapping[str, Any], *, one_place_per_torrent: bool = False
) -> tuple[Manifest, list[Rejected]]:
    """Parse a manifest (ours or the earlier format); bad items come back as Rejected.

    `one_place_per_torrent`: also refuse an item whose magnet another item has
    (what a client needs; a curator may list one torrent at two paths).
    """
    doc = load_document(data)
    group = doc.get("group")
    if not isinstance(group, str) or not group:
        raise ManifestError("'group' must be a non-empty string")
    if "items" not in doc:
        raise ManifestError("'items' is missing")
    version = doc.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ManifestError(f"'version' must be a whole number >= 0, got {version!r:.40}")
    updated_at = doc.get("updated_at", "")
    if not isinstance(updated_at, str):
        raise ManifestError("'updated_at' must be a string")
    extra = {k: v for k, v in doc.items() if k not in KNOWN_FIELDS}
    if (bad := bad_text({"group": group, "updated_at": updated_at, **extra})) is not None:
        raise ManifestError(f"the manifest holds a lone surrogate in {bad!r:.60}, not text")
    items, rejected = parse_items(doc["items"], one_place_per_torrent=one_place_per_torrent)
    manifest = Manifest(group, version, updated_at, tuple(items), extra)
    return manifest, rejected
