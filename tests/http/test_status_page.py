"""The curator's live status page, loaded in a real headless Chromium."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, Browser
from tests.daemons import Curator, Daemon
from tests.helpers import random_file, wait_for

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)

ROWS = """JSON.stringify([...document.querySelectorAll("tr[data-path]")].map(
    (tr) => [tr.dataset.path, tr.querySelector(".state").textContent]))"""


def test_browsers_get_html_and_programs_get_json(tmp_path: Path, stop_later: list[Daemon]) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    curator.start()
    base = f"http://127.0.0.1:{curator.port}/"
    html = urllib.request.Request(base, headers={"Accept": "text/html,application/xhtml+xml"})
    with urllib.request.urlopen(html, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/html")
        assert b"<title>meshmedia</title>" in answer.read()
    with urllib.request.urlopen(base, timeout=10) as answer:
        assert json.loads(answer.read())["status"] == "ok"


def test_page_shows_published_items_and_follows_changes(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    curator.start()
    random_file(curator.share / "first.mkv", 64 * 1024)
    curator.wait_items(1)
    with Browser() as browser:
        browser.open(f"http://127.0.0.1:{curator.port}/")

        def rows() -> list[list[str]]:
            return json.loads(browser.evaluate(ROWS) or "[]")

        assert wait_for(lambda: rows() == [["first.mkv", "seeding"]], timeout=30)
        assert "version 1" in browser.evaluate("document.body.innerText")
        random_file(curator.share / "second.mkv", 64 * 1024)  # the page refreshes by itself
        wait_for(lambda: len(rows()) == 2, timeout=30)
        assert sorted(rows()) == [["first.mkv", "seeding"], ["second.mkv", "seeding"]]
        (curator.share / "first.mkv").unlink()
        wait_for(lambda: rows() == [["second.mkv", "seeding"]], timeout=30)
        assert browser.evaluate("document.getElementById('error').textContent") == ""
