"""`meshmedia select`: show or change which items the client downloads (selection.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .options import SIZE, build_config, library_errors


@click.command(name="select")
@click.argument("rules", nargs=-1)
@click.option(
    "--manifest-url",
    metavar="URL",
    help="Change the rules of this followed manifest only (default: every manifest).",
)
@click.option("--remove", multiple=True, metavar="RULE", help="Drop a rule (repeatable).")
@click.option("--max-size", type=SIZE, help="Skip items larger than this (4G; 0 = no cap).")
@click.option("--clear", is_flag=True, help="Drop every rule and the cap first.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="The client's state folder.")
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@library_errors
def select(rules: tuple[str, ...], **params: Any) -> None:
    """Choose what the client syncs: add include rules, `!` exclude rules, a size cap.

    A rule is a glob on the item's path: `*` and `?` stay within a folder, `**`
    crosses folders, a rule without `/` matches the file name anywhere. An item
    is synced when it matches an include rule (or there is none), no exclude
    rule, and the size cap. A running `meshmedia sync` picks a change up within
    a second: newly selected items start, unselected ones stop (their files stay
    unless --delete-removed). With no argument: print the rules.

    \b
    Example:
      meshmedia select 'Movies/Kids/**' '!*.iso' --max-size 8G
      meshmedia select --remove '!*.iso'
      meshmedia select --clear
    """
    from meshmedia.client.selection import FILE_NAME, edit_file  # noqa: PLC0415

    config = build_config({"state_dir": params["state_dir"], "env_file": params["env_file"]})
    changes = rules or params["remove"] or params["max_size"] is not None or params["clear"]
    if not changes:
        path = config.state_dir / FILE_NAME
        text = path.read_text(encoding="utf-8") if path.exists() else "{}\n"
        click.echo(text, nl=False)
        if config.select or config.max_size:
            given = {"rules": list(config.select), "max_size": config.max_size}
            click.echo(f"from the settings (every manifest): {json.dumps(given)}")
        return
    doc = edit_file(
        config.state_dir,
        params["manifest_url"],
        add=rules,
        remove=params["remove"],
        max_size=params["max_size"],
        clear=params["clear"],
    )
    click.echo(json.dumps(doc, indent=2, sort_keys=True))
