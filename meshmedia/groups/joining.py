"""`meshmedia join CODE` on a client (native_notes/privacy.md 3.4), step by step.

1. decode the code: a bad prefix, checksum or version is a clear error, exit 2;
2. for each address in the code: a TLS handshake (no SNI); the key of the
   certificate must match the pin in the code *before* anything is sent (else
   "the host at ... is not the curator that made this code");
3. `POST /join` over that TLS, the certificate pinned, with the secret and a CSR
   of this home's key: 404/409/410 give the curator's reason;
4. only then write: the membership (key, certificate, CA, credential, manifest
   URL; membership.py) and `joined.env` (the download dir) in the state dir.
Nothing is written when any step fails.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from pathlib import Path
from typing import Any

import requests

from meshmedia import __version__
from meshmedia.bounded import bounded_session
from meshmedia.config import JOINED_FILE, read_env_file
from meshmedia.errors import MeshmediaError
from meshmedia.private_files import private_dir, write_private

from . import invite_code
from .authority import make_csr, new_member_key
from .curator_tls import fingerprint, spki_pin
from .membership import KEY_FILE, Membership, save_membership

TIMEOUT = 10.0


class JoinError(MeshmediaError):
    """A join that did not happen (nothing written): the reason and the exit code."""

    def __init__(self, reason: str, exit_code: int = 1) -> None:
        """Keep the exit code (2: the code itself is bad)."""
        super().__init__(reason)
        self.exit_code = exit_code


def _base(host: str, port: int) -> str:
    return "https://" + invite_code.address_text(host, port)


def _certificate(host: str, port: int) -> bytes | None:
    """The certificate (DER) the host presents in a TLS handshake (no CA, no name
    check: the pin is the check), b"" when it does not speak TLS, None when unreachable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
    except OSError:
        return None
    try:
        with context.wrap_socket(raw) as tls:  # no server_hostname: no SNI to read
            return tls.getpeercert(binary_form=True) or b""
    except (OSError, ValueError):
        return b""
    finally:
        raw.close()


def find_curator(code: invite_code.InviteCode) -> tuple[str, str]:
    """(base URL, certificate fingerprint) of the first address whose TLS key matches the
    code's pin; nothing is sent to a host before its key matched."""
    impostors = []
    for host, port in code.addresses:
        der = _certificate(host, port)
        if der is None:
            continue
        if der and spki_pin(der) == code.pin:
            return _base(host, port), fingerprint(der)
        impostors.append(invite_code.address_text(host, port))
    if impostors:
        raise JoinError(f"the host at {impostors[0]} is not the curator that made this code")
    where = ", ".join(invite_code.address_text(h, p) for h, p in code.addresses)
    raise JoinError(f"cannot reach the curator at {where}")


def _post_join(base: str, pin: str, secret: bytes, csr: bytes) -> dict[str, Any]:
    body = {"secret": secret.hex(), "csr": csr.decode("ascii"), "version": __version__}
    try:
        with bounded_session({base: pin}) as http:
            answer = http.post(base + "/join", json=body, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise JoinError(f"the curator at {base} did not answer: {exc}") from None
    try:
        doc = answer.json()
    except ValueError:
        doc = None
    if answer.status_code != 200 or not isinstance(doc, dict):
        reason = doc.get("error") if isinstance(doc, dict) else None
        raise JoinError(str(reason or f"the curator answered HTTP {answer.status_code}"))
    return doc


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise JoinError(f"the curator's answer has no {name}")
    return value


def join_with_code(state_dir: Path, text: str, download_dir: Path | None) -> list[str]:
    """Join the group of the invite code `text`; the lines to print. JoinError otherwise."""
    try:
        code = invite_code.decode(text)
    except invite_code.InviteCodeError as exc:
        raise JoinError(str(exc), exit_code=2) from None
    base, pin = find_curator(code)
    key_path = Path(state_dir) / KEY_FILE
    key = key_path.read_bytes() if key_path.exists() else new_member_key()
    doc = _post_join(base, pin, code.secret, make_csr(key))
    signing_key = _text(doc, "signing_key")
    membership = Membership(
        group=_text(doc, "group"),
        member_id=_text(doc, "member_id"),
        certificate=_text(doc, "certificate").encode("ascii"),
        ca=_text(doc, "ca").encode("ascii"),
        key=key,
        curator_addresses=[invite_code.address_text(h, p) for h, p in code.addresses],
        signing_key=signing_key,
        credential=_text(doc, "credential"),
        manifest_url=base + _text(doc, "manifest"),
        curator_pin=pin,
        peers=[p for p in doc.get("peers", []) if isinstance(p, str)][:64],
        dht_public_key=_hex32(doc.get("dht"), "public_key"),
        dht_secret=_hex32(doc.get("dht"), "secret"),
    )
    save_membership(Path(state_dir), membership)
    if download_dir is not None:
        keep_setting(Path(state_dir), "MESHMEDIA_DOWNLOAD_DIR", str(download_dir.resolve()))
    return [
        f"joined group {membership.group} as member {_text(doc, 'name')}"
        f" ({membership.member_id}) of the curator at {base}",
        f"manifest {membership.manifest_url}, signed by {signing_key[:16]}...",
        f"kept in {state_dir}"
        + (f"; download dir {download_dir.resolve()}" if download_dir else ""),
        "now run `meshmedia sync` (or enable the meshmedia-client unit)",
    ]


def keep_setting(state_dir: Path, name: str, value: str) -> None:
    """Set `name=value` in `<state_dir>/joined.env` (0600), keeping its other lines."""
    path = state_dir / JOINED_FILE
    values = read_env_file(path) if path.exists() else {}
    values[name] = value
    private_dir(state_dir)
    lines = [f"{key}={_quoted(val)}" for key, val in sorted(values.items())]
    temp = path.with_name(f".{JOINED_FILE}.{os.getpid()}.tmp")
    write_private(temp, ("\n".join(lines) + "\n").encode())
    os.replace(temp, path)


def _quoted(value: str) -> str:
    return '"' + value + '"' if any(c.isspace() for c in value) else value


def _hex32(dht: Any, name: str) -> str | None:
    """`dht[name]` when it is 32 bytes in lower-case hex (the group's sealed DHT item),
    else None: the group is then followed over HTTP only."""
    value = dht.get(name) if isinstance(dht, dict) else None
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value
    return None
