"""The curator's TLS identity (native_notes/privacy.md 3.1, 3.3): what invite codes pin.

`tls.key` + `tls.crt` in the state dir: Ed25519, self-signed, CN `meshmedia`, 20
years, made on first use (files 0600) and never rotated silently: every code and
every member pins it. The pin is `sha256(SubjectPublicKeyInfo)[:16]`, in the code;
a member keeps the SHA-256 of the whole certificate (urllib3's
`assert_fingerprint`) after its join.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from meshmedia.private_files import private_dir

from .authority import self_signed, write_atomic

KEY_FILE, CERT_FILE = "tls.key", "tls.crt"


def tls_files(state_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) of the curator, made when missing."""
    state_dir = Path(state_dir)
    cert_path, key_path = state_dir / CERT_FILE, state_dir / KEY_FILE
    if not key_path.exists() or not cert_path.exists():
        private_dir(state_dir)
        key = ed25519.Ed25519PrivateKey.generate()
        cert = self_signed(key, "meshmedia", ca=False)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key_path, pem)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(state_dir: Path) -> ssl.SSLContext:
    """The curator's server context: TLS 1.3 only, its own certificate, no client certs."""
    cert_path, key_path = tls_files(state_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_path, key_path)
    return context


def spki_pin(cert_der: bytes) -> bytes:
    """The pin of a certificate: SHA-256 of its SubjectPublicKeyInfo, first 16 bytes."""
    public = x509.load_der_x509_certificate(cert_der).public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:16]


def curator_pin(state_dir: Path) -> bytes:
    """This curator's pin (its TLS identity made when missing)."""
    cert_path, _ = tls_files(state_dir)
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    return spki_pin(der)


def fingerprint(cert_der: bytes) -> str:
    """SHA-256 of a whole certificate (DER), hex: what a member's requests pin."""
    return hashlib.sha256(cert_der).hexdigest()
