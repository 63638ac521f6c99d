"""Selection as real processes: rules from flags, from `.env`, and from the file that
`meshmedia select` edits; a change on a running client starts and stops items (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from meshmedia.client.selection import Choice, Selection, edit_file, parse_rules
from tests.browser import Browser
from tests.daemons import MIB, Client, Curator, Daemon
from tests.helpers import random_file, run_meshmedia, wait_for

ROWS = """JSON.stringify([...document.querySelectorAll("tr[data-path]")].map((tr) =>
    [tr.dataset.path, tr.querySelector(".state").textContent,
     tr.querySelector(".why").textContent]))"""
FILES = {
    "Movies/Kids/Cartoon.mkv": 1,
    "Movies/Adult.mkv": 1,
    "Movies/Kids/disc.iso": 1,
    "Big.mkv": 3,
}


def started_curator(tmp_path: Path, stop_later: list[Daemon]) -> Curator:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    for number, (path, mib) in enumerate(FILES.items()):
        random_file(curator.share / path, mib * MIB, seed=number)
    curator.start()
    curator.wait_items(len(FILES))
    return curator


def on_disk(client: Client) -> set[str]:
    return {p.relative_to(client.media).as_posix() for p in client.media.rglob("*.*")
            if ".meshmedia" not in p.parts}  # fmt: skip


def test_rules_from_flags_and_from_env(tmp_path: Path, stop_later: list[Daemon]) -> None:
    curator = started_curator(tmp_path, stop_later)
    flagged = Client(tmp_path / "flags", [curator.manifest_url])
    result = flagged.once("--select", "Movies/Kids/**", "--select", "!*.iso")
    assert result.returncode == 0, result.stderr
    assert "1 in place, 0 not, 3 skipped by selection" in result.stdout
    assert on_disk(flagged) == {"Movies/Kids/Cartoon.mkv"}

    from_env = Client(tmp_path / "env", [curator.manifest_url])
    (from_env.base / ".env").write_text(
        "MESHMEDIA_MAX_SIZE=2M\nMESHMEDIA_SELECT='!Movies/Adult.mkv'\n"
    )
    result = from_env.once()
    assert result.returncode == 0, result.stderr
    assert "2 in place, 0 not, 2 skipped by selection" in result.stdout
    assert on_disk(from_env) == {"Movies/Kids/Cartoon.mkv", "Movies/Kids/disc.iso"}


def test_meshmedia_select_changes_a_running_client(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = started_curator(tmp_path, stop_later)
    client = Client(tmp_path / "client", [curator.manifest_url])
    state = str(client.base / "state")
    chosen = run_meshmedia("select", "--state-dir", state, "Movies/**", "!*.iso")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout) == {"*": {"max_size": 0, "rules": ["Movies/**", "!*.iso"]}}
    stop_later.append(client)
    client.start()
    wait_for(lambda: client.placed("Movies/Adult.mkv") and client.placed("Movies/Kids/Cartoon.mkv"))
    items = {i["path"]: i for i in (client.status() or {})["items"]}
    assert items["Big.mkv"]["state"] == "skipped"
    assert items["Movies/Kids/disc.iso"]["error"] == "not selected: excluded by !*.iso"
    shown = run_meshmedia("status", "--url", f"http://127.0.0.1:{client.status_port}")
    assert "skipped by selection: 2" in shown.stdout, shown.stdout + shown.stderr

    changed = run_meshmedia("select", "--state-dir", state, "--clear", "Big.mkv")
    assert changed.returncode == 0, changed.stderr
    wait_for(lambda: client.placed("Big.mkv"), timeout=60, describe=client.text)

    def stopped() -> bool:
        status = client.status() or {}
        states = {i["path"]: i["state"] for i in status["items"]}
        names = {t["name"] for t in status["engine"]["torrents"]}
        return states["Movies/Adult.mkv"] == "skipped" and "Adult.mkv" not in names

    wait_for(stopped, timeout=30, describe=client.text)
    assert on_disk(client) == {"Big.mkv", "Movies/Adult.mkv", "Movies/Kids/Cartoon.mkv"}  # kept


def test_rule_matching() -> None:
    choice = Choice(parse_rules(["Movies/Kids/**", "!*.iso", "Shows"]), max_size=100)
    assert choice.skip_reason("Movies/Kids/a/b.mkv", 10) is None
    assert choice.skip_reason("Shows/S01/e1.mkv", 10) is None
    assert choice.skip_reason("Shows", 10) is None
    assert choice.skip_reason("Movies/Kids/x.iso", 10) == "not selected: excluded by !*.iso"
    assert "no include rule" in str(choice.skip_reason("Movies/Other.mkv", 10))
    assert "size cap" in str(choice.skip_reason("Movies/Kids/big.mkv", 101))
    assert Choice(parse_rules(["*.mkv"])).skip_reason("a/b/c.mkv", None) is None
    assert Choice(parse_rules(["M?vies/*"])).skip_reason("Movies/a/b.mkv", None) is None


def test_the_client_status_page_shows_what_selection_skips(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = started_curator(tmp_path, stop_later)
    client = Client(tmp_path / "client", [curator.manifest_url])
    stop_later.append(client)
    client.start("--select", "!*.iso", "--max-size", "2M")
    wait_for(lambda: client.placed("Movies/Adult.mkv") and client.placed("Movies/Kids/Cartoon.mkv"))
    with Browser() as browser:
        browser.open(f"http://127.0.0.1:{client.status_port}/")

        def rows() -> dict[str, list[str]]:
            return {path: rest for path, *rest in json.loads(browser.evaluate(ROWS) or "[]")}

        shown = wait_for(lambda: len(rows()) == len(FILES) and rows(), timeout=30)
        assert shown["Movies/Kids/disc.iso"] == ["skipped", "not selected: excluded by !*.iso"]
        assert shown["Big.mkv"][0] == "skipped"
        assert "over the size cap" in shown["Big.mkv"][1]
        assert shown["Movies/Adult.mkv"] == ["placed", ""]
        text = browser.evaluate("document.body.innerText")
        assert "2 skipped by selection" in text
        assert "limits now: up unlimited, down unlimited" in text


def test_select_edits_rules_per_manifest(tmp_path: Path) -> None:
    one, two = "http://a:5000/manifest/one.json", "http://a:5000/manifest/two.json"
    edit_file(tmp_path, None, add=["!*.iso"])
    edit_file(tmp_path, one, add=["Movies/**", "Shows/**"], max_size=100)
    edit_file(tmp_path, one, remove=["Shows/**"])
    selection = Selection(tmp_path, ["!*.nfo"], max_size=1000)
    assert [r.text for r in selection.choice(one).rules] == ["!*.nfo", "!*.iso", "Movies/**"]
    assert selection.choice(one).max_size == 100  # the smallest cap holds
    assert selection.choice(two).skip_reason("Shows/a.mkv", 10) is None
    assert selection.choice(two).skip_reason("x.iso", 10) == "not selected: excluded by !*.iso"
    assert not selection.reload()  # unchanged
    edit_file(tmp_path, None, clear=True)
    assert selection.reload()
    assert selection.choice(two).skip_reason("x.iso", 10) is None
    (tmp_path / "selection.json").write_text('{"*": {"rules": "oops"}}')
    assert not selection.reload()  # a bad edit keeps the rules read before (logged)
    assert [r.text for r in selection.choice(one).rules] == ["!*.nfo", "Movies/**"]
