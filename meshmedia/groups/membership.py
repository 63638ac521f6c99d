"""A client's view of the private groups it joined (native_notes/privacy.md 3.1).

One home has one key, `<state_dir>/member.key` (Ed25519, 0600), and for each joined
group a file `<state_dir>/groups/<group>.json` (0600, folder 0700) with the member
certificate the group's curator issued, the group CA, how to reach the curator and
the manifest's URL. Written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshmedia.groups.authority import GroupError, check_group_name, new_member_key, write_atomic
from meshmedia.private_files import private_dir

log = logging.getLogger(__name__)

FORMAT = 1
KEY_FILE = "member.key"


@dataclass(frozen=True)
class Membership:
    """One joined private group: the member certificate and key (PEM), the group CA
    (PEM, the one inside every info dict of the group), the curator's addresses
    (`host:port` of its HTTP API), its manifest signing key (hex), the read credential
    (None when the member certificate is the credential) and the manifest URL."""

    group: str
    member_id: str
    certificate: bytes
    ca: bytes
    key: bytes
    curator_addresses: list[str]
    signing_key: str
    credential: str | None
    manifest_url: str
    curator_pin: str | None = None
    peers: list[str] = field(default_factory=list)
    """Members' BitTorrent SSL addresses (`ip:port`) last handed out by the curator."""
    dht_public_key: str | None = None
    """The group's BEP 46 item key (64 hex), None when the group is not in the DHT."""
    dht_secret: str | None = field(default=None, repr=False)
    """The group secret `G` (64 hex) that opens the sealed item (groups/sealing.py)."""


def member_key(state_dir: Path) -> bytes:
    """The home's member key (PEM), made (0600) on first use."""
    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        private_dir(Path(state_dir))
        write_atomic(path, new_member_key())
    return path.read_bytes()


def save_membership(state_dir: Path, m: Membership) -> None:
    """Write `m` as `<state_dir>/groups/<group>.json` and its key as
    `<state_dir>/member.key`, each atomically (0600; folders 0700). A different key
    than the home's existing one is refused: the other groups' certificates are for it."""
    state_dir = Path(state_dir)
    folder = state_dir / "groups"
    path = folder / f"{check_group_name(m.group)}.json"
    key_path = state_dir / KEY_FILE
    if key_path.exists() and key_path.read_bytes() != m.key:
        raise GroupError(f"{key_path} holds another key than this membership's")
    private_dir(state_dir)
    private_dir(folder)
    if not key_path.exists():
        write_atomic(key_path, m.key)
    write_atomic(path, json.dumps(_to_json(m), indent=1, sort_keys=True).encode())


def load_memberships(state_dir: Path) -> list[Membership]:
    """Every joined group in `state_dir`, by group name; a file that cannot be read is
    skipped with a log line (the other groups keep working)."""
    state_dir = Path(state_dir)
    folder = state_dir / "groups"
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        return []
    try:
        key = (state_dir / KEY_FILE).read_bytes()
    except OSError as exc:
        log.error("private groups ignored: cannot read %s: %s", state_dir / KEY_FILE, exc)
        return []
    found = []
    for path in files:
        try:
            found.append(_from_json(json.loads(path.read_bytes()), key, path.stem))
        except (OSError, ValueError, TypeError, KeyError, GroupError) as exc:
            log.error("private group file %s ignored: %s", path, exc)
    return found


def _to_json(m: Membership) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "group": m.group,
        "member_id": m.member_id,
        "certificate": m.certificate.decode("ascii"),
        "ca": m.ca.decode("ascii"),
        "curator": {
            "addresses": list(m.curator_addresses),
            "signing_key": m.signing_key,
            "pin": m.curator_pin,
        },
        "credential": m.credential,
        "manifest_url": m.manifest_url,
        "peers": list(m.peers),
        "dht": {"public_key": m.dht_public_key, "secret": m.dht_secret},
    }


def _from_json(data: Any, key: bytes, stem: str) -> Membership:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a membership file of this meshmedia version")
    curator = data["curator"]
    group = _text(data["group"], "group")
    if group != stem:
        raise ValueError(f"names group {group!r}, not {stem!r}")
    credential = data.get("credential")
    pin = curator.get("pin")
    dht = data.get("dht") or {}
    dht_public, dht_secret = dht.get("public_key"), dht.get("secret")
    return Membership(
        group=group,
        member_id=_text(data["member_id"], "member_id"),
        certificate=_text(data["certificate"], "certificate").encode("ascii"),
        ca=_text(data["ca"], "ca").encode("ascii"),
        key=key,
        curator_addresses=_texts(curator["addresses"], "curator.addresses"),
        signing_key=_text(curator["signing_key"], "curator.signing_key"),
        credential=None if credential is None else _text(credential, "credential"),
        manifest_url=_text(data["manifest_url"], "manifest_url"),
        curator_pin=None if pin is None else _text(pin, "curator.pin"),
        peers=_texts(data.get("peers", []), "peers"),
        dht_public_key=None if dht_public is None else _hex(dht_public, 32, "dht.public_key"),
        dht_secret=None if dht_secret is None else _hex(dht_secret, 32, "dht.secret"),
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is not a non-empty string")
    return value


def _hex(value: Any, size: int, name: str) -> str:
    text = _text(value, name)
    if len(text) != 2 * size or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{name} is not {size} bytes in lower-case hex")
    return text


def _texts(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return [_text(v, name) for v in value]
