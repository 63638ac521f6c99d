"""The bearer token for the curator's write endpoints.

It comes from `config.token` (flag `--token` or `MESHMEDIA_TOKEN`), else from
`<state_dir>/token`, generated on first start with mode 0600. The token itself
is never logged; its file's location is.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from meshmedia.config import Config
from meshmedia.errors import ConfigError
from meshmedia.private_files import open_private

log = logging.getLogger(__name__)
TOKEN_FILE = "token"  # noqa: S105 - a file name, not a secret


def token_path(config: Config) -> Path:
    """Where the generated token is kept."""
    return Path(config.state_dir) / TOKEN_FILE


def load_or_create_token(config: Config) -> str:
    """The configured token, or the one kept in the state dir (created when missing)."""
    if config.token:
        return config.token
    path = token_path(config)
    try:
        _tighten(path)
        token = read_token_file(path)
    except FileNotFoundError:
        token = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("token", f"cannot read {path}: {exc}") from exc
    if token:
        return token
    if path.exists():
        log.warning("token file %s is empty; generating a new token", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    temp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    with os.fdopen(open_private(temp), "w", encoding="ascii") as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    log.info("generated a write token in %s (mode 0600)", path)
    return token


def read_token_file(path: Path) -> str:
    """The token kept in `path` ("" when the file is empty): the one reader of it.
    OSError when it cannot be read, UnicodeDecodeError when it is not ASCII text."""
    return path.read_text(encoding="ascii").strip()


def _tighten(path: Path) -> None:
    """Set a token file others could read to mode 0600."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("token file %s had mode %o; setting 0600", path, mode)
        os.chmod(path, 0o600)


def token_matches(expected: str, authorization: str | None) -> bool:
    """True when an `Authorization: Bearer <token>` header carries `expected`."""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
