"""Curator commands: `meshmedia serve` runs the curator, `meshmedia publish` asks it to seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .options import build_config, common_options, http_options, library_errors, setup_logging


@click.command()
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
    help="IP address clients reach this curator's peer at ('none': no x.pe in magnets).",
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
@click.option(
    "--public",
    multiple=True,
    metavar="GROUP",
    help="Group anyone who reaches the port may read, as before private groups "
    "(repeatable; '*' = every group; or MESHMEDIA_PUBLIC=a,b). Others need a member.",
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
    from meshmedia.curator import serve as run_curator  # noqa: PLC0415 - keeps --help fast

    config = build_config(params)
    setup_logging(config.log_level)
    run_curator(config)


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--group", help="Group whose manifest lists it (default: its share folder's).")
@click.option("--title", help="Title in the manifest (default: the file or folder name).")
@click.option("--dest-path", help="Path on the clients (default: its path in the share).")
@click.option("--url", help="Curator to ask (default http://MESHMEDIA_HOST:MESHMEDIA_PORT).")
@click.option("--token", help="Write token (default MESHMEDIA_TOKEN, else <state-dir>/token).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the write token from this file (or MESHMEDIA_TOKEN_FILE): not in ps.",
)
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
    from meshmedia.http import curator_url, read_token, request_seed  # noqa: PLC0415

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
