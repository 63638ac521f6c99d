"""The curator's members and invites (native_notes/privacy.md 3.4, 3.5), in `state.db`.

Two tables next to the Store's, on their own connection (the `invite`,
`members` and `revoke` commands run beside a running curator; SQLite's WAL
and busy timeout serialise them). Only SHA-256 digests of secrets are kept:
an invite's one-time secret and a member's read credential. Every request
looks the credential up again, so a revoke takes effect on the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshmedia.errors import MeshmediaError
from meshmedia.private_files import secure_state_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS invites (
    secret_sha256 TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    name TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    member_id TEXT
);
CREATE TABLE IF NOT EXISTS members (
    member_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    grp TEXT NOT NULL,
    credential_sha256 TEXT NOT NULL UNIQUE,
    cert_sha256 TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_seen TEXT,
    last_report_json TEXT
);
"""
CREDENTIAL_HEADER = "Meshmedia-Member"  # a member's read credential on every request
SECRET_BYTES = 16  # the invite secret inside a code (privacy.md 3.4)


class InviteError(MeshmediaError):
    """An invite code the curator refuses: `status` (404, 409, 410) and a clear reason."""

    def __init__(self, status: int, reason: str) -> None:
        """Keep the HTTP status that goes with the reason."""
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Member:
    """One home that joined a group (never its credential: only the digest is kept)."""

    member_id: str
    name: str
    group: str
    created_at: str
    revoked_at: str | None
    last_seen: str | None
    report: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The member as `GET /members` lists it."""
        return {
            "member_id": self.member_id,
            "name": self.name,
            "group": self.group,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "last_seen": self.last_seen,
            "report": self.report,
        }


def digest(secret: str) -> str:
    """SHA-256 of a secret's text, hex: what the tables keep instead of it."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def now_text(now: dt.datetime | None = None) -> str:
    """A UTC time as the tables keep it (ISO 8601, seconds, `Z`)."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """The datetime of `now_text`'s format."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


class Registry:
    """Invites and members of every group of one curator (thread-safe)."""

    def __init__(self, state_dir: Path) -> None:
        """Open (creating) the tables in `<state_dir>/state.db`."""
        secure_state_dir(Path(state_dir))
        self.path = Path(state_dir) / "state.db"
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Registry:
        """The registry itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close."""
        self.close()

    # -- invites ---------------------------------------------------------------------

    def create_invite(
        self, group: str, name: str | None, expires: dt.timedelta
    ) -> tuple[bytes, str]:
        """A new single-use invite: (the secret, to go into the code once; its expiry)."""
        secret = secrets.token_bytes(SECRET_BYTES)
        created = dt.datetime.now(dt.timezone.utc)
        expires_at = now_text(created + expires)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO invites (secret_sha256, grp, name, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (digest(secret.hex()), group, name, now_text(created), expires_at),
            )
        return secret, expires_at

    def invite_group(self, secret_hex: str) -> str | None:
        """The group an invite is for (used or not), or None when there is no such invite."""
        with self._lock:
            row = self._db.execute(
                "SELECT grp FROM invites WHERE secret_sha256 = ?", (digest(secret_hex.lower()),)
            ).fetchone()
        return str(row[0]) if row else None

    def redeem(self, secret_hex: str, member_id: str, credential: str) -> Member:
        """Use an invite: check it, create the member and mark the invite used in one
        transaction; InviteError 404 (unknown), 409 (used) or 410 (expired)."""
        key = digest(secret_hex.lower())
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT grp, name, expires_at, used_at, member_id FROM invites"
                " WHERE secret_sha256 = ?",
                (key,),
            ).fetchone()
            if row is None:
                raise InviteError(404, "unknown invite code")
            group, name, expires_at, used_at, used_by = row
            if used_at is not None:
                who = self._name_of(used_by) or used_by
                raise InviteError(
                    409, f"this invite code was already used on {used_at} by member {who}"
                )
            if parse_time(expires_at) <= dt.datetime.now(dt.timezone.utc):
                raise InviteError(410, f"this invite code expired on {expires_at}")
            name = name or f"home-{member_id[:6]}"
            if self._name_taken(name):
                name = f"{name}-{member_id[:6]}"
            created = now_text()
            self._db.execute(
                "INSERT INTO members (member_id, name, grp, credential_sha256, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (member_id, name, group, digest(credential), created),
            )
            self._db.execute(
                "UPDATE invites SET used_at = ?, member_id = ? WHERE secret_sha256 = ?",
                (created, member_id, key),
            )
        return Member(member_id, name, group, created, None, None, None)

    def _name_of(self, member_id: str | None) -> str | None:
        row = self._db.execute(
            "SELECT name FROM members WHERE member_id = ?", (member_id,)
        ).fetchone()
        return str(row[0]) if row else None

    def _name_taken(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM members WHERE name = ?", (name,)).fetchone()
        return row is not None

    # -- members ---------------------------------------------------------------------

    def set_certificate(self, member_id: str, cert_pem: bytes) -> None:
        """Remember the SHA-256 of the member certificate issued at join."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE members SET cert_sha256 = ? WHERE member_id = ?",
                (hashlib.sha256(cert_pem).hexdigest(), member_id),
            )

    def member_of(self, credential: str) -> Member | None:
        """The non-revoked member whose read credential this is, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM members WHERE credential_sha256 = ?"  # noqa: S608
                " AND revoked_at IS NULL",
                (digest(credential),),
            ).fetchone()
        return _member(row) if row else None

    def members(self) -> list[Member]:
        """Every member, revoked ones too, by group and name."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM members ORDER BY grp, name"  # noqa: S608
            ).fetchall()
        return [_member(row) for row in rows]

    def revoke(self, name: str) -> list[Member]:
        """Revoke every non-revoked member called `name` (or with that member id);
        the members revoked (none: no such member)."""
        with self._lock, self._db:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM members WHERE (name = ? OR member_id = ?)"  # noqa: S608
                " AND revoked_at IS NULL",
                (name, name),
            ).fetchall()
            when = now_text()
            for row in rows:
                self._db.execute(
                    "UPDATE members SET revoked_at = ? WHERE member_id = ?", (when, row[0])
                )
        return [_member(row) for row in rows]

    def report(self, member_id: str, report: dict[str, Any]) -> str:
        """Keep a member's report with the time it came (returned)."""
        seen = now_text()
        with self._lock, self._db:
            self._db.execute(
                "UPDATE members SET last_seen = ?, last_report_json = ? WHERE member_id = ?",
                (seen, json.dumps(report, sort_keys=True), member_id),
            )
        return seen


_COLUMNS = "member_id, name, grp, created_at, revoked_at, last_seen, last_report_json"


def _member(row: tuple[Any, ...]) -> Member:
    report = json.loads(row[6]) if row[6] else None
    return Member(row[0], row[1], row[2], row[3], row[4], row[5], report)
