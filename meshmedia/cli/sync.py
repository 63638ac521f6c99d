"""Client-side commands: `meshmedia sync` follows manifests, `meshmedia status` asks a daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from meshmedia.config import local_url

from .options import SIZE, build_config, common_options, library_errors, setup_logging


@click.command()
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
@click.option("--jellyfin-api-key", help="Jellyfin API key (visible in ps: prefer the file).")
@click.option(
    "--jellyfin-api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the Jellyfin API key from this file (or JELLYFIN_API_KEY_FILE).",
)
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
    "--allow-trackers/--no-allow-trackers",
    default=None,
    help="Use the trackers and web seeds that magnets and .torrent files name "
    "(tr=, ws=, announce, url-list); default off: only the curator, peers, DHT, LSD.",
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
@click.option(
    "--select",
    multiple=True,
    metavar="RULE",
    help="Sync only matching items (repeatable): 'Movies/Kids/**' includes, '!*.iso' "
    "excludes; more rules with `meshmedia select`.",
)
@click.option("--max-size", type=SIZE, help="Skip items larger than this, e.g. 8G (0 = no cap).")
@click.option(
    "--on-placed",
    metavar="CMD",
    help="Run CMD per placed item, without a shell; MESHMEDIA_PATH, MESHMEDIA_TITLE, "
    "MESHMEDIA_GROUP, MESHMEDIA_SIZE in its environment, e.g. --on-placed '/usr/local/bin/notify'.",
)
@click.option(
    "--webhook",
    metavar="URL",
    help="POST a JSON event per placed item and per failure (retried with backoff), "
    "e.g. http://homeassistant:8123/api/webhook/meshmedia.",
)
@click.option(
    "--timeout",
    "once_timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="With --once: give up after this long, exit 1 naming each unfinished item and why "
    "(3600; 0 = no deadline), e.g. --timeout 600.",
)
@common_options
@library_errors
def sync(once: bool, **params: Any) -> None:
    """Client: follow manifest URL(s), download, verify, place, seed, notify Jellyfin.

    Files download into DOWNLOAD_DIR/.meshmedia/incomplete/, are verified, and
    only then renamed to their path. With --once: one cycle, exit 0 when every
    valid item is in place, else 1 with a summary; --timeout bounds it.

    \b
    Example:
      meshmedia sync --manifest-url http://192.168.1.10:5000/manifest/family.json \\
        --download-dir ~/Videos/synced --jellyfin-url http://localhost:8096
      meshmedia sync --once --timeout 600   # from cron: never hangs
    """
    from meshmedia.client import sync_forever, sync_once  # noqa: PLC0415 - keeps --help fast
    from meshmedia.groups.joined import with_memberships  # noqa: PLC0415

    config = build_config(params)
    setup_logging(config.log_level)
    config, _ = with_memberships(config)  # the groups `meshmedia join` joined
    if not config.manifest_urls and not config.follow:
        raise click.UsageError(
            "no manifest to follow: give --manifest-url (MANIFEST_URL) or --follow,"
            " or join a group (meshmedia join CODE)"
        )
    if not once:
        sync_forever(config)
        return
    summary = sync_once(config, sys.stderr, sys.stderr.isatty())
    for line in summary.lines():
        click.echo(line, err=not summary.ok)
    if not summary.ok:
        raise SystemExit(1)


@click.command()
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
    urls = (
        [url] if url else [local_url(config.host, config.port), local_url("", config.status_port)]
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
