"""A private group's certificate authority (native_notes/privacy.md 3.1).

Each private group has its own CA, kept by the curator in
`<state_dir>/groups/<group>/ca.key` + `ca.crt`. Its certificate goes into the info
dict of every torrent of the group (libtorrent's SSL torrents): only peers holding a
member certificate it signed get metadata or pieces. Subjects are opaque random hex
(anyone with an info hash sees a member's certificate in the TLS handshake, 2.1).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from meshmedia.config import GROUP_RE
from meshmedia.errors import MeshmediaError
from meshmedia.private_files import open_private, private_dir

CA_YEARS = 20
MEMBER_DAYS = 14
CLOCK_SKEW = dt.timedelta(hours=1)


class GroupError(MeshmediaError):
    """A group's keys or certificates are missing, unreadable or do not fit together."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise GroupError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise GroupError("the key is not an Ed25519 key")
    return key


def new_member_key() -> bytes:
    """A new Ed25519 private key as PKCS#8 PEM (a member's `member.key`)."""
    return _key_pem(ed25519.Ed25519PrivateKey.generate())


def make_csr(key_pem: bytes) -> bytes:
    """A certificate signing request (PEM) for `key_pem`; the subject is left to the
    curator, which sets CN = the member id it chooses."""
    key = _load_key(key_pem)
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, None)
    return csr.public_bytes(serialization.Encoding.PEM)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` (0600) all at once: temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with os.fdopen(open_private(tmp), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_group_name(group: str) -> str:
    """`group` when it is a group name as the config allows (GROUP_RE: it names a file in
    the groups folder, also when a curator's join answer says it); GroupError otherwise."""
    if not isinstance(group, str) or GROUP_RE.match(group) is None:
        raise GroupError(f"not a usable group name: {group!r:.80}")
    return group


@dataclass(frozen=True)
class GroupAuthority:
    """One private group's CA: `ca_pem` goes into every info dict of the group."""

    group: str
    ca_pem: bytes
    _key: ed25519.Ed25519PrivateKey
    _cert: x509.Certificate
    secret: bytes = b""
    """32 random bytes `G`: the sealed BEP 46 item's salt and key (groups/sealing.py)."""
    dht_seed: bytes = b""
    """The ed25519 seed the group's BEP 46 item is stored under (not the signing key:
    nothing in the DHT links a private group to the curator's public ones)."""

    @classmethod
    def open(cls, state_dir: Path, group: str) -> GroupAuthority:
        """The CA of `group`, made on first use in `<state_dir>/groups/<group>/`
        (folders 0700, ca.key and ca.crt 0600)."""
        folder = Path(state_dir) / "groups" / check_group_name(group)
        key_path, cert_path = folder / "ca.key", folder / "ca.crt"
        if not key_path.exists():
            private_dir(folder.parent)
            private_dir(folder)
            key = ed25519.Ed25519PrivateKey.generate()
            cert_pem = self_signed(key, secrets.token_hex(4), ca=True).public_bytes(
                serialization.Encoding.PEM
            )
            write_atomic(cert_path, cert_pem)
            write_atomic(key_path, _key_pem(key))  # last: never a key without its certificate
        try:
            key = _load_key(key_path.read_bytes())
            cert_pem = cert_path.read_bytes()
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (OSError, ValueError) as exc:
            raise GroupError(f"cannot read the CA of group {group!r} in {folder}: {exc}") from None
        if cert.public_key() != key.public_key():
            raise GroupError(f"ca.key and ca.crt of group {group!r} in {folder} do not match")
        secret = _random_file(folder / "secret", 32)
        dht_seed = _random_file(folder / "dht.key", 32)
        return cls(group, cert_pem, key, cert, secret, dht_seed)

    @property
    def dht_public(self) -> bytes:
        """The public key of the group's BEP 46 item (32 bytes)."""
        private = ed25519.Ed25519PrivateKey.from_private_bytes(self.dht_seed)
        return private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign_csr(self, csr_pem: bytes, member_id: str, days: int = MEMBER_DAYS) -> bytes:
        """A member certificate (PEM) for the key of `csr_pem`: CN = `member_id`, SAN DNS
        `*` (libtorrent accepts it for every torrent of the group), valid from an hour ago
        (clock skew) for `days` days."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise GroupError(f"not a certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise GroupError("the certificate signing request's signature is not valid")
        public = csr.public_key()
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise GroupError("a member key must be Ed25519")
        return self._issue(public, member_id, days)

    def issue_self(self, member_id: str, days: int = MEMBER_DAYS) -> tuple[bytes, bytes]:
        """A member certificate and its new key (both PEM) for the curator's own seeding:
        it is a member like any other, with an opaque id."""
        key = ed25519.Ed25519PrivateKey.generate()
        return self._issue(key.public_key(), member_id, days), _key_pem(key)

    def _issue(self, public: ed25519.Ed25519PublicKey, member_id: str, days: int) -> bytes:
        if not member_id or days <= 0:
            raise GroupError("a member certificate needs a member id and a positive validity")
        start = _now() - CLOCK_SKEW
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("*")]), critical=False)
            .sign(self._key, None)
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def _random_file(path: Path, size: int) -> bytes:
    """The `size` random bytes kept in `path` (0600), made on first use."""
    if not path.exists():
        write_atomic(path, secrets.token_bytes(size))
    data = path.read_bytes()
    if len(data) != size:
        raise GroupError(f"{path} is not {size} bytes: damaged")
    return data


def self_signed(key: ed25519.Ed25519PrivateKey, common_name: str, *, ca: bool) -> x509.Certificate:
    """A self-signed certificate valid from an hour ago for CA_YEARS: a group CA (`ca`,
    which signs member certificates only) or the curator's TLS identity."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - CLOCK_SKEW
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365 * CA_YEARS + 5))
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    return builder.sign(key, None)
