"""BEP 46 values of a private group that only its members can read (privacy.md 3.7).

The group secret `G` (32 random bytes, curator: `groups/<group>/secret`, members: in
their group file) gives two sub-keys by HKDF-SHA256: the item's 16-byte salt (so the
salt does not name the group) and the ChaCha20-Poly1305 key of its value. The value is
`0x01 | nonce (12) | ciphertext + tag (16)`, bound to the item's public key and salt
as associated data: 29 bytes of overhead, 966 of the DHT's 995 left for the pointer.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .authority import GroupError

VERSION = b"\x01"
OVERHEAD = 1 + 12 + 16
SECRET_BYTES = 32


def _derive(secret: bytes, purpose: str, length: int = 32) -> bytes:
    if len(secret) != SECRET_BYTES:
        raise GroupError("a group secret is 32 bytes")
    info = f"meshmedia {purpose} v1".encode()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def dht_salt(secret: bytes) -> bytes:
    """The group's BEP 46 salt: 16 bytes that say nothing about the group's name."""
    return _derive(secret, "dht salt", 16)


def _aad(public: bytes, salt: bytes) -> bytes:
    return b"meshmedia-dht" + VERSION + public + salt


def seal(secret: bytes, public: bytes, salt: bytes, plaintext: bytes) -> bytes:
    """`plaintext` encrypted and authenticated for the item (public key, salt)."""
    nonce = os.urandom(12)
    aead = ChaCha20Poly1305(_derive(secret, "dht value"))
    return VERSION + nonce + aead.encrypt(nonce, plaintext, _aad(public, salt))


def unseal(secret: bytes, public: bytes, salt: bytes, value: bytes) -> bytes:
    """The plaintext of `seal`; GroupError when the value is not the group's or altered."""
    if value[:1] != VERSION or len(value) < OVERHEAD:
        raise GroupError("the DHT value is not a sealed pointer of this meshmedia version")
    aead = ChaCha20Poly1305(_derive(secret, "dht value"))
    try:
        return aead.decrypt(value[1:13], value[13:], _aad(public, salt))
    except InvalidTag:
        raise GroupError("the DHT value does not open with the group's key") from None
