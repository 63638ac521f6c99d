"""Shared pieces of the `meshmedia` commands: option sets, Config building, errors.

Every command module imports these; none of them imports a command, so the
command modules and root.py form no import cycle.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from meshmedia.config import Config, load_config, parse_path_map, parse_size, read_secret
from meshmedia.errors import ConfigError, MeshmediaError

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
    click.option(
        "--ssl-listen-port",
        type=click.IntRange(0, 65535),
        help="BitTorrent SSL port of private groups' torrents (default the BitTorrent port + 1).",
    ),
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
    click.option(
        "--limit-schedule",
        metavar="WINDOWS",
        help="Limits by weekday and time, windows split by ';' (0 = unlimited, paused = "
        "none), e.g. 'mon-fri 08:00-23:00 up=1M down=5M; * 23:00-08:00 up=0 down=0'.",
    ),
)

http_options = _options(
    click.option("--host", help="HTTP address to bind (default 127.0.0.1)."),
    click.option("--port", type=click.IntRange(0, 65535), help="HTTP port (default 5000)."),
    click.option("--token", help="Token for write requests (default: generated, kept 0600)."),
    click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the write token from this file (or MESHMEDIA_TOKEN_FILE): not in ps.",
    ),
)

# Secrets that a flag puts in every user's view (`ps`, /proc/PID/cmdline): each has a
# file flag and environment variables instead (review12 finding 13).
SECRET_FLAGS = {
    "token": ("--token", "MESHMEDIA_TOKEN, MESHMEDIA_TOKEN_FILE or --token-file"),
    "jellyfin_api_key": (
        "--jellyfin-api-key",
        "JELLYFIN_API_KEY, JELLYFIN_API_KEY_FILE or --jellyfin-api-key-file",
    ),
}


def secret_flags(flags: dict[str, Any]) -> None:
    """Read `--X-file` flags into their secrets, and warn about a secret given as a flag."""
    for setting, (flag, better) in SECRET_FLAGS.items():
        path = flags.pop(f"{setting}_file", None)
        if flags.get(setting) is not None:
            click.echo(
                f"warning: {flag} on the command line is visible to every user of this "
                f"machine (ps); give it with {better}",
                err=True,
            )
        elif path is not None:
            try:
                flags[setting] = read_secret(path, setting)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from None


def build_config(params: dict[str, Any]) -> Config:
    """Turn a command's keyword arguments into a validated Config (exit 2 on error)."""
    flags = dict(params)
    env_file = flags.pop("env_file", None)
    secret_flags(flags)
    if "share" in flags:
        flags["shares"] = tuple(flags.pop("share") or ())
    if "manifest_url" in flags:
        flags["manifest_urls"] = tuple(flags.pop("manifest_url") or ())
    if "jellyfin_path_map" in flags:
        maps = flags.pop("jellyfin_path_map") or ()
        flags["jellyfin_path_map"] = tuple(parse_path_map(m) for m in maps) or None
    try:
        config = load_config(flags, None, env_file)
        if config.limit_schedule:
            from meshmedia.engine.schedule import parse_schedule  # noqa: PLC0415 - libtorrent

            parse_schedule(config.limit_schedule)
        return config
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


class PrintableFormatter(logging.Formatter):
    """Escapes control characters in each message: input quoted in a log line (a
    manifest's path, a peer's text) can neither forge a line nor drive the terminal."""

    def __init__(self, fmt: str) -> None:
        """A formatter of `fmt` (%-style)."""
        from meshmedia.manifest import printable  # noqa: PLC0415 - keeps --help fast

        super().__init__(fmt)
        self._printable = printable

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The line of `record`, its message made printable (a traceback stays as it is)."""
        record.message = self._printable(record.message)
        return super().formatMessage(record)


def setup_logging(level: str) -> None:
    """Log to stderr, one line per event, in a form that reads well in journalctl."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler])


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
