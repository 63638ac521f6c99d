"""The `meshmedia` command line: maps options onto a Config and calls the library."""

from __future__ import annotations

import click

from . import __version__


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
    cli(auto_envvar_prefix=None)
