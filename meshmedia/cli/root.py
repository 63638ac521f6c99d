"""The `meshmedia` command line: maps options onto a Config and calls the library.

Every option is also read from the environment (see config.ENVIRONMENT); the
command only maps. Library errors become one clear line and exit code 2
(config) or 1 (runtime), never a traceback.

The commands live in role-named modules and are attached to the group here:
serve.py (serve, publish), sync.py (sync, status), tools.py (keygen,
manifest validate, doctor), groups.py (invite, join, members, revoke); the
options they share are in options.py.
"""

from __future__ import annotations

import click

from meshmedia import __version__

from .groups import invite, join, members, revoke
from .select import select
from .serve import publish, serve
from .sync import status, sync
from .tools import doctor, keygen, manifest


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshmedia")
def cli() -> None:
    """Share a media library among family and friends over BitTorrent.

    \b
    Example:
      meshmedia serve --share ~/share
    """


# Registration order is the order the commands were defined in before the split.
for _command in (serve, sync, keygen, manifest, status, doctor, publish, select):
    cli.add_command(_command)
for _command in (invite, join, members, revoke):  # private groups (issue 14)
    cli.add_command(_command)


def main() -> None:
    """Entry point of the console script."""
    cli()
