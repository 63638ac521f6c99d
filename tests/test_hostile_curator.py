"""The curator under hostile or careless input: links and odd names in the share,
overlapping and reserved item paths, a SIGKILL after an acknowledged write, file modes.

Real parts throughout: Store, Engine, ManifestStore and Publisher on tmp_path, and
`meshmedia serve` child processes for what a user sees.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
import requests

from meshmedia.errors import PublishError
from tests.helpers import make_config, random_file, wait_for
from tests.test_curator import GROUP, CuratorProcess
from tests.test_publisher import Curator, running

LINK_RULE = "never follows a symbolic link"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def torrent_names(curator: Curator, info_hash: str) -> list[str]:
    """The file names of a published torrent, from its raw info dict (pad files left out)."""
    data = curator.publisher.torrent_bytes(info_hash)
    assert data is not None
    info = lt.bdecode(data)[b"info"]
    top = info[b"name"].decode()
    files = info.get(b"files", [{b"path": []}])
    return sorted(
        "/".join([top, *(p.decode() for p in f[b"path"])])
        for f in files
        if b"p" not in f.get(b"attr", b"")
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A private file outside every share: what a link in the share would leak."""
    return random_file(tmp_path / "private" / "id_rsa", 4000, seed=99)


# -- finding 2: links in the share --------------------------------------------------


def test_links_inside_a_published_folder_are_skipped_with_a_warning(
    tmp_path: Path, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(make_config(tmp_path, "curator")) as curator:
        show = curator.share / "Show"
        random_file(show / "ep1.mkv", 50_000, seed=1)
        random_file(curator.share / "other.mkv", 1000, seed=2)
        (show / "poster.jpg").symlink_to(outside)  # the reported leak
        (show / "extras").symlink_to(outside.parent, target_is_directory=True)
        (show / "same.mkv").symlink_to(curator.share / "other.mkv")  # stays inside the share
        (show / "dangling.mkv").symlink_to(tmp_path / "nowhere")
        with caplog.at_level(logging.WARNING, logger="meshmedia"):
            item = curator.publisher.publish(show)
        assert [f["path"] for f in item.extra["files"]] == ["ep1.mkv"]
        assert torrent_names(curator, item.info_hash or "") == ["Show/ep1.mkv"]
        assert item.size == 50_000
        for name in ("poster.jpg", "extras", "same.mkv", "dangling.mkv"):
            assert f"skipping symbolic link {show / name}: " in caplog.text, name
        assert LINK_RULE in caplog.text


def test_a_link_at_the_top_or_on_the_way_is_refused(tmp_path: Path) -> None:
    with running(make_config(tmp_path, "curator")) as curator:
        real = random_file(curator.share / "Real" / "film.mkv", 2000, seed=3)
        (curator.share / "alias.mkv").symlink_to(real)
        (curator.share / "Alias").symlink_to(real.parent, target_is_directory=True)
        for path in (curator.share / "alias.mkv", curator.share / "Alias" / "film.mkv"):
            with pytest.raises(PublishError, match=f"is a symbolic link; .*{LINK_RULE}"):
                curator.publisher.publish(path)
        assert curator.manifests.get("default").items == ()
        assert curator.publisher.seeds() == []


def swap_on_open(
    monkeypatch: pytest.MonkeyPatch, target: Path, swap: Callable[[], None]
) -> list[bool]:
    """Run `swap` just before the first os.open of `target` by its full path (the
    hasher's open, after the walk checked it): the race a local user would win."""
    real_open, done = os.open, []

    def spying_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if not done and os.fspath(path) == str(target):
            done.append(True)
            swap()
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    return done


def test_a_file_swapped_for_a_link_after_the_check_is_never_read(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(make_config(tmp_path, "curator")) as curator:
        target = random_file(curator.share / "film.mkv", 3000, seed=4)

        def swap() -> None:
            target.unlink()
            target.symlink_to(outside)

        swapped = swap_on_open(monkeypatch, target, swap)
        with pytest.raises(PublishError, match=r"film\.mkv is a symbolic link"):
            curator.publisher.publish(target)
        assert swapped
        assert curator.manifests.get("default").items == ()


def test_a_folder_swapped_for_a_link_during_the_publish_is_refused(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(make_config(tmp_path, "curator")) as curator:
        season = curator.share / "Show" / "Season"
        target = random_file(season / "id_rsa", 3000, seed=5)  # the outside file's name

        def swap() -> None:
            season.rename(curator.share / "Show" / ".old")
            season.symlink_to(outside.parent, target_is_directory=True)

        swapped = swap_on_open(monkeypatch, target, swap)
        with pytest.raises(PublishError, match="id_rsa was replaced"):
            curator.publisher.publish(curator.share / "Show")
        assert swapped
        assert curator.manifests.get("default").items == ()


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_serve_never_publishes_a_link(tmp_path: Path, outside: Path, polling: bool) -> None:
    """Reconcile at start, the watcher, and POST /seed each skip links, naming them."""
    curator = CuratorProcess(tmp_path / "c", polling=polling)
    share = curator.share
    random_file(share / "real.mkv", 20_000, seed=6)
    random_file(share / "Show" / "ep1.mkv", 30_000, seed=7)
    (share / "Show" / "poster.jpg").symlink_to(outside)
    (share / "in-link.mkv").symlink_to(share / "real.mkv")
    (share / "out-link.mkv").symlink_to(outside)
    (share / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    try:
        curator.start()
        wait_for(lambda: set(curator.items()) == {"real.mkv", "Show/ep1.mkv"}, timeout=30)
        for name in ("in-link.mkv", "out-link.mkv", "linkdir", "Show/poster.jpg"):
            line = f"skipping symbolic link {share / name}: "
            wait_for(lambda line=line: line in curator.log_text(), timeout=30, describe=line.strip)
        (share / "late-link.mkv").symlink_to(outside)  # seen by the watcher
        late = f"skipping symbolic link {share / 'late-link.mkv'}: "
        wait_for(lambda: late in curator.log_text(), timeout=30, describe=curator.log_text)

        token = (curator.state / "token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        seed = curator.url + "/seed"
        answer = requests.post(seed, json={"path": str(share / "Show")}, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [f["path"] for f in answer.json()["item"]["files"]] == ["ep1.mkv"]
        refused = requests.post(
            seed, json={"path": str(share / "in-link.mkv")}, headers=auth, timeout=60
        )
        assert refused.status_code == 400
        assert "in-link.mkv is a symbolic link" in refused.json()["error"]
        published = curator.get(f"/manifest/{GROUP}.json")["items"]
        assert sha_list(published).isdisjoint({sha256_of(outside)})
        assert "Traceback" not in curator.log_text()
    finally:
        curator.kill()


def sha_list(items: list[dict[str, Any]]) -> set[str]:
    found = {i.get("sha256") for i in items}
    found |= {f.get("sha256") for i in items for f in i.get("files", [])}
    return {s for s in found if s}
