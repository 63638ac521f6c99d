"""Private-group commands: `invite` and `members`, `revoke` on the curator, `join` on a client.

The curator's side works on its state dir (the `invites` and `members` tables
in state.db, groups/enrol.py) beside a running `serve`; `members` asks the
running curator (GET /members on loopback). `join` talks to the curator named
in the code (groups/joining.py does the work).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import re
import socket
import sys
from pathlib import Path
from typing import Any

import click

from meshmedia.config import WILDCARDS, Config, format_size, local_url

from .options import build_config, library_errors

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> dt.timedelta:
    """`7d`, `12h` or `30m` as a timedelta; click.BadParameter otherwise."""
    match = _DURATION.match(text)
    if match is None or int(match[1]) == 0:
        raise click.BadParameter(f"{text!r} is not a duration; expected e.g. 7d, 12h or 30m")
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2].lower()]
    return dt.timedelta(**{unit: int(match[1])})


def _address(text: str, port: int) -> tuple[str, int]:
    host, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and (not host.count(":") or host.startswith("[")):
        return host.strip("[]"), int(tail)
    return text.strip("[]"), port


def curator_addresses(config: Config, given: tuple[str, ...]) -> list[tuple[str, int]]:
    """Where clients reach this curator: `--address` values, else what the running
    curator advertises (its LAN address, and the router's external address with the
    mapped port: homes elsewhere), else the bound address, else (a wildcard bind) this
    machine's non-loopback IPv4 addresses, else loopback."""
    if given:
        return [_address(text, config.port) for text in given]
    if advertised := running_curator_addresses(config):
        return advertised
    if config.host not in WILDCARDS:
        return [(config.host, config.port)]
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # sends nothing: asks for the outward address
            found.append(probe.getsockname()[0])
        except OSError:
            pass
    outward = [a for a in dict.fromkeys(found) if not a.startswith("127.")]
    return [(a, config.port) for a in outward] or [("127.0.0.1", config.port)]


MAX_ADVERTISED = 8
"""Addresses at most taken from the running curator's /status (it advertises two or three:
its LAN address, the router's external address, maybe IPv6)."""
STATUS_MAX_BYTES = 1 << 20


def running_curator_addresses(config: Config) -> list[tuple[str, int]]:
    """`advertised_http` of the curator running with this config (GET /status on
    loopback), as (host, port); empty when none answers or it advertises nothing.

    Whatever answers on that port is read as untrusted: within 1 MiB and 5 s, and only
    literal IP addresses with a port are taken, at most MAX_ADVERTISED of them.
    """
    # only this command needs requests (bounded's) and libtorrent (engine's, 0.16 s to
    # import): neither is imported for every command
    from meshmedia.bounded import ReadError, bounded_session, http_get, load_json  # noqa: PLC0415
    from meshmedia.engine.peers import PeerError, parse_peer  # noqa: PLC0415

    url = local_url(config.host, config.port) + "/status"
    try:
        session = bounded_session()
        session.trust_env = False  # loopback: no proxy from the environment answers for it
        session.max_redirects = 0  # our curator does not redirect /status
        answer = http_get(session, url, max_bytes=STATUS_MAX_BYTES, deadline=5.0)
        if answer.status != 200:
            return []
        status = load_json(answer.body)
    except ReadError as exc:  # none running (refused), or not one that answers as ours
        log.debug("no addresses from %s: %s", url, exc)
        return []
    urls = status.get("advertised_http") if isinstance(status, dict) else None
    found: list[tuple[str, int]] = []
    for value in urls if isinstance(urls, list) else []:
        # `http://IP:PORT` (a trailing / allowed), the endpoint as any untrusted peer is
        if not isinstance(value, str) or len(value) > 100 or not value.startswith("http://"):
            continue
        try:
            address = parse_peer(value.removeprefix("http://").removesuffix("/"))
        except PeerError:
            continue
        if _unicast(address[0]) and address not in found:
            found.append(address)
    return found[:MAX_ADVERTISED]


