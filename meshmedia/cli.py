"""The `meshmedia` command line: maps options onto a Config and calls the library.

Every option is also read from the environment (see config.ENVIRONMENT); the
command only maps. Library errors become one clear line and exit code 2
(config) or 1 (runtime), never a traceback.

The commands live in role-named modules and are attached to the group here:
cli_serve (serve, publish), cli_sync (sync, status), cli_tools (keygen,
manifest validate, doctor); the options they share are in cli_options.
"""

from __future__ import annotations

import click

from . import __version__
from .cli_options import (
    SIZE,
    SizeParam,
    build_config,
    common_options,
    http_options,
    library_errors,
    setup_logging,
)
from .cli_serve import publish, serve
from .cli_sync import status, sync
from .cli_tools import doctor, keygen, manifest

__all__ = [
    "SIZE",
    "SizeParam",
    "build_config",
    "cli",
    "common_options",
    "http_options",
    "library_errors",
    "main",
    "setup_logging",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshmedia")
def cli() -> None:
    """Share a media library among family and friends over BitTorrent.

    \b
    Example:
      meshmedia serve --share ~/share
    """


# Registration order is the order the commands were defined in before the split.
for _command in (serve, sync, keygen, manifest, status, doctor, publish):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the console script."""
    cli()
