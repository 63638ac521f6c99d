"""The `meshmedia` command line: maps options onto a Config and calls the library.

Every option is also read from the environment (see config.ENVIRONMENT); the
command only maps. Library errors become one clear line and exit code 2
(config) or 1 (runtime), never a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .config import Config, load_config, parse_path_map, parse_size
from .errors import ConfigError, MeshmediaError

F = TypeVar("F", bound=Callable[..., Any])


class SizeParam(click.ParamType):
    """A size such as 20M, 500K, 1G or 0."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """Parse the size or fail with a usage error."""
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, param.name if param and param.name else "size")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeParam()


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


common_options = _options(
    click.option("--state-dir", type=click.Path(path_type=Path), help="State folder."),
    click.option("--listen-port", type=click.IntRange(0, 65535), help="BitTorrent port."),
    click.option("--listen-host", help="BitTorrent listen address (default all)."),
    click.option("--upload-limit", type=SIZE, help="Upload limit in bytes/s (20M, 0 = none)."),
    click.option("--download-limit", type=SIZE, help="Download limit in bytes/s."),
    click.option("--dht/--no-dht", default=None, help="Use the DHT (default on)."),
    click.option(
        "--dht-bootstrap",
        multiple=True,
        metavar="HOST:PORT",
        help="DHT node to bootstrap from, e.g. the curator (repeatable; default libtorrent's).",
    ),
    click.option("--lsd/--no-lsd", default=None, help="Local service discovery (default on)."),
    click.option("--upnp/--no-upnp", default=None, help="UPnP port mapping (default on)."),
    click.option("--natpmp/--no-natpmp", default=None, help="NAT-PMP port mapping (default on)."),
    click.option(
        "--transport",
        type=click.Choice(["both", "tcp", "utp"]),
        help="Peer transports (default both).",
    ),
    click.option(
        "--env-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read settings from this .env file (default ./.env when present).",
    ),
    click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])),
)

http_options = _options(
    click.option("--host", help="HTTP address to bind (default 127.0.0.1)."),
    click.option("--port", type=click.IntRange(0, 65535), help="HTTP port (default 5000)."),
    click.option("--token", help="Token for write requests (default: generated, kept 0600)."),
)


def build_config(params: dict[str, Any]) -> Config:
    """Turn a command's keyword arguments into a validated Config (exit 2 on error)."""
    flags = dict(params)
    env_file = flags.pop("env_file", None)
    if "share" in flags:
        flags["shares"] = tuple(flags.pop("share") or ())
    if "manifest_url" in flags:
        flags["manifest_urls"] = tuple(flags.pop("manifest_url") or ())
    if "jellyfin_path_map" in flags:
        maps = flags.pop("jellyfin_path_map") or ()
        flags["jellyfin_path_map"] = tuple(parse_path_map(m) for m in maps) or None
    try:
        return load_config(flags, None, env_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def setup_logging(level: str) -> None:
    """Log to stderr, one line per event, in a form that reads well in journalctl."""
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def library_errors(func: F) -> F:
    """Turn meshmedia errors into one clear line and exit 1 (config errors: exit 2)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except MeshmediaError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshmedia")
def cli() -> None:
    """Share a media library among family and friends over BitTorrent.

    \b
    Example:
      meshmedia serve --share ~/share
    """


def main() -> None:
    """Entry point of the console script."""
    cli()


@cli.command()
@click.option(
    "--share",
    "share",
    multiple=True,
    metavar="[GROUP=]DIR",
    help="Drop folder to watch (repeatable; GROUP=DIR binds it to a group; default ~/share).",
)
@click.option("--group", help="Group of folders given without GROUP= (default 'default').")
@click.option(
    "--advertise-host",
    help="Address clients reach this curator's peer at ('none': no x.pe in magnets).",
)
@click.option(
    "--settle-time",
    type=click.FloatRange(min=0),
    help="Seconds a file must stay quiet after it is closed before publishing (0.2).",
)
@click.option(
    "--poll-quiet",
    type=click.FloatRange(min=0, min_open=True),
    help="Polling fallback: seconds size and mtime must stay unchanged (2).",
)
@common_options
@http_options
@library_errors
def serve(**params: Any) -> None:
    """Curator: watch the share folder(s), seed every file, serve the manifests over HTTP.

    Runs until SIGTERM or Ctrl-C, then saves its state and exits 0.

    \b
    Example:
      meshmedia serve --share family=~/share --host 0.0.0.0 --advertise-host 192.168.1.10
    """
    from .curator import serve as run_curator  # noqa: PLC0415 - keeps --help fast

    config = build_config(params)
    setup_logging(config.log_level)
    run_curator(config)


@cli.command()
@click.option("--once", is_flag=True, help="One cycle: exit when every item is in place.")
@click.option(
    "--manifest-url",
    "manifest_url",
    multiple=True,
    metavar="URL",
    help="Manifest to follow (repeatable), e.g. http://curator:5000/manifest/family.json.",
)
@click.option("--download-dir", type=click.Path(path_type=Path), help="Media folder.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between polls of servers without long-poll (300).",
)
@click.option("--jellyfin-url", help="Jellyfin to tell about arrived files (default off).")
@click.option("--jellyfin-api-key", help="Jellyfin API key.")
@click.option(
    "--jellyfin-path-map",
    multiple=True,
    metavar="LOCAL=REMOTE",
    help="Rewrite a path prefix for Jellyfin (repeatable), e.g. /srv/media=/media.",
)
@click.option("--min-free", type=SIZE, help="Free space to keep in the download dir (1G).")
@click.option(
    "--delete-removed/--keep-removed",
    default=None,
    help="Delete files dropped from the manifest (default: keep them, stop seeding).",
)
@click.option(
    "--status-port", type=click.IntRange(0, 65535), help="Loopback status HTTP port (5001)."
)
@click.option("--group", help="Group name (default 'default').")
@click.option(
    "--trust",
    metavar="PUBLIC_KEY",
    help="Accept only manifests signed by this key (from `meshmedia keygen`).",
)
@click.option(
    "--follow",
    multiple=True,
    metavar="PUBLIC_KEY[:GROUP]",
    help="Find this curator's manifests through the DHT alone, no server (repeatable).",
)
@common_options
@library_errors
def sync(once: bool, **params: Any) -> None:
    """Client: follow manifest URL(s), download, verify, place, seed, notify Jellyfin.

    Files download into DOWNLOAD_DIR/.meshmedia/incomplete/, are verified, and
    only then renamed to their path. With --once: one cycle, exit 0 when every
    valid item is in place, else 1 with a summary.

    \b
    Example:
      meshmedia sync --manifest-url http://192.168.1.10:5000/manifest/family.json \\
        --download-dir ~/Videos/synced --jellyfin-url http://localhost:8096
    """
    from .sync_daemon import sync_forever, sync_once  # noqa: PLC0415 - keeps --help fast

    config = build_config(params)
    setup_logging(config.log_level)
    if not config.manifest_urls and not config.follow:
        raise click.UsageError(
            "no manifest to follow: give --manifest-url (MANIFEST_URL) or --follow"
        )
    if not once:
        sync_forever(config)
        return
    summary = sync_once(config, sys.stderr, sys.stderr.isatty())
    for line in summary.lines():
        click.echo(line, err=not summary.ok)
    if not summary.ok:
        raise SystemExit(1)


@cli.command()
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
    from .signing import generate_key, save_key  # noqa: PLC0415 - keeps --help fast

    config = build_config({"state_dir": state_dir})
    key = generate_key()
    path = save_key(config.state_dir, key, overwrite=force)
    click.echo(f"private key written to {path} (mode 0600)", err=True)
    click.echo(key.public_hex)


@cli.group()
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
    from .manifest import parse_manifest  # noqa: PLC0415 - keeps --help fast

    if source.startswith(("http://", "https://")):
        import requests  # noqa: PLC0415

        try:
            response = requests.get(source, timeout=30)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot fetch {source}: {exc}") from None
        data = response.content
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read {source}: {exc.strerror}") from None
    parsed, rejected = parse_manifest(data)
    for bad in rejected:
        click.echo(str(bad))
    click.echo(
        f"group {parsed.group!r}, version {parsed.version}: "
        f"{len(parsed.items)} items valid, {len(rejected)} rejected"
    )
    if rejected:
        sys.exit(1)


@cli.command()
@click.option("--url", help="Daemon to ask (default: the curator, then the local client).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def status(url: str | None, as_json: bool, env_file: Path | None) -> None:
    """Show what the local daemon is doing: one line per torrent.

    Asks the curator's /status (MESHMEDIA_HOST:MESHMEDIA_PORT), then the
    client's loopback status port (MESHMEDIA_STATUS_PORT).

    \b
    Example:
      meshmedia status
      meshmedia status --url http://127.0.0.1:5001 --json
    """
    import json  # noqa: PLC0415

    import requests  # noqa: PLC0415

    from .status_view import render_status  # noqa: PLC0415

    config = build_config({"env_file": env_file})
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host  # noqa: S104
    urls = (
        [url] if url else [f"http://{host}:{config.port}", f"http://127.0.0.1:{config.status_port}"]
    )
    for base in urls:
        try:
            answer = requests.get(base.rstrip("/") + "/status", timeout=5)
            answer.raise_for_status()
            data = answer.json()
        except (requests.RequestException, ValueError) as exc:
            last = f"{base}: {exc.__class__.__name__}"
            continue
        click.echo(json.dumps(data, indent=2) if as_json else "\n".join(render_status(data)))
        return
    raise click.ClickException(f"no meshmedia daemon answered ({last}); is it running?")


@cli.command()
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


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--group", help="Group whose manifest lists it (default: its share folder's).")
@click.option("--title", help="Title in the manifest (default: the file or folder name).")
@click.option("--dest-path", help="Path on the clients (default: its path in the share).")
@click.option("--url", help="Curator to ask (default http://MESHMEDIA_HOST:MESHMEDIA_PORT).")
@click.option("--token", help="Write token (default MESHMEDIA_TOKEN, else <state-dir>/token).")
@click.option("--state-dir", type=click.Path(path_type=Path), help="The curator's state folder.")
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read settings from this .env file (default ./.env when present).",
)
@library_errors
def publish(
    path: Path,
    group: str | None,
    title: str | None,
    dest_path: str | None,
    url: str | None,
    **params: Any,
) -> None:
    """Publish a file or folder under a share folder through the running curator.

    The curator hashes it, seeds it and lists it in the group's manifest; the
    magnet is printed.

    \b
    Example:
      meshmedia publish ~/share/Films/Spirited\\ Away.mkv --group family
    """
    from .publish_request import curator_url, read_token, request_seed  # noqa: PLC0415

    config = build_config(dict(params))
    answer = request_seed(
        url or curator_url(config),
        read_token(config),
        path,
        group=group,
        title=title,
        dest_path=dest_path,
    )
    click.echo(answer["magnet"])
