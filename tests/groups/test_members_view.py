"""Members' reports: `meshmedia members` and the status page's members x items view.

A joined home runs `meshmedia sync`; what it has reaches the curator within
the bounds privacy.md 3.5 promises (a report within ~1 s of a change; the page
refreshes every second), checked in a real headless Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, Browser
from tests.daemons import Daemon
from tests.groups.nodes import Home, PrivateCurator
from tests.helpers import random_file, run_meshmedia, wait_for

CELLS = """JSON.stringify([...document.querySelectorAll("table.members tr[data-member]")].map(
    (tr) => [tr.dataset.member,
             [...tr.querySelectorAll("td.cell")].map((td) => td.textContent)]))"""
SHOWN = 5.0  # privacy.md 3.5 / the issue: a home's change shows within 5 s


def _members(curator: PrivateCurator) -> str:
    listed = run_meshmedia("members", env={"MESHMEDIA_PORT": str(curator.port)})
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


def test_members_lists_what_a_home_has(
    curator: PrivateCurator, tmp_path: Path, stop_later: list[Daemon]
) -> None:
    random_file(curator.share / "first.mkv", 64 * 1024, seed=1)
    wait_for(curator.items, 60, 0.2, curator.text)
    home = Home(tmp_path / "home")
    home.join(curator.invite("--no-qr", "--name", "grandma"))
    stop_later.append(home)
    home.start()
    wait_for(lambda: home.placed() == {"first.mkv"}, 60, 0.2, home.text)
    wait_for(lambda: "grandma  group family  1/1 placed" in _members(curator), SHOWN, 0.2)
    random_file(curator.share / "second.mkv", 64 * 1024, seed=2)
    wait_for(lambda: home.placed() == {"first.mkv", "second.mkv"}, 60, 0.2, home.text)
    line = wait_for(lambda: "2/2 placed" in _members(curator) and _members(curator), SHOWN, 0.2)
    assert "0 failed" in line
    assert "version " in line
    assert "last seen 20" in line


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_status_page_shows_members_by_items(
    curator: PrivateCurator, tmp_path: Path, stop_later: list[Daemon]
) -> None:
    random_file(curator.share / "first.mkv", 64 * 1024, seed=1)
    wait_for(curator.items, 60, 0.2, curator.text)
    home = Home(tmp_path / "home")
    home.join(curator.invite("--no-qr", "--name", "grandma"))
    stop_later.append(home)
    with Browser() as browser:
        browser.open(f"http://127.0.0.1:{curator.port}/")

        def cells() -> list[list[object]]:
            return list(json.loads(browser.evaluate(CELLS) or "[]"))

        wait_for(lambda: cells() == [["grandma", ["\u2014"]]], 30, 0.2)  # joined, no report yet
        home.start()
        wait_for(lambda: home.placed() == {"first.mkv"}, 60, 0.2, home.text)
        wait_for(lambda: cells() == [["grandma", ["placed"]]], SHOWN, 0.1)
        random_file(curator.share / "second.mkv", 64 * 1024, seed=2)
        wait_for(lambda: home.placed() == {"first.mkv", "second.mkv"}, 60, 0.2, home.text)
        wait_for(lambda: cells() == [["grandma", ["placed", "placed"]]], SHOWN, 0.1)
        run_meshmedia("revoke", "grandma", "--state-dir", str(curator.state))
        wait_for(lambda: "(revoked)" in browser.evaluate("document.body.innerText"), SHOWN, 0.1)
        assert browser.evaluate("document.getElementById('error').textContent") == ""
