"""Read the little the client needs from `.torrent` bytes: the v1 info hash and the name.

A small bencode reader (the client does not import libtorrent; the engine does).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import requests

from .errors import EngineError

MAX_TORRENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TorrentInfo:
    """The v1 info hash (40 hex) and the torrent's name."""

    info_hash: str
    name: str


def _skip(data: bytes, pos: int) -> int:
    """The position just after the bencoded value starting at `pos`."""
    lead = data[pos : pos + 1]
    if lead == b"i":
        return data.index(b"e", pos) + 1
    if lead in (b"l", b"d"):
        pos += 1
        while data[pos : pos + 1] != b"e":
            pos = _skip(data, pos)
        return pos + 1
    if lead.isdigit():
        colon = data.index(b":", pos)
        return colon + 1 + int(data[pos:colon])
    raise ValueError(f"bad bencode at byte {pos}")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.index(b":", pos)
    end = colon + 1 + int(data[pos:colon])
    return data[colon + 1 : end], end


def _dict_spans(data: bytes, pos: int) -> dict[bytes, tuple[int, int]]:
    """The keys of the dict at `pos` with the (start, end) span of each value."""
    if data[pos : pos + 1] != b"d":
        raise ValueError(f"expected a dictionary at byte {pos}")
    pos += 1
    spans: dict[bytes, tuple[int, int]] = {}
    while data[pos : pos + 1] != b"e":
        key, pos = _string(data, pos)
        end = _skip(data, pos)
        spans[key] = (pos, end)
        pos = end
    return spans


def bdecode(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode the bencoded value at `pos`: (value, position after it); ValueError if bad."""
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if lead == b"l":
        pos, items = pos + 1, []
        while data[pos : pos + 1] != b"e":
            value, pos = bdecode(data, pos)
            items.append(value)
        return items, pos + 1
    if lead == b"d":
        pos, mapping = pos + 1, {}
        while data[pos : pos + 1] != b"e":
            key, pos = _string(data, pos)
            mapping[key], pos = bdecode(data, pos)
        return mapping, pos + 1
    if lead.isdigit():
        return _string(data, pos)
    raise ValueError(f"bad bencode at byte {pos}")


def torrent_files(data: bytes) -> list[tuple[int, str, int, bool]]:
    """(index, path inside the torrent, size, is a pad file) of each file of a `.torrent`."""
    try:
        top, _ = bdecode(data)
        info = top[b"info"]
        name = info[b"name"].decode()
        if b"files" not in info:
            return [(0, name, int(info[b"length"]), False)]
        return [
            (
                index,
                "/".join([name, *(part.decode() for part in entry[b"path"])]),
                int(entry[b"length"]),
                b"p" in entry.get(b"attr", b""),
            )
            for index, entry in enumerate(info[b"files"])
        ]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise EngineError(f"not a valid .torrent file ({exc!r})") from None


def read_torrent(data: bytes) -> TorrentInfo:
    """Info hash and name of a `.torrent`; EngineError when it is not one."""
    try:
        top = _dict_spans(data, 0)
        start, end = top[b"info"]
        info = _dict_spans(data, start)
        name_start, _ = info[b"name"]
        name, _ = _string(data, name_start)
        return TorrentInfo(hashlib.sha1(data[start:end]).hexdigest(), name.decode())  # noqa: S324
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise EngineError(f"not a valid .torrent file ({exc})") from None


def fetch_torrent(http: requests.Session, url: str) -> bytes:
    """Download a `.torrent` (at most 16 MiB); EngineError when that fails."""
    try:
        with http.get(url, timeout=30, stream=True) as answer:
            answer.raise_for_status()
            data = answer.raw.read(MAX_TORRENT_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise EngineError(f"cannot fetch the torrent {url}: {exc}") from None
    if len(data) > MAX_TORRENT_BYTES:
        raise EngineError(f"the torrent {url} is over {MAX_TORRENT_BYTES} bytes")
    return data
