"""The curator under hostile or careless input: links and odd names in the share,
overlapping and reserved item paths, a SIGKILL after an acknowledged write, file modes.

Real parts throughout: Store, Engine, ManifestStore and Publisher on tmp_path, and
`meshmedia serve` child processes for what a user sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
import requests

from meshmedia.errors import PublishError
from meshmedia.http import ManifestServer, routes
from meshmedia.manifest import (
    ManifestStore,
    SignatureError,
    generate_key,
    load_key,
    save_key,
    validate_item,
)
from meshmedia.store import Store
from tests.curator.test_curator import GROUP, CuratorProcess
from tests.curator.test_publisher import Curator, running
from tests.daemons import Client, Daemon
from tests.daemons import Curator as CuratorDaemon
from tests.helpers import free_port, make_config, random_file, run_meshmedia, wait_for

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
    random_file(Path(os.fsdecode(os.fsencode(share) + b"/caf\xe9.mkv")), 1000, seed=16)
    try:
        curator.start()
        wait_for(lambda: set(curator.items()) == {"real.mkv", "Show/ep1.mkv"}, timeout=30)
        latin1 = r"caf\xe9.mkv': its name is not valid UTF-8"
        wait_for(lambda: latin1 in curator.log_text(), timeout=30, describe=curator.log_text)
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
        assert set(curator.items()) == {"real.mkv", "Show"}  # the folder took ep1.mkv over
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


# -- finding 8: an acknowledged write survives a SIGKILL ------------------------------


def manual_item(path: str) -> dict[str, Any]:
    """An item as a script would POST it (its own info hash, so no two items share one)."""
    info_hash = hashlib.sha1(path.encode()).hexdigest()
    return {"title": path, "torrent": f"magnet:?xt=urn:btih:{info_hash}", "path": path}


LIBRARY = 40_000
"""Items of the manifest the curator starts with: every background write rewrites the
whole file (about 6 MB here), so on an idle disk the 200 can still outrun it."""


def test_an_acknowledged_post_survives_a_sigkill_right_after_the_answer(tmp_path: Path) -> None:
    curator = CuratorProcess(tmp_path / "c")
    library = [manual_item(f"Library/{n:05}.mkv") for n in range(LIBRARY)]
    folder = curator.state / "manifests"
    folder.mkdir(parents=True)
    document = {"group": GROUP, "version": 1, "updated_at": "", "items": library}
    (folder / f"{GROUP}.json").write_text(json.dumps(document))
    acknowledged = {i["path"] for i in library}
    version = 1

    def check_served() -> None:
        served = curator.get(f"/manifest/{GROUP}.json")
        missing = acknowledged - {i["path"] for i in served["items"]}
        assert not missing, f"{len(missing)} acknowledged items lost, e.g. {sorted(missing)[:3]}"
        assert served["version"] >= version, (served["version"], version)

    try:
        for round_ in range(3):
            curator.start()
            check_served()
            token = (curator.state / "token").read_text().strip()
            items = [manual_item(f"Round {round_}/{n:04}.mkv") for n in range(2000)]
            answer = requests.post(
                f"{curator.url}/manifest/{GROUP}.json",
                json={"items": items},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            curator.kill()  # SIGKILL the moment the answer is in
            assert answer.status_code == 200, answer.text
            acknowledged |= {i["path"] for i in items}
            version = answer.json()["version"]
        curator.start()
        check_served()
        assert "not closed cleanly" in curator.log_text()
    finally:
        curator.kill()


def test_a_write_that_cannot_reach_the_disk_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "DURABLE_TIMEOUT", 0.5)
    folder = tmp_path / "manifests"
    store = ManifestStore(folder)
    config = make_config(tmp_path, port=0)
    url = f"/manifest/{GROUP}.json"
    with ManifestServer(config, store, None, None, "t0ken") as server:
        auth = {"Authorization": "Bearer t0ken"}

        def post(path: str) -> requests.Response:
            body = {"items": [manual_item(path)]}
            return requests.post(server.url + url, json=body, headers=auth, timeout=30)

        assert post("first.mkv").status_code == 200  # reserves the next versions
        folder.rename(tmp_path / "away")
        folder.write_bytes(b"")  # the folder is now a file: every write fails
        answer = post("second.mkv")
        assert answer.status_code == 503, answer.text
        reason = answer.json()["error"]
        served = f"version 2 of {GROUP} is served but not yet on disk after 0.5 s ([Errno 20] "
        assert reason.startswith(served + "Not a directory: "), reason
        assert reason.endswith(".tmp'); a crash now would lose it"), reason
        assert answer.headers["Retry-After"] == "10"
        folder.unlink()
        (tmp_path / "away").rename(folder)
        assert store.flush(timeout=30)  # the failed batch was tried again
        on_disk = json.loads((folder / f"{GROUP}.json").read_bytes())
        assert [i["path"] for i in on_disk["items"]] == ["first.mkv", "second.mkv"]
        assert post("third.mkv").status_code == 200
    store.close()


def test_seed_answers_only_once_its_item_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "DURABLE_TIMEOUT", 0.5)
    config = make_config(tmp_path, "curator", port=0)
    with running(config) as curator:
        folder = curator.manifests.folder
        share = curator.share
        args = (config, curator.manifests, curator.publisher, curator.engine.snapshot, "t0ken")
        with ManifestServer(*args) as server:

            def seed(path: Path) -> requests.Response:
                return requests.post(
                    server.url + "/seed",
                    json={"path": str(path)},
                    headers={"Authorization": "Bearer t0ken"},
                    timeout=60,
                )

            assert seed(random_file(share / "a.mkv", 5000, seed=8)).status_code == 200
            folder.rename(tmp_path / "away")
            folder.write_bytes(b"")
            answer = seed(random_file(share / "b.mkv", 5000, seed=9))
            assert answer.status_code == 503, answer.text
            assert "the item 'b.mkv' is served but not yet on disk" in answer.json()["error"]
            folder.unlink()
            (tmp_path / "away").rename(folder)
            assert curator.manifests.flush(timeout=30)
            on_disk = json.loads((folder / "default.json").read_bytes())
            assert [i["path"] for i in on_disk["items"]] == ["a.mkv", "b.mkv"]


# -- finding 9: paths no client can place, names that are not UTF-8 ----------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ManifestServer]:
    store = ManifestStore(tmp_path / "manifests")
    with ManifestServer(make_config(tmp_path, port=0), store, None, None, "t0ken") as running_:
        yield running_
    store.close()


def post_items(
    server: ManifestServer, paths: list[str], replace: bool = False
) -> requests.Response:
    return requests.post(
        f"{server.url}/manifest/{GROUP}.json" + ("?replace=1" if replace else ""),
        json={"items": [manual_item(p) for p in paths]},
        headers={"Authorization": "Bearer t0ken"},
        timeout=30,
    )


@pytest.mark.parametrize(
    ("listed", "posted", "reason"),
    [
        (["Show/ep1.mkv"], ["Show"], "overlaps item 'Show/ep1.mkv'"),
        (["Show"], ["Show/ep1.mkv"], "overlaps item 'Show'"),
        (["A/B/c.mkv"], ["A/B"], "overlaps item 'A/B/c.mkv'"),
        (["A"], ["A/B/c.mkv"], "overlaps item 'A'"),
        # both in one body: the manifest parser refuses the second, naming the first
        ([], ["Show", "Show/ep1.mkv"], "item 1 (Show/ep1.mkv): path lies inside item 0 ('Show')"),
    ],
)
def test_overlapping_items_are_refused(
    server: ManifestServer, listed: list[str], posted: list[str], reason: str
) -> None:
    if listed:
        assert post_items(server, listed).status_code == 200
    before = requests.get(f"{server.url}/manifest/{GROUP}.json", timeout=30).json()
    answer = post_items(server, posted)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["error"]
    after = requests.get(f"{server.url}/manifest/{GROUP}.json", timeout=30).json()
    assert after == before  # nothing of the refused body was listed
    fine = post_items(server, ["Show.mkv", "Shows/x.mkv", "A B/c.mkv"])  # prefixes, no folder
    assert fine.status_code == 200, fine.text


def test_replace_checks_the_new_list_alone(server: ManifestServer) -> None:
    assert post_items(server, ["Show/ep1.mkv"]).status_code == 200
    assert post_items(server, ["Show"], replace=True).status_code == 200  # ep1 is gone
    assert post_items(server, ["Show", "Show/x"], replace=True).status_code == 400


@pytest.mark.parametrize("path", [".meshmedia/incomplete/x.mkv", ".MeshMedia/x.mkv", ".meshmedia"])
def test_items_inside_the_clients_own_folder_are_refused(server: ManifestServer, path: str) -> None:
    answer = post_items(server, [path])
    assert answer.status_code == 400, answer.text
    assert "inside .meshmedia/, the client's own folder" in answer.json()["error"]
    assert post_items(server, [".meshmedia-not/x.mkv", "a/.meshmedia/x.mkv"]).status_code == 200


def test_seed_refuses_what_no_client_can_place(tmp_path: Path) -> None:
    config = make_config(tmp_path, "curator", port=0)
    with running(config) as curator:
        args = (config, curator.manifests, curator.publisher, curator.engine.snapshot, "t0ken")
        source = random_file(curator.share / "clip.mkv", 5000, seed=10)
        curator.manifests.upsert("default", [validate_item(manual_item("Clips/old.mkv"))])
        with ManifestServer(*args) as server:

            def seed(dest_path: str) -> requests.Response:
                return requests.post(
                    server.url + "/seed",
                    json={"path": str(source), "dest_path": dest_path},
                    headers={"Authorization": "Bearer t0ken"},
                    timeout=60,
                )

            staging = seed(".meshmedia/incomplete/clip.mkv")
            assert staging.status_code == 400
            assert "dest_path: path '.meshmedia/incomplete/clip.mkv' is inside" in staging.text
            overlap = seed("Clips/old.mkv/clip.mkv")
            assert overlap.status_code == 400
            assert "overlaps item 'Clips/old.mkv'" in overlap.json()["error"]
            surrogate = seed("Clips/\udce9.mkv")
            assert surrogate.status_code == 400
            assert "lone surrogate" in surrogate.json()["error"]
            assert [i.path for i in curator.manifests.get("default").items] == ["Clips/old.mkv"]
            assert curator.publisher.seeds() == []  # the refused item seeds nothing
            assert curator.engine.snapshot().torrents == ()


def test_a_folder_item_takes_over_the_items_of_its_own_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(make_config(tmp_path, "curator")) as curator:
        show = curator.share / "Show"
        first = curator.publisher.publish(random_file(show / "ep1.mkv", 5000, seed=11))
        curator.publisher.publish(random_file(show / "ep2.mkv", 5000, seed=12))
        assert set(curator.items()) == {"Show/ep1.mkv", "Show/ep2.mkv"}  # as the watcher does
        with caplog.at_level(logging.INFO, logger="meshmedia"):
            folder = curator.publisher.publish(show)
        assert set(curator.items()) == {"Show"}
        assert [f["path"] for f in folder.extra["files"]] == ["ep1.mkv", "ep2.mkv"]
        assert curator.engine.status(first.info_hash or "") is None
        assert curator.publisher.published() == {show}
        assert "Show/ep1.mkv in default is now part of folder item Show" in caplog.text


def test_names_that_are_not_utf8_are_named_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(make_config(tmp_path, "curator")) as curator:
        share = os.fsencode(curator.share)
        latin1 = Path(os.fsdecode(share + b"/caf\xe9.mkv"))
        random_file(latin1, 3000, seed=13)
        with pytest.raises(PublishError, match=r"caf\\xe9\.mkv': its name is not valid UTF-8"):
            curator.publisher.publish(latin1)
        show = curator.share / "Show"
        random_file(show / "ep1.mkv", 3000, seed=14)
        random_file(Path(os.fsdecode(os.fsencode(show) + b"/poster-\xff.jpg")), 300, seed=15)
        with caplog.at_level(logging.WARNING, logger="meshmedia"):
            folder = curator.publisher.publish(show)
        assert [f["path"] for f in folder.extra["files"]] == ["ep1.mkv"]
        assert r"poster-\xff.jpg': its name is not valid UTF-8" in caplog.text
        assert set(curator.items()) == {"Show"}


# -- finding 9: modes of the state dir and of the signing key --------------------------


def modes(top: Path) -> dict[str, int]:
    """The mode of the folder and of everything under it, by relative path."""
    found = {".": stat.S_IMODE(top.stat().st_mode)}
    for path in top.rglob("*"):
        found[path.relative_to(top).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def open_ones(found: dict[str, int], top: Path) -> dict[str, str]:
    want = {p: 0o700 if (top / p).is_dir() else 0o600 for p in found}
    return {p: f"{m:04o}" for p, m in found.items() if m != want[p]}


def test_state_dirs_are_private_under_umask_000(tmp_path: Path, stop_later: list[Daemon]) -> None:
    curator = CuratorDaemon(tmp_path / "curator")
    client = Client(tmp_path / "client", [curator.manifest_url])
    stop_later.append(curator)
    random_file(curator.share / "Film.mkv", 300_000, seed=17)
    previous = os.umask(0)  # the children inherit it
    try:
        keygen = run_meshmedia("keygen", "--state-dir", str(curator.base / "state"))
        assert keygen.returncode == 0, keygen.stderr
        curator.start()
        curator.wait_items(1)
        done = client.once()
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    assert (client.media / "Film.mkv").exists()
    for state in (curator.base / "state", client.base / "state"):
        assert open_ones(modes(state), state) == {}, state
    assert "state.db" in modes(client.base / "state")  # its -wal and -shm left with it
    served = modes(curator.base / "state")  # still running: SQLite's -wal and -shm are there
    assert {"state.db", "state.db-wal", "state.db-shm", "token", "signing.key"} <= set(served)
    assert {"signing.pub", "manifests", "manifests/default.json"} <= set(served)


def test_an_open_state_dir_is_tightened_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    (state / "manifests").mkdir(parents=True)
    (state / "torrents").mkdir()
    for name in ("state.db", "token", "manifests/family.json", "torrents/x.torrent"):
        (state / name).write_bytes(b"")
    for path in (state, *state.rglob("*")):
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    own = tmp_path / "mine.txt"
    own.write_bytes(b"not meshmedia's")
    os.chmod(own, 0o644)
    with caplog.at_level(logging.WARNING, logger="meshmedia"):
        Store.in_state_dir(state).close()
    assert open_ones(modes(state), state) == {}
    assert f"state dir {state} had mode 0777 (open to other users); set it to 0700" in caplog.text
    assert f"set 6 file(s) and folder(s) in {state} to modes 0600/0700" in caplog.text
    assert stat.S_IMODE(own.stat().st_mode) == 0o644  # outside the state dir: left alone


def test_a_signing_key_open_to_others_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = save_key(state, generate_key())
    assert load_key(state) is not None
    os.chmod(key, 0o644)
    with pytest.raises(SignatureError, match=r"mode 0644\); run `chmod 600 .*signing\.key`"):
        load_key(state)
    share = tmp_path / "share"
    share.mkdir()
    serve = run_meshmedia(
        "serve", "--share", str(share), "--state-dir", str(state), "--port", str(free_port()),
        "--listen-port", "0", "--no-dht", "--no-lsd", "--no-upnp", "--no-natpmp", timeout=60,
    )  # fmt: skip
    assert serve.returncode == 1
    assert f"run `chmod 600 {key}`" in serve.stderr
    assert "Traceback" not in serve.stderr
    os.chmod(key, 0o600)
    assert load_key(state) is not None