def _unicast(host: str) -> bool:
    """A literal address another home can dial: not 0.0.0.0/::, multicast, broadcast or
    an IPv6 address with a zone (`fe80::1%eth0` names this machine's interface)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return False
    broadcast = address == ipaddress.IPv4Address("255.255.255.255")
    return not (address.is_unspecified or address.is_multicast or broadcast)


def print_qr(code: str) -> None:
    """The code as a QR code in the terminal (segno; level M, alphanumeric mode)."""
    import segno  # noqa: PLC0415 - only this command needs it

    segno.make(code, error="m").terminal(out=sys.stdout, compact=True)


_state_dir = click.option("--state-dir", type=click.Path(path_type=Path), help="State folder.")
_env_file = click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read settings from this .env file (default ./.env when present).",
)


@click.command()
@click.option("--group", help="The private group to invite into (default MESHMEDIA_GROUP).")
@click.option("--name", help="The home's name in `meshmedia members` (default: home-<id>).")
@click.option("--expires", default="7d", show_default=True, help="Validity: 7d, 12h, 30m.")
@click.option(
    "--address",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Where clients reach this curator (repeatable; default: its addresses).",
)
@click.option("--port", type=click.IntRange(1, 65535), help="The curator's HTTP port (5000).")
@click.option("--host", help="The curator's HTTP bind address (MESHMEDIA_HOST).")
@click.option("--no-qr", is_flag=True, help="Print the code only, no QR code.")
@_state_dir
@_env_file
@library_errors
def invite(
    group: str | None,
    name: str | None,
    expires: str,
    address: tuple[str, ...],
    no_qr: bool,
    **params: Any,
) -> None:
    """Curator: print a one-time code (and its QR code) that adds one home to a group.

    The code holds the curator's addresses, the pin of its signing key and a
    one-time secret; only the secret's SHA-256 is kept. It works once, until it
    expires. On the new home: `meshmedia join CODE`.

    \b
    Example:
      meshmedia invite --group family --name grandma
    """
    from meshmedia.groups.enrol import make_invite  # noqa: PLC0415 - cryptography
    from meshmedia.manifest import generate_key, load_key, save_key  # noqa: PLC0415

    config = build_config({**params, "group": group})
    lifetime = parse_duration(expires)
    if config.is_public(config.group):
        raise click.UsageError(f"group {config.group!r} is public (--public): it needs no invite")
    state_dir = Path(config.state_dir)
    signer = load_key(state_dir)
    if signer is None:  # manifests of private groups are always signed
        signer = generate_key()
        save_key(state_dir, signer)
        click.echo(
            f"made the curator's signing key {signer.public_hex} (`meshmedia serve` signs"
            " the manifests with it from its next start)",
            err=True,
        )
    addresses = curator_addresses(config, address)
    made = make_invite(config, name, lifetime, addresses)
    click.echo(made.code)
    if not no_qr:
        print_qr(made.code)
    where = ", ".join(f"{h}:{p}" for h, p in made.addresses)
    click.echo(f"group {config.group}; valid until {made.expires_at}, single use; curator {where}")
    click.echo(f"on the new home: meshmedia join {made.code[:6]}... (the code above)")


@click.command()
@click.argument("code", required=False)
@click.option(
    "--download-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where this home's files go (kept for `meshmedia sync`).",
)
@_state_dir
@_env_file
def join(code: str | None, download_dir: Path | None, **params: Any) -> None:
    """Client: join a private group with the code `meshmedia invite` printed.

    Checks the code, reaches the curator, checks it is the one that made the
    code, and keeps this home's key, certificate and credential in the state
    dir: a plain `meshmedia sync` (or the systemd unit) then follows the group.
    Without CODE (or with -) the code is read from stdin, out of `ps`.

    \b
    Example:
      meshmedia join MMAE3K... --download-dir ~/Videos/family
    """
    from meshmedia.groups.joining import JoinError, join_with_code  # noqa: PLC0415

    config = build_config(params)
    text = code if code and code != "-" else sys.stdin.readline()
    try:
        done = join_with_code(Path(config.state_dir), text, download_dir)
    except JoinError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    for line in done:
        click.echo(line)


@click.command()
@click.option("--url", help="Curator to ask (default http://MESHMEDIA_HOST:MESHMEDIA_PORT).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@_env_file
def members(url: str | None, as_json: bool, env_file: Path | None) -> None:
    """Curator: list the homes that joined, with what each has (from their reports).

    \b
    Example:
      meshmedia members
    """
    import json  # noqa: PLC0415

    import requests  # noqa: PLC0415

    config = build_config({"env_file": env_file})
    base = url or local_url(config.host, config.port)
    try:
        answer = requests.get(base.rstrip("/") + "/members", timeout=10)
        answer.raise_for_status()
        data = answer.json()
    except (requests.RequestException, ValueError) as exc:
        raise click.ClickException(f"the curator at {base} did not answer: {exc}") from None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in member_lines(data):
        click.echo(line)


def member_lines(data: dict[str, Any]) -> list[str]:
    """One line per member: name, group, completion, downloading, failed, disk, seen."""
    lines = []
    for member in data.get("members", []):
        items = data.get("items", {}).get(member["group"], [])
        report = member.get("report") or {}
        placed = set(report.get("placed", [])) & {i["info_hash"] for i in items}
        free = report.get("free_disk")
        state = "revoked " + member["revoked_at"] if member.get("revoked_at") else "member"
        lines.append(
            f"{member['name']}  group {member['group']}  {len(placed)}/{len(items)} placed"
            f"  {len(report.get('downloading', {}))} downloading"
            f"  {len(report.get('failed', {}))} failed"
            f"  free {format_size(free) if isinstance(free, int) else '?'}"
            f"  version {report.get('version', '?')}"
            f"  last seen {member.get('last_seen') or 'never'}  ({state})"
        )
    return lines or ["no members yet: add a home with `meshmedia invite`"]


@click.command()
@click.argument("name")
@_state_dir
@_env_file
@library_errors
def revoke(name: str, **params: Any) -> None:
    """Curator: stop a member's access to the group's manifests and torrents, now.

    It keeps the files it already has; see the README ("Revoking a home").

    \b
    Example:
      meshmedia revoke grandma
    """
    from meshmedia.groups.registry import Registry  # noqa: PLC0415

    config = build_config(params)
    with Registry(Path(config.state_dir)) as registry:
        gone = registry.revoke(name)
    if not gone:
        raise click.ClickException(f"no member {name!r} (see `meshmedia members`)")
    for member in gone:
        click.echo(
            f"revoked {member.name} ({member.member_id}) of group {member.group}: no manifest"
            " or torrent from this curator from now on; the files it has stay with it"
        )
