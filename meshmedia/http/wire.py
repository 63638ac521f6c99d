"""HTTP/1.1 request heads, parsed strictly (RFC 9112), and the framing rules against smuggling.

`parse_head` turns the bytes before the blank line into a `Head` or raises
`WireError(status, reason)`; the connection then answers that status and
closes. Refused: a malformed request line or field line (whitespace before
the colon, obs-fold, control characters), a missing or repeated Host on
HTTP/1.1, any Transfer-Encoding (411 for chunked, 501 for other codings, 400
with a Content-Length or when chunked is not last), more than one
Content-Length or one that is not plain digits, an Expect other than
100-continue. No request body is ever framed by anything but one valid
Content-Length, so no byte of a body can be read as the next request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Head", "Headers", "WireError", "find_head_end", "parse_head"]

MAX_FIELDS = 100
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_DIGITS = re.compile(r"[0-9]+")


class WireError(Exception):
    """A request that cannot be answered as sent: answer `status` with `reason`, then close."""

    def __init__(self, status: int, reason: str) -> None:
        """Remember the status and the reason."""
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Headers(Mapping[str, str]):
    """Request fields by case-insensitive name; repeated fields joined with ', ' (RFC 9110 5.3)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        """Keep the fields (name, value) in the order received."""
        self._fields = fields
        joined: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        self._joined = joined

    def __getitem__(self, name: str) -> str:
        """The value of field `name` (KeyError when absent)."""
        return self._joined[name.lower()]

    def __contains__(self, name: object) -> bool:
        """True when field `name` was sent."""
        return isinstance(name, str) and name.lower() in self._joined

    def __iter__(self) -> Iterator[str]:
        """The (lower-case) names."""
        return iter(self._joined)

    def __len__(self) -> int:
        """How many distinct names."""
        return len(self._joined)

    def count(self, name: str) -> int:
        """How many field lines named `name` were sent."""
        key = name.lower()
        return sum(1 for field, _ in self._fields if field.lower() == key)


@dataclass(frozen=True)
class Head:
    """A parsed request head: what the connection needs to frame and answer it."""

    method: str
    target: str
    version: str
    headers: Headers
    content_length: int
    keep_alive: bool
    expect_continue: bool


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """Where the head ends in `buffer`: (end of the head, start of the body), or None yet."""
    found = _HEAD_END.search(buffer, max(0, start - 3))
    return (found.start(), found.end()) if found else None


def parse_head(raw: bytes) -> Head:
    """Parse a request head (request line and fields, no blank line); WireError if refused."""
    lines = [line.removesuffix(b"\r") for line in raw.split(b"\n")]
    method, target, version = _request_line(lines[0])
    if len(lines) - 1 > MAX_FIELDS:
        raise WireError(431, f"more than {MAX_FIELDS} header fields")
    headers = Headers([_field(line) for line in lines[1:]])
    if version == "HTTP/1.1" and headers.count("Host") != 1:
        raise WireError(400, "an HTTP/1.1 request needs exactly one Host field")
    if headers.count("Host") > 1:
        raise WireError(400, "more than one Host field")
    length = _content_length(headers)
    expect = headers.get("Expect", "").strip().lower()
    if expect not in ("", "100-continue"):
        raise WireError(417, "only 'Expect: 100-continue' is understood")
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    keep_alive = version == "HTTP/1.1" and "close" not in tokens
    return Head(method, target, version, headers, length, keep_alive, expect == "100-continue")


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise WireError(400, "the request line is not 'METHOD /target HTTP/1.1'")
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise WireError(400, "the request line has no valid HTTP version")
    if version.group(1) != b"1":
        raise WireError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    return parts[0].decode("ascii"), parts[1].decode("ascii"), f"HTTP/1.{version[2].decode()}"


def _field(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise WireError(400, "a header field is folded over lines (obs-fold)")
    match = _FIELD.fullmatch(line)
    if match is None:
        name = line.split(b":", 1)[0].decode("latin-1").encode("unicode_escape").decode()
        raise WireError(400, f"header field {name[:60]!r} is not 'Name: value'")
    return match.group(1).decode("ascii"), match.group(2).decode("latin-1")


def _content_length(headers: Headers) -> int:
    """The body's length from the framing fields, refusing every ambiguous framing."""
    if "Transfer-Encoding" in headers:
        if "Content-Length" in headers:
            raise WireError(400, "both Transfer-Encoding and Content-Length (RFC 9112 6.3)")
        codings = [c.strip().lower() for c in headers["Transfer-Encoding"].split(",")]
        if codings == ["chunked"]:
            raise WireError(411, "send the body with a Content-Length, not chunked")
        if codings[-1] != "chunked" or "chunked" in codings[:-1]:
            raise WireError(400, "chunked is not the last transfer coding (RFC 9112 6.3)")
        raise WireError(501, "transfer codings other than chunked are not supported")
    if "Content-Length" not in headers:
        return 0
    if headers.count("Content-Length") > 1 or "," in headers["Content-Length"]:
        raise WireError(400, "more than one Content-Length")
    value = headers["Content-Length"]
    if not _DIGITS.fullmatch(value):
        raise WireError(400, "Content-Length is not a number of bytes")
    return int(value) if len(value) <= 18 else 10**18
