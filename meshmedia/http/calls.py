"""Ask a running curator to publish a file or folder (POST /seed), as `meshmedia publish` does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests

from meshmedia.config import Config, local_url
from meshmedia.errors import PublishError

from .auth import read_token_file, token_path

CONNECT_TIMEOUT = 5.0
PUBLISH_TIMEOUT = 900.0  # hashing a large folder from a cold disk takes a while


def curator_url(config: Config) -> str:
    """http://MESHMEDIA_HOST:MESHMEDIA_PORT (127.0.0.1 when the curator binds every address)."""
    return local_url(config.host, config.port)


def read_token(config: Config) -> str:
    """The write token: `config.token` (MESHMEDIA_TOKEN), else `<state_dir>/token`."""
    if config.token:
        return config.token
    path = token_path(config)
    try:
        token = read_token_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a token file"
        raise PublishError(
            f"no write token: set MESHMEDIA_TOKEN or run where the curator keeps {path} ({reason})"
        ) from None
    if not token:
        raise PublishError(f"the token file {path} is empty")
    return token


def request_seed(
    url: str,
    token: str,
    path: Path,
    *,
    group: str | None = None,
    title: str | None = None,
    dest_path: str | None = None,
) -> dict[str, Any]:
    """POST /seed and return the curator's answer ({"magnet", "item"}); PublishError otherwise."""
    body = {"path": os.path.abspath(path), "group": group, "title": title, "dest_path": dest_path}
    endpoint = url.rstrip("/") + "/seed"
    try:
        answer = requests.post(
            endpoint,
            json={k: v for k, v in body.items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=(CONNECT_TIMEOUT, PUBLISH_TIMEOUT),
        )
    except requests.ConnectionError:
        raise PublishError(
            f"cannot reach the curator at {url}; is `meshmedia serve` running there?"
        ) from None
    except requests.RequestException as exc:
        raise PublishError(f"the request to {endpoint} failed: {exc.__class__.__name__}") from None
    try:
        data = answer.json()
    except ValueError:
        data = None
    if answer.status_code != 200 or not isinstance(data, dict) or "magnet" not in data:
        reason = data.get("error") if isinstance(data, dict) else None
        raise PublishError(
            f"the curator refused ({answer.status_code}): {reason or answer.reason or 'no reason'}"
        )
    return data
