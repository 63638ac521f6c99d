"""The curator's side of invites (native_notes/privacy.md 3.4), without HTTP.

`make_invite` (the `invite` command) stores a one-time secret's digest and
prints the code; `join` answers `POST /join`.

The invite is checked and used, and the member row made, in one transaction
(registry.redeem); then the group's CA signs the client's CSR. The read
credential is made here, sent once in the answer, and only its SHA-256 is kept.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshmedia.config import Config

from . import invite_code
from .authority import GroupAuthority, GroupError
from .curator_tls import curator_pin
from .registry import InviteError, Registry

CREDENTIAL_BYTES = 32
MEMBER_ID_BYTES = 8  # 16 hex: the certificate's CN, opaque (privacy.md 3.1)


@dataclass(frozen=True)
class MadeInvite:
    """What `invite` prints: the code once, where it points and until when."""

    code: str
    addresses: list[tuple[str, int]]
    expires_at: str


def make_invite(
    config: Config,
    name: str | None,
    lifetime: dt.timedelta,
    addresses: list[tuple[str, int]],
) -> MadeInvite:
    """A single-use invite into `config.group`, pinning the curator's TLS key (made when
    missing, as the group's CA); only the secret's SHA-256 is kept."""
    state_dir = Path(config.state_dir)
    GroupAuthority.open(state_dir, config.group)
    with Registry(state_dir) as registry:
        secret, expires_at = registry.create_invite(config.group, name, lifetime)
    pin = curator_pin(state_dir)
    code = invite_code.encode(invite_code.InviteCode(pin, secret, tuple(addresses)))
    return MadeInvite(code, addresses, expires_at)


def join(
    registry: Registry, state_dir: Path, signing_key: str, secret_hex: str, csr_pem: bytes
) -> dict[str, Any]:
    """Redeem an invite for a CSR: the join answer (credential, certificate, CA, key).

    InviteError (404/409/410) for an unknown, used or expired code; GroupError
    for a CSR the group's CA refuses (checked first, so a bad CSR uses no code).
    """
    member_id = secrets.token_hex(MEMBER_ID_BYTES)
    credential = secrets.token_hex(CREDENTIAL_BYTES)
    group = registry.invite_group(secret_hex)
    if group is None:
        raise InviteError(404, "unknown invite code")
    authority = GroupAuthority.open(state_dir, group)
    certificate = authority.sign_csr(csr_pem, member_id)
    member = registry.redeem(secret_hex, member_id, credential)
    registry.set_certificate(member_id, certificate)
    return {
        "member_id": member.member_id,
        "name": member.name,
        "group": member.group,
        "credential": credential,
        "certificate": certificate.decode("ascii"),
        "ca": authority.ca_pem.decode("ascii"),
        "signing_key": signing_key,
        "manifest": f"/manifest/{member.group}.json",
        # the group's sealed BEP 46 item (groups/sealing.py): its key and the secret
        "dht": {"public_key": authority.dht_public.hex(), "secret": authority.secret.hex()},
    }


__all__ = ["GroupError", "InviteError", "join"]
