"""Maintenance commands: `meshmedia keygen`, `meshmedia manifest validate`, `meshmedia doctor`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import build_config, common_options, http_options, library_errors


@click.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help="State folder.")
@click.option("--force", is_flag=True, help="Replace an existing key (clients must re-trust).")
@library_errors
def keygen(state_dir: Path | None, force: bool) -> None:
    """Create the curator's ed25519 signing key and print its public key.

    The curator signs every manifest version with it; give the public key to
    clients as --trust (or MESHMEDIA_TRUST).

    \b
    Example:
      meshmedia keygen --state-dir /var/lib/meshmedia
    """
    from meshmedia.manifest import generate_key, save_key  # noqa: PLC0415 - keeps --help fast

    config = build_config({"state_dir": state_dir})
    key = generate_key()
    path = save_key(config.state_dir, key, overwrite=force)
    click.echo(f"private key written to {path} (mode 0600)", err=True)
    click.echo(key.public_hex)


@click.group()
def manifest() -> None:
    """Work with manifest files.

    \b
    Example:
      meshmedia manifest validate manifests/family.json
    """


@manifest.command()
@click.argument("source", metavar="FILE_OR_URL")
@library_errors
def validate(source: str) -> None:
    """Check a manifest (a file or an http(s) URL) and say precisely what is wrong.

    Exits 0 when every item is valid, 1 when the document or any item is not.

    \b
    Example:
      meshmedia manifest validate http://curator:5000/manifest/family.json
    """
    from meshmedia.manifest import parse_manifest  # noqa: PLC0415 - keeps --help fast

    data = _read_source(source)
    parsed, rejected = parse_manifest(data, one_place_per_torrent=True)  # as clients read it
    for bad in rejected:
        click.echo(str(bad))
    click.echo(
        f"group {parsed.group!r}, version {parsed.version}: "
        f"{len(parsed.items)} items valid, {len(rejected)} rejected"
    )
    if rejected:
        sys.exit(1)


def _read_source(source: str) -> bytes:
    """The bytes of a manifest file or URL, bounded like the client's (16 MiB decoded)."""
    from meshmedia.bounded import MAX_DOCUMENT_BYTES, ReadError  # noqa: PLC0415

    if not source.startswith(("http://", "https://")):
        try:
            with Path(source).open("rb") as src:
                return src.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as exc:
            raise click.ClickException(f"cannot read {source}: {exc.strerror}") from None
    from meshmedia.bounded import bounded_session, http_get  # noqa: PLC0415

    try:
        with bounded_session() as session:
            answer = http_get(session, source, deadline=60.0)
    except ReadError as exc:
        raise click.ClickException(f"cannot fetch {source}: {exc}") from None
    if answer.status != 200:
        raise click.ClickException(f"cannot fetch {source}: HTTP {answer.status} {answer.reason}")
    return answer.body


@click.command()
@click.option(
    "--role", type=click.Choice(["curator", "client"]), default="client", show_default=True
)
@click.option("--download-dir", type=click.Path(path_type=Path), help="Client: the media folder.")
@common_options
@http_options
def doctor(role: str, **params: object) -> None:
    """Check this node: libtorrent, ports, folders, inotify, Jellyfin; print a fix for each problem.

    \b
    Example:
      meshmedia doctor --role curator
    """
    from .doctor import run_checks  # noqa: PLC0415

    config = build_config(dict(params))
    failed = 0
    for check in run_checks(config, role):
        mark = "ok  " if check.ok else "FAIL"
        click.echo(f"{mark} {check.name}: {check.detail}")
        if not check.ok:
            failed += 1
            click.echo(f"     fix: {check.fix}")
    if failed:
        raise SystemExit(1)
