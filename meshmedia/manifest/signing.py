"""Signed manifests: ed25519 keys, detached signatures, trust pinning and rollback checks.

The signature travels inside the manifest as a top-level `signature` object,
which readers of the earlier format ignore:

    "signature": {"alg": "ed25519", "key": "<public key, 64 hex>", "sig": "<128 hex>"}

It signs the canonical serialization of the manifest without that field:
UTF-8 JSON, keys sorted, no insignificant white space.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshmedia.errors import ManifestError
from meshmedia.private_files import open_private, private_dir, write_private

from .format import canonical_json

log = logging.getLogger(__name__)

KEY_FILE = "signing.key"
PUBLIC_FILE = "signing.pub"
ALG = "ed25519"


class SignatureError(ManifestError):
    """A manifest's signature is missing, malformed, wrong, or from an untrusted key."""


class RollbackError(ManifestError):
    """A manifest's version is lower than one already accepted from the same source."""


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without `signature`, canonical JSON."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def parse_public_key(text: str) -> bytes:
    """Parse a public key given as 64 hex digits (what `meshmedia keygen` prints)."""
    value = text.strip().lower().removeprefix("ed25519:")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SignatureError(f"{text!r} is not an ed25519 public key (expected 64 hex digits)")
    return raw


@dataclass(frozen=True)
class SigningKey:
    """An ed25519 key pair: the 32-byte seed and the 32-byte public key."""

    seed: bytes
    public: bytes

    @property
    def public_hex(self) -> str:
        """The public key as 64 hex digits."""
        return self.public.hex()

    @property
    def expanded_secret(self) -> bytes:
        """libtorrent's 64-byte expanded secret (SHA-512 of the seed, clamped), for BEP 46."""
        digest = bytearray(hashlib.sha512(self.seed).digest())
        digest[0] &= 248
        digest[31] &= 63
        digest[31] |= 64
        return bytes(digest)

    def sign(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of the manifest document carrying a signature over its content."""
        signed = {k: v for k, v in document.items() if k != "signature"}
        signed["signature"] = self.signature_of(canonical_bytes(document))
        return signed

    def signature_of(self, content: bytes) -> dict[str, str]:
        """The `signature` field for a manifest whose canonical bytes without it are
        `content` (canonical_bytes of its document)."""
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        return {"alg": ALG, "key": self.public_hex, "sig": private.sign(content).hex()}


def generate_key() -> SigningKey:
    """A new random key pair."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return SigningKey(seed, _public_of(seed))


def _public_of(seed: bytes) -> bytes:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def save_key(state_dir: Path, key: SigningKey, overwrite: bool = False) -> Path:
    """Write the key pair into the state dir (0700; both files 0600); return its path."""
    private_dir(state_dir)
    path = state_dir / KEY_FILE
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = open_private(path, flags)
    except FileExistsError:
        raise SignatureError(f"{path} exists; refusing to replace a signing key") from None
    with os.fdopen(fd, "w") as out:
        out.write(key.seed.hex() + "\n")
    write_private(state_dir / PUBLIC_FILE, (key.public_hex + "\n").encode())
    return path


def load_key(state_dir: Path) -> SigningKey | None:
    """The state dir's key pair, or None when there is none.

    A key file that other users can read or write is refused (as ssh does), with
    the command that fixes it: it is never tightened silently, since whoever could
    read it may already sign manifests in the curator's name.
    """
    path = state_dir / KEY_FILE
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise SignatureError(
            f"the signing key {path} is open to other users (mode {mode:04o}); run"
            f" `chmod 600 {shlex.quote(str(path))}` (and, if someone else may have read it,"
            " make a new key with `meshmedia keygen --force`; clients must then trust it)"
        )
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError:
        raise SignatureError(f"{path} is not a meshmedia signing key") from None
    if len(seed) != 32:
        raise SignatureError(f"{path} is not a meshmedia signing key")
    return SigningKey(seed, _public_of(seed))


def signer_of(document: Mapping[str, Any]) -> bytes | None:
    """The public key a manifest claims to be signed by, or None when it is unsigned."""
    signature = document.get("signature")
    if signature is None:
        return None
    if not isinstance(signature, Mapping) or signature.get("alg") != ALG:
        raise SignatureError("the manifest's signature is malformed (expected alg ed25519)")
    return parse_public_key(str(signature.get("key", "")))


def verify(document: Mapping[str, Any], trusted: bytes) -> None:
    """Check that the manifest is signed by `trusted` and unaltered; SignatureError if not."""
    claimed = signer_of(document)
    if claimed is None:
        raise SignatureError("the manifest is not signed, but a trusted key is required")
    if claimed != trusted:
        raise SignatureError(
            f"the manifest is signed by {claimed.hex()}, not by the trusted key {trusted.hex()}"
        )
    try:
        sig = bytes.fromhex(str(document["signature"].get("sig", "")))
        Ed25519PublicKey.from_public_bytes(trusted).verify(sig, canonical_bytes(document))
    except (ValueError, InvalidSignature):
        raise SignatureError(
            "the manifest's signature does not match its content (tampered?)"
        ) from None


class TrustPolicy:
    """Decides whether a fetched manifest is accepted, remembering keys and versions.

    With a trusted key every manifest must be signed by it. Without one, the
    first signed manifest from a source pins its key (trust on first use) and
    later ones must carry the same key. A signed manifest whose version is
    lower than the last accepted one from the same source is a rollback.
    """

    def __init__(self, store: Any, trusted: bytes | None = None) -> None:
        self._store = store
        self._trusted = trusted

    def admit(self, source: str, document: Mapping[str, Any]) -> bytes | None:
        """Check the manifest from `source`; record it and return the signer's key.

        Raises SignatureError or RollbackError; returns None for an unsigned
        manifest accepted under no pinned or trusted key.
        """
        pinned_hex = self._store.get(f"trust.pin:{source}")
        key = self._trusted or (bytes.fromhex(pinned_hex) if pinned_hex else None)
        if key is None:
            key = signer_of(document)
            if key is None:
                return None
        verify(document, key)
        version = document.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise SignatureError(f"the signed manifest's version {version!r} is not a number")
        last = int(self._store.get(f"trust.version:{source}:{key.hex()}") or -1)
        if version < last:
            raise RollbackError(
                f"manifest version {version} from {source} is older than version {last} "
                "already accepted (rollback refused)"
            )
        if not pinned_hex and self._trusted is None:
            log.warning("pinned signing key %s for %s (trust on first use)", key.hex(), source)
        if not pinned_hex:
            self._store.put(f"trust.pin:{source}", key.hex())
        self._store.put(f"trust.version:{source}:{key.hex()}", str(version))
        return key
