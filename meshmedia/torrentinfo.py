"""Read the little the client needs from `.torrent` bytes: info hash, name, file names.

A small bencode reader (the client does not import libtorrent; the engine does).
It is bounded like every reader of network input (bounded.py): size, nesting
depth, number length, and no recursion, so 200 KB of `l` cannot raise
RecursionError. Whether a torrent's own names may be placed is the client's
rule (client/placement.py `unsafe_names`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from .bounded import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_FILES,
    MAX_NUMBER_DIGITS,
    ReadError,
    http_get,
)
from .errors import EngineError

MAX_TORRENT_BYTES = MAX_DOCUMENT_BYTES
TORRENT_DEADLINE = 60.0  # seconds for a whole `.torrent` fetch, however the server trickles


@dataclass(frozen=True)
class TorrentInfo:
    """The v1 info hash (40 hex) and the torrent's name."""

    info_hash: str
    name: str


@dataclass(frozen=True)
class TorrentFile:
    """One file as the `.torrent` names it: `name/part/...` for a folder torrent."""

    index: int
    path: str
    size: int
    pad: bool
    symlink: bool


def _int_at(data: bytes, start: int, end: int) -> int:
    digits = data[start:end]
    if not digits or len(digits) > MAX_NUMBER_DIGITS:
        raise ValueError(f"bad number at byte {start}")
    return int(digits)


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.index(b":", pos, pos + MAX_NUMBER_DIGITS + 1)
    end = colon + 1 + _int_at(data, pos, colon)
    if end > len(data):
        raise ValueError(f"a string at byte {pos} runs past the end")
    return data[colon + 1 : end], end


def _scalar(data: bytes, pos: int) -> tuple[Any, int]:
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos, pos + MAX_NUMBER_DIGITS + 2)
        negative = data[pos + 1 : pos + 2] == b"-"
        number = _int_at(data, pos + 1 + negative, end)
        return -number if negative else number, end + 1
    if lead.isdigit():
        return _string(data, pos)
    raise ValueError(f"bad bencode at byte {pos}")


def bdecode(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode the bencoded value at `pos`: (value, position after it); ValueError if bad.

    Iterative, at most MAX_DEPTH deep: no input can exhaust the stack.
    """
    if len(data) > MAX_TORRENT_BYTES:
        raise ValueError(f"over {MAX_TORRENT_BYTES} bytes")
    stack: list[tuple[list[Any] | dict[bytes, Any], bytes | None]] = []
    while True:
        lead = data[pos : pos + 1]
        if lead in (b"l", b"d"):
            if len(stack) >= MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.append(([] if lead == b"l" else {}, None))
            pos += 1
        elif lead == b"e" and stack:
            value, _ = stack.pop()
            pos += 1
            if not stack:
                return value, pos
            pos = _put(stack, value, data, pos)
            continue
        else:
            value, pos = _scalar(data, pos)
            if not stack:
                return value, pos
            pos = _put(stack, value, data, pos)
            continue
        container, _ = stack[-1]
        if isinstance(container, dict) and data[pos : pos + 1] != b"e":
            key, pos = _string(data, pos)
            stack[-1] = (container, key)


def _put(stack: list[tuple[Any, bytes | None]], value: Any, data: bytes, pos: int) -> int:
    """Add `value` to the innermost container; read the next key of a dict."""
    container, key = stack[-1]
    if isinstance(container, list):
        container.append(value)
        return pos
    container[key] = value
    if data[pos : pos + 1] != b"e":
        key, pos = _string(data, pos)
        stack[-1] = (container, key)
    return pos


def _info_span(data: bytes) -> tuple[int, int]:
    """(start, end) of the `info` value of a bencoded torrent (its bytes are hashed)."""
    if data[:1] != b"d":
        raise ValueError("a .torrent must be a dictionary")
    pos = 1
    while data[pos : pos + 1] != b"e":
        key, pos = _string(data, pos)
        _, end = bdecode(data, pos)
        if key == b"info":
            return pos, end
        pos = end
    raise KeyError("info")


def _text(value: object, what: str) -> str:
    if not isinstance(value, bytes):
        raise ValueError(f"{what} is not a string")
    return value.decode("utf-8")


def torrent_files(data: bytes) -> list[TorrentFile]:
    """Each file of a `.torrent` (or of an info dict wrapped as `d4:info...e`)."""
    try:
        top, _ = bdecode(data)
        info = top[b"info"]
        name = _text(info[b"name"], "name")
        if b"files" not in info:
            attr = info.get(b"attr", b"")
            return [TorrentFile(0, name, _length(info), False, b"l" in attr)]
        entries = info[b"files"]
        if len(entries) > MAX_FILES:
            raise ValueError(f"{len(entries)} files, over {MAX_FILES}")
        return [
            TorrentFile(
                index,
                "/".join([name, *(_text(part, "a path part") for part in entry[b"path"])]),
                _length(entry),
                b"p" in entry.get(b"attr", b""),
                b"l" in entry.get(b"attr", b""),
            )
            for index, entry in enumerate(entries)
        ]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EngineError(f"not a valid .torrent file ({exc!r:.200})") from None


def _length(entry: Any) -> int:
    length = entry[b"length"]
    if not isinstance(length, int) or length < 0:
        raise ValueError("a file length is not a whole number >= 0")
    return length


def read_torrent(data: bytes) -> TorrentInfo:
    """Info hash and name of a `.torrent`; EngineError when it is not one."""
    try:
        start, end = _info_span(data)
        info, _ = bdecode(data, start)
        name = _text(info[b"name"], "name")
        return TorrentInfo(hashlib.sha1(data[start:end]).hexdigest(), name)  # noqa: S324
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EngineError(f"not a valid .torrent file ({exc!r:.200})") from None


def fetch_torrent(
    http: requests.Session,
    url: str,
    deadline: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Download a `.torrent`: at most 16 MiB decoded, within `deadline` seconds in all
    (TORRENT_DEADLINE by default), with `headers` (a member's credential); EngineError
    when that fails."""
    seconds = TORRENT_DEADLINE if deadline is None else deadline
    try:
        answer = http_get(http, url, max_bytes=MAX_TORRENT_BYTES, deadline=seconds, headers=headers)
    except ReadError as exc:
        raise EngineError(f"cannot fetch the torrent {url}: {exc}") from None
    if answer.status != 200:
        raise EngineError(f"cannot fetch the torrent {url}: HTTP {answer.status} {answer.reason}")
    return answer.body
