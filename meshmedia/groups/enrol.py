"""The curator's side of `POST /join` (native_notes/privacy.md 3.4), without HTTP.

The invite is checked and used, and the member row made, in one transaction
(registry.redeem); then the group's CA signs the client's CSR. The read
credential is made here, sent once in the answer, and only its SHA-256 is kept.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from .authority import GroupAuthority, GroupError
from .registry import InviteError, Registry

CREDENTIAL_BYTES = 32
MEMBER_ID_BYTES = 8  # 16 hex: the certificate's CN, opaque (privacy.md 3.1)


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
    }


__all__ = ["GroupError", "InviteError", "join"]
