"""A client's joined groups wired into a sync: manifest URLs, trust, the read credential.

`meshmedia join` leaves a membership per group in the state dir (membership.py);
a plain `meshmedia sync` then follows each group's manifest URL, trusts only the
curator's signing key for it, and sends the member's credential (the
`Meshmedia-Member` header) on every request to that curator: manifests and
`.torrent` files alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from meshmedia.config import Config

from .membership import Membership, load_memberships
from .registry import CREDENTIAL_HEADER


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) of a URL, lower case: what one curator's URLs share."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass(frozen=True)
class Joined:
    """The memberships of one client, as the fetchers and the reporter use them."""

    memberships: tuple[Membership, ...] = ()

    def headers_for(self, url: str) -> dict[str, str]:
        """The credential header for a request to `url` (none for other servers)."""
        where = origin(url)
        for m in self.memberships:
            if m.credential and origin(m.manifest_url) == where:
                return {CREDENTIAL_HEADER: m.credential}
        return {}

    def pins(self) -> dict[str, str]:
        """`https://host:port` of each joined curator -> its certificate's SHA-256."""
        found = {}
        for m in self.memberships:
            scheme, netloc = origin(m.manifest_url)
            if scheme == "https" and m.curator_pin:
                found[f"https://{netloc}"] = m.curator_pin
        return found

    def trusted_keys(self) -> dict[str, bytes]:
        """Each joined manifest URL and the only key its manifests may be signed by."""
        return {m.manifest_url: bytes.fromhex(m.signing_key) for m in self.memberships}


def with_memberships(config: Config) -> tuple[Config, Joined]:
    """`config` with the joined groups' manifest URLs added, and the memberships."""
    memberships = tuple(load_memberships(Path(config.state_dir)))
    urls = list(config.manifest_urls)
    urls += [m.manifest_url for m in memberships if m.manifest_url not in urls]
    return config.with_changes(manifest_urls=tuple(urls)), Joined(memberships)
