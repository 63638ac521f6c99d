"""The invite code and the curator channel it opens: sizes, QR versions, TLS handshakes.

    .venv/bin/python -m benchmarks.privacy_invite [--handshakes 30]

1. Codes as built (meshmedia.groups.invite_code, native_notes/privacy.md "Invite
   code"): version, a 16-byte pin of the curator's TLS key, a 16-byte one-time
   enrolment secret and the curator's addresses, with a 3-byte checksum, in base32.
   Prints the length for a few address sets and the QR version segno picks
   (alphanumeric mode, level M).
2. The curator channel with the standard library's ssl (the curator's HTTP server
   is http.server): a self-signed curator key pinned by the client, member
   certificates from the group CA checked by the server (CERT_OPTIONAL, so a
   stranger without one gets an HTTP answer, not a TLS failure). Prints what the
   server learns of each kind of client and the median handshake time per key type,
   and whether an expired member certificate still completes the handshake (so the
   curator can renew it) with X509_V_FLAG_NO_CHECK_TIME.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import os
import shutil
import socket
import ssl
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from benchmarks.privacy_lab import Pki, issue, load_average, make_ca
from meshmedia.groups.invite_code import InviteCode, InviteCodeError, decode, encode

NO_CHECK_TIME = 0x200000  # OpenSSL X509_V_FLAG_NO_CHECK_TIME


# -- the code ------------------------------------------------------------------------------


def spki_pin(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo, first 16 bytes."""
    public = x509.load_der_x509_certificate(cert_der).public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()[:16]


def code_sizes() -> None:
    """Print code lengths and QR versions."""
    try:
        segno: Any = importlib.import_module("segno")
    except ImportError:  # the measurement without QR versions
        segno = None
    sets = {
        "LAN IPv4": [("192.168.1.10", 5000)],
        "LAN + external IPv4": [("192.168.1.10", 5000), ("203.0.113.7", 5000)],
        "LAN + external IPv4 + IPv6": [
            ("192.168.1.10", 5000),
            ("203.0.113.7", 5000),
            ("2001:db8::10", 5000),
        ],
        "LAN + DNS name": [("192.168.1.10", 5000), ("grandma.duckdns.org", 5000)],
    }
    print("| addresses | code chars | QR version (level M) | terminal rows (compact) |")
    print("|---|---|---|---|")
    for label, addresses in sets.items():
        code = encode(InviteCode(os.urandom(16), os.urandom(16), tuple(addresses)))
        assert list(decode(code).addresses) == addresses
        if segno is not None:
            qr = segno.make(code, error="m", boost_error=False)
            rows = (qr.symbol_size(border=2)[1] + 1) // 2
            qr_text = f"{qr.version} ({qr.mode})"
        else:
            qr_text, rows = "segno not installed", 0
        print(f"| {label} | {len(code)} | {qr_text} | {rows} |")
    example = encode(InviteCode(os.urandom(16), os.urandom(16), tuple(sets["LAN + external IPv4"])))
    print(f"example: {example}")
    broken = example[:-1] + ("A" if example[-1] != "A" else "B")
    try:
        decode(broken)
    except InviteCodeError as exc:
        print(f"one character changed: {exc}")


# -- the channel ---------------------------------------------------------------------------


def _pem_files(folder: Path, name: str, pki: Pki) -> tuple[str, str]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(pki.cert_pem)
    key.write_bytes(pki.key_pem)
    key.chmod(0o600)
    return str(cert), str(key)


def serve(ctx: ssl.SSLContext, sock: socket.socket, seen: list[str], stop: threading.Event) -> None:
    """Accept TLS connections; record the client certificate's CN (or none); answer 1 byte."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                if der:
                    cert = x509.load_der_x509_certificate(der)
                    seen.append(cert.subject.rfc4514_string())
                else:
                    seen.append("no certificate")
                tls.sendall(b"k")
        except (OSError, ssl.SSLError) as exc:
            seen.append(f"handshake refused: {type(exc).__name__}: {exc}"[:100])


def channel(kind: str, handshakes: int) -> None:
    """Pinned curator, member / stranger / foreign clients; handshake times."""
    folder = Path(tempfile.mkdtemp(prefix="privacy-invite-"))
    curator_ca = make_ca("curator", kind)  # self-signed: its key is what the code pins
    group_ca, foreign_ca = make_ca("g", kind), make_ca("g", kind)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.load_cert_chain(*_pem_files(folder, "curator", curator_ca))
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    server_ctx.load_verify_locations(cadata=group_ca.cert_pem.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(server_ctx, listener, seen, stop), daemon=True)
    thread.start()
    pin = spki_pin(curator_ca.cert.public_bytes(serialization.Encoding.DER))
    clients = {
        "member": issue(group_ca, "m-7f3a", kind),
        "stranger (no certificate)": None,
        "foreign CA": issue(foreign_ca, "x", kind),
    }
    try:
        for label, cert in clients.items():
            got = _connect(port, folder, cert, pin)
            time.sleep(0.05)
            print(f"{kind}: {label}: client {got}; server saw: {seen[-1] if seen else '-'}")
        times = []
        for _ in range(handshakes):
            t0 = time.perf_counter()
            _connect(port, folder, clients["member"], pin)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{kind}: pinned mutual TLS 1.3 handshake + 1 byte: median "
              f"{statistics.median(times):.1f} ms of {handshakes}")  # fmt: skip
    finally:
        stop.set()
        thread.join()
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def expired_member(kind: str) -> None:
    """An expired member certificate, with and without OpenSSL's X509_V_FLAG_NO_CHECK_TIME
    on the server (the curator would then check dates itself, so renewal still works)."""
    folder = Path(tempfile.mkdtemp(prefix="privacy-invite-"))
    curator_ca, group_ca = make_ca("curator", kind), make_ca("g", kind)
    forty_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    expired = issue(group_ca, "m-7f3a", kind, not_before=forty_days_ago, days=14)
    pin = spki_pin(curator_ca.cert.public_bytes(serialization.Encoding.DER))
    for flags in (0, NO_CHECK_TIME):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*_pem_files(folder, "curator", curator_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=group_ca.cert_pem.decode())
        ctx.verify_flags |= flags
        listener = socket.create_server(("127.0.0.1", 0))
        seen: list[str] = []
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(ctx, listener, seen, stop), daemon=True)
        thread.start()
        try:
            got = _connect(listener.getsockname()[1], folder, expired, pin)
            time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
            listener.close()
        print(f"{kind}: expired member cert, verify_flags |= {flags:#x}: client {got};"
              f" server saw: {seen[-1] if seen else '-'}")  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)


def _connect(port: int, folder: Path, cert: Pki | None, pin: bytes) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pin below is the check
    if cert is not None:
        ctx.load_cert_chain(*_pem_files(folder, "client", cert))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True) or b""
            if spki_pin(der) != pin:
                return "pin MISMATCH (would stop before sending anything)"
            answer = tls.recv(1)
            return f"pin ok, answer {answer!r}"
    except (OSError, ssl.SSLError) as exc:
        return f"failed: {type(exc).__name__}: {exc}"[:100]


def main() -> None:
    """Both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=30)
    args = parser.parse_args()
    print(f"load {load_average()}; {ssl.OPENSSL_VERSION}")
    code_sizes()
    for kind in ("ed25519", "p256"):
        channel(kind, args.handshakes)
    expired_member("ed25519")


if __name__ == "__main__":
    main()
