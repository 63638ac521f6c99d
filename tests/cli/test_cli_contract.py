"""The command line is a contract: every command and option main had before the layout
(issue 13) is still there, `--help` exits 0 and an unknown flag is a usage error (2).

New options and commands may be added (the pin is a floor, so other work can extend the
command line without touching this file); none may disappear or change its name.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from meshmedia.cli import cli
from tests.helpers import run_meshmedia

# (options, arguments) of each command at the layout's start (main, 2026-12-01).
SHARED = ["--dht", "--dht-bootstrap", "--download-limit", "--env-file", "--listen-host"]
SHARED += ["--listen-port", "--log-level", "--lsd", "--natpmp", "--no-dht", "--no-lsd"]
SHARED += ["--no-natpmp", "--no-upnp", "--state-dir", "--transport", "--upload-limit", "--upnp"]
SHARED += ["--ssl-listen-port"]  # issue 14
PINNED: dict[str, tuple[list[str], list[str]]] = {
    "": (["--version"], []),
    "doctor": ([*SHARED, "--download-dir", "--host", "--port", "--role", "--token"], []),
    "keygen": (["--force", "--state-dir"], []),
    "manifest": ([], []),
    "manifest validate": ([], ["source"]),
    "publish": (
        ["--dest-path", "--env-file", "--group", "--state-dir", "--title", "--token", "--url"],
        ["path"],
    ),
    "serve": (
        [
            *SHARED,
            "--advertise-host",
            "--group",
            "--host",
            "--poll-quiet",
            "--port",
            "--settle-time",
            "--share",
            "--token",
        ],
        [],
    ),
    "status": (["--env-file", "--json", "--url"], []),
    "sync": (
        [
            *SHARED,
            "--allow-trackers",
            "--delete-removed",
            "--download-dir",
            "--follow",
            "--group",
            "--interval",
            "--jellyfin-api-key",
            "--jellyfin-path-map",
            "--jellyfin-url",
            "--keep-removed",
            "--manifest-url",
            "--min-free",
            "--no-allow-trackers",
            "--once",
            "--status-port",
            "--trust",
        ],
        [],
    ),
}


def commands(
    group: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    """Every command under `group` (itself included) by its words: "manifest validate"."""
    yield " ".join(path), group
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from commands(command, (*path, name))


def signature(command: click.Command) -> tuple[set[str], list[str]]:
    """The option spellings and the argument names of a command."""
    options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
    options |= {o for p in command.params if isinstance(p, click.Option) for o in p.secondary_opts}
    return options, [p.name or "" for p in command.params if isinstance(p, click.Argument)]


def test_every_command_and_option_of_before_the_layout_is_still_there() -> None:
    found = dict(commands(cli))
    assert set(PINNED) <= set(found)
    for name, (options, arguments) in PINNED.items():
        now_options, now_arguments = signature(found[name])
        assert set(options) <= now_options, (name, set(options) - now_options)
        assert now_arguments == arguments, name


@pytest.mark.parametrize("name", sorted(PINNED))
def test_help_exits_0_and_an_unknown_flag_is_a_usage_error(name: str) -> None:
    words = name.split()
    runner = CliRunner()
    shown = runner.invoke(cli, [*words, "--help"], prog_name="meshmedia")
    assert shown.exit_code == 0, shown.output
    assert f"Usage: meshmedia {name}".rstrip() in shown.output
    bad = runner.invoke(cli, [*words, "--no-such-flag"], prog_name="meshmedia")
    assert bad.exit_code == 2, bad.output
    assert "No such option '--no-such-flag'" in bad.output


def test_the_installed_command_exits_2_on_an_unknown_flag() -> None:
    done = run_meshmedia("sync", "--no-such-flag")
    assert done.returncode == 2
    assert "No such option" in done.stderr
    assert "Traceback" not in done.stderr
