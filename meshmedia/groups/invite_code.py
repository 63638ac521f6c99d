"""The invite code of native_notes/privacy.md 3.4: `MM` + base32 of a small binary record.

    version 1 byte | pin 16 bytes | secret 16 bytes | addresses | check 3 bytes

The pin is `sha256(SubjectPublicKeyInfo)[:16]` of the curator's TLS certificate
(groups/curator_tls.py): `join` compares it in the TLS handshake, before it
sends anything. Upper case base32 so a QR code takes it in alphanumeric mode;
decoding ignores case, spaces and dashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from meshmedia.errors import MeshmediaError

VERSION = 1
PREFIX = "MM"
PIN_BYTES = 16
SECRET_BYTES = 16
CHECK_BYTES = 3
NOT_A_CODE = "this is not a valid invite code (mistyped or cut short?)"


class InviteCodeError(MeshmediaError):
    """A code that cannot be decoded: always the same clear reason."""


@dataclass(frozen=True)
class InviteCode:
    """What a code holds: the curator's pin, the one-time secret, where to reach it."""

    pin: bytes
    secret: bytes
    addresses: tuple[tuple[str, int], ...]


def encode(code: InviteCode) -> str:
    """The code's text (`MM...`, upper case base32 without padding)."""
    body = bytes([VERSION]) + code.pin + code.secret
    for host, port in code.addresses:
        body += _address(host, port)
    body += hashlib.sha256(body).digest()[:CHECK_BYTES]
    return PREFIX + base64.b32encode(body).decode("ascii").rstrip("=")


def _address(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode("idna")
        if not 0 < len(raw) < 256:
            raise InviteCodeError(f"the host name {host!r:.80} cannot go into a code") from None
        return b"h" + bytes([len(raw)]) + raw + struct.pack(">H", port)
    return (b"4" if ip.version == 4 else b"6") + ip.packed + struct.pack(">H", port)


def decode(text: str) -> InviteCode:
    """The InviteCode in `text`; InviteCodeError (NOT_A_CODE) for anything else."""
    cleaned = "".join(text.split()).replace("-", "").upper()
    if not cleaned.startswith(PREFIX):
        raise InviteCodeError(NOT_A_CODE)
    raw = cleaned[len(PREFIX) :]
    try:
        body = base64.b32decode(raw + "=" * (-len(raw) % 8))
    except (binascii.Error, ValueError):
        raise InviteCodeError(NOT_A_CODE) from None
    head = 1 + PIN_BYTES + SECRET_BYTES
    if len(body) < head + CHECK_BYTES:
        raise InviteCodeError(NOT_A_CODE)
    if hashlib.sha256(body[:-CHECK_BYTES]).digest()[:CHECK_BYTES] != body[-CHECK_BYTES:]:
        raise InviteCodeError(NOT_A_CODE)
    if body[0] != VERSION:
        raise InviteCodeError(f"{NOT_A_CODE}; it is of version {body[0]}, not {VERSION}")
    pin, secret = body[1 : 1 + PIN_BYTES], body[1 + PIN_BYTES : head]
    try:
        addresses = _addresses(body[head:-CHECK_BYTES])
    except (ValueError, struct.error, UnicodeError):
        raise InviteCodeError(NOT_A_CODE) from None
    if not addresses:
        raise InviteCodeError(NOT_A_CODE)
    return InviteCode(pin, secret, tuple(addresses))


def _addresses(rest: bytes) -> list[tuple[str, int]]:
    found = []
    while rest:
        kind, rest = rest[:1], rest[1:]
        if kind == b"4":
            host, rest = str(ipaddress.IPv4Address(rest[:4])), rest[4:]
        elif kind == b"6":
            host, rest = str(ipaddress.IPv6Address(rest[:16])), rest[16:]
        elif kind == b"h" and rest:
            length = rest[0]
            host, rest = rest[1 : 1 + length].decode("idna"), rest[1 + length :]
        else:
            raise ValueError("unknown address kind")
        (port,), rest = struct.unpack(">H", rest[:2]), rest[2:]
        found.append((host, port))
    return found


def address_text(host: str, port: int) -> str:
    """`host:port`, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
