"""The client against hostile input: torrents, manifests and servers chosen by an attacker.

Real parts throughout: a libtorrent seeder serving hand-built torrents, real
HTTP servers, `meshmedia sync` as a process or a SyncClient with a real Engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from meshmedia import torrentinfo
from meshmedia.client import MANIFEST_KEY, SyncClient
from meshmedia.engine import Engine
from meshmedia.errors import EngineError
from meshmedia.store import ClientItem, Store
from tests.daemons import Client
from tests.helpers import make_config, meshmedia_command, wait_for
from tests.hostile import Seeder, Site, files_under, hand_built

MANIFEST = "/manifest/default.json"


def manifest(*items: dict[str, Any]) -> bytes:
    return json.dumps({"group": "default", "version": 1, "items": list(items)}).encode()


def test_torrent_names_with_dotdot_or_absolute_never_write_outside(
    tmp_path: Path, seeder: Seeder, site: Site
) -> None:
    """Finding 1 (critical): the placer re-parsed the raw info dict and fed
    `x/../../../victim/file.txt` to rename_file: files outside DOWNLOAD_DIR were
    overwritten ("1 in place"). Now each such item is refused by name."""
    victim = tmp_path / "victim" / "file.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    absolute = tmp_path / "abs-victim.txt"
    dotdot = hand_built(
        b"x",
        [
            ([b"..", b"..", b"..", b"victim", b"file.txt"], b"overwritten" * 50),
            ([b"ok.txt"], b"fine" * 10),
        ],
    )
    rooted = hand_built(b"y", [([str(absolute).encode()], b"rooted" * 40)])
    named = hand_built(b"../../../escape.txt", single=b"named" * 30)
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    for torrent in (dotdot, rooted, named, good):
        seeder.seed(torrent)
    site.body(
        MANIFEST,
        manifest(
            {"title": "Final", "path": "Final", "torrent": dotdot.magnet("x", seeder.port)},
            {"title": "Rooted", "path": "Rooted", "torrent": rooted.magnet("y", seeder.port)},
            {"title": "Named", "path": "Named.txt", "torrent": named.magnet("n", seeder.port)},
            {"title": "Good", "path": "Good/film.mkv", "torrent": good.magnet("g", seeder.port)},
        ),
    )
    before = files_under(tmp_path, tmp_path / "client", tmp_path / "seeder")
    client = Client(tmp_path / "client", [site.url + MANIFEST])
    result = client.once(timeout=180)
    after = files_under(tmp_path, tmp_path / "client", tmp_path / "seeder")
    assert after == before, "files outside DOWNLOAD_DIR changed"
    assert victim.read_bytes() == b"precious"
    assert not absolute.exists()
    assert (client.media / "Good" / "film.mkv").read_bytes() == good.payloads[0]
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "1 in place, 3 not" in out
    assert "Final: refused:" in out
    assert "'x/../../../victim/file.txt'" in out
    assert "Rooted: refused:" in out
    assert "Named.txt: refused:" in out
    assert not (client.media / "Final").exists()
    assert not (client.media / "Rooted").exists()
    for path in files_under(tmp_path / "client"):
        assert path.resolve().is_relative_to(tmp_path / "client")


def _rejected(client: Client, url: str) -> str:
    return " ".join((client.status() or {}).get("rejected", {}).get(url, []))


def test_crash_inputs_are_refused_by_name_and_the_daemon_lives(
    tmp_path: Path, seeder: Seeder, site: Site, stop_later: list[Any]
) -> None:
    """Finding 4: each of these raised out of the client (a dead fetcher thread that
    never polled again, or a daemon exit), and several again at every start."""
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    seeder.seed(good)
    good_item = {"title": "Good", "path": "Good.mkv", "torrent": good.magnet("g", seeder.port)}
    other = "magnet:?xt=urn:btih:" + "cd" * 20
    url = site.body(MANIFEST, manifest(good_item))
    client = Client(tmp_path / "client", [url])
    stop_later.append(client)
    client.start()
    wait_for(lambda: client.placed("Good.mkv"), timeout=60, describe=client.text)
    hostile: list[tuple[bytes, str]] = [
        (
            manifest(good_item, {"path": "bad\ud800.mkv", "torrent": other}),
            "path contains a lone surrogate",
        ),
        (
            manifest(
                good_item,
                {"path": "A", "torrent": other},
                {"path": "A/b", "torrent": other[:-2] + "ef"},
            ),
            "item 2 (A/b): path lies inside item 1 ('A')",
        ),
        (
            manifest(good_item, {"path": "Other.mkv", "torrent": good_item["torrent"]}),
            f"its torrent {good.info_hash} is already listed at 'Good.mkv'",
        ),
    ]
    for doc, reason in hostile:
        site.body(MANIFEST, doc)
        wait_for(lambda r=reason: r in _rejected(client, url), timeout=30, describe=client.text)
        assert client.alive
    site.body(MANIFEST, b"[" * 200_000)
    wait_for(lambda: "nested deeper than 32 levels" in client.text(), timeout=30)
    site.body(MANIFEST, manifest(good_item, {"path": "Later.mkv", "torrent": other}))
    wait_for(lambda: "Later.mkv" in json.dumps(client.status()), timeout=30, describe=client.text)
    assert client.alive
    assert client.stop() == 0
    client.start()  # what it kept as the last good manifest starts cleanly
    wait_for(lambda: client.placed("Good.mkv"), timeout=60, describe=client.text)
    assert client.alive
    assert "Traceback" not in client.text()


def test_a_bad_manifest_kept_by_an_earlier_version_does_not_stop_start_up(
    tmp_path: Path, seeder: Seeder, site: Site, stop_later: list[Any]
) -> None:
    """A bad manifest kept as the last good one crash-looped the daemon at every start."""
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    seeder.seed(good)
    good_item = {"title": "Good", "path": "Good.mkv", "torrent": good.magnet("g", seeder.port)}
    url = site.body(MANIFEST, manifest(good_item))
    client = Client(tmp_path / "client", [url])
    stop_later.append(client)
    kept = manifest(
        good_item, {"path": "bad\ud800.mkv", "torrent": "magnet:?xt=urn:btih:" + "ab" * 20}
    )
    with Store.in_state_dir(client.base / "state") as store:
        store.put(MANIFEST_KEY + url, json.dumps({"etag": '"old"', "body": kept.decode()}))
    client.start()
    wait_for(lambda: client.placed("Good.mkv"), timeout=60, describe=client.text)
    assert client.alive
    assert "lone surrogate" in client.text()


class Local:
    """A SyncClient with a real Engine, in this process, following one manifest URL."""

    def __init__(self, tmp_path: Path, url: str, **config: Any) -> None:
        self.url = url
        self.config = make_config(tmp_path, "local", manifest_urls=(url,), interval=5, **config)
        self.media = self.config.download_dir
        self.store = Store.in_state_dir(self.config.state_dir)
        self.engine = Engine(self.config, self.store)
        self.client = SyncClient(self.config, self.store, self.engine, retry_base=3600)
        self.client.retries = False

    def settle(self, timeout: float = 60) -> None:
        wait_for(lambda: self.client.step() or self.client.settled(), timeout, 0.1)

    def state(self, path: str) -> ClientItem:
        found = self.store.client_item(self.url, path)
        assert found is not None
        return found

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture
def local(tmp_path: Path, site: Site) -> Iterator[Local]:
    node = Local(tmp_path, site.url + MANIFEST)
    try:
        yield node
    finally:
        node.close()


def test_a_truncated_torrent_url_fails_that_item_only(
    seeder: Seeder, site: Site, local: Local
) -> None:
    """urllib3's IncompleteRead escaped the client (it is no requests exception)."""
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    seeder.seed(good)
    cut = hand_built(b"cut.mkv", single=b"cut" * 5000)
    torrent_url = site.truncated("/t/cut.torrent", cut.data[:60], announced=len(cut.data))
    body = manifest(
        {"path": "Cut.mkv", "torrent": torrent_url},
        {"path": "Good.mkv", "torrent": good.magnet("g", seeder.port)},
    )
    assert local.client.apply(local.url, body)
    local.settle()
    assert local.state("Good.mkv").state == "placed"
    cut_state = local.state("Cut.mkv")
    assert cut_state.state == "failed"
    assert "cannot fetch the torrent" in (cut_state.error or "")
    assert "cut short" in (cut_state.error or "") or "IncompleteRead" in (cut_state.error or "")


def test_a_trickling_torrent_url_holds_up_neither_the_client_nor_other_items(
    seeder: Seeder, site: Site, local: Local
) -> None:
    """The trickle held the client lock (and every item planned after it) about 70 s."""
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    seeder.seed(good)
    slow = site.trickle("/t/slow.torrent", every=0.5)
    body = manifest(
        {"path": "Slow.mkv", "torrent": slow},
        {"path": "Good.mkv", "torrent": good.magnet("g", seeder.port)},
    )
    applied = threading.Event()
    threading.Thread(
        target=lambda: applied.set() if local.client.apply(local.url, body) else None, daemon=True
    ).start()
    assert applied.wait(30), "apply() waited on the trickling .torrent"

    def good_placed() -> bool:
        local.client.step()
        found = local.store.client_item(local.url, "Good.mkv")
        return found is not None and found.state == "placed"

    wait_for(good_placed, timeout=60, interval=0.1)
    assert site.hits.get("/t/slow.torrent") == 1
    assert local.state("Slow.mkv").state == "queued"  # its fetch still trickles


def test_a_trickling_torrent_url_is_cut_off_at_the_overall_deadline(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-read timeout never fires on one byte every 0.1 s: the whole fetch has a deadline."""
    monkeypatch.setattr(torrentinfo, "TORRENT_DEADLINE", 2.0, raising=False)
    url = site.trickle("/t/slow.torrent", every=0.1)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            torrentinfo.fetch_torrent(requests.Session(), url)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the fetch was still trickling after 30 s"
    (error,) = outcome
    assert isinstance(error, EngineError)
    assert "within 2 s" in str(error)


def test_trickled_headers_are_cut_off_at_the_deadline(site: Site) -> None:
    from meshmedia.bounded import ReadError, bounded_session, http_get  # noqa: PLC0415

    def route(handler: Any) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(10_000):
            if site.closing.wait(0.1):
                return
            handler.wfile.write(b"X-Slow: 1\r\n")
            handler.wfile.flush()

    site.routes["/slow-headers"] = route
    with bounded_session() as session, pytest.raises(ReadError, match="within 2 s"):
        http_get(session, site.url + "/slow-headers", deadline=2.0)


def test_manifest_validate_does_not_decode_a_gzip_bomb(site: Site) -> None:
    """`meshmedia manifest validate URL` decoded a 200 KB gzip bomb into 487 MB RSS."""
    url = site.gzip_bomb("/bomb.json", 400 << 20)
    measure = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(r.stdout + r.stderr)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", measure, *meshmedia_command("manifest", "validate", url)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    code, maxrss_kib = map(int, run.stdout.split("\n", 1)[0].split())
    print(f"gzip bomb of 400 MiB: validate exited {code}, peak RSS {maxrss_kib // 1024} MiB")
    assert code == 1
    assert "over the cap of 16777216 bytes once decoded" in run.stdout
    assert maxrss_kib < 200 * 1024


def _magnet_with_contacts(torrent: Any, seeder: Seeder, site: Site) -> str:
    tracker, web = site.url + "/announce", site.url + "/ws"
    return torrent.magnet("g", seeder.port) + f"&tr={tracker}&ws={web}"


@pytest.mark.parametrize("allowed", [False, True])
def test_trackers_and_web_seeds_are_used_only_when_allowed(
    tmp_path: Path, seeder: Seeder, site: Site, allowed: bool
) -> None:
    """`tr=`/`ws=` in magnets and announce/url-list in .torrent files made the client
    contact any host a manifest named; now only with --allow-trackers."""
    site.body("/announce", b"d14:failure reason4:nopee")
    site.body("/announce2", b"d14:failure reason4:nopee")
    good = hand_built(b"film.mkv", single=b"good film " * 3000)
    seeder.seed(good)
    other = hand_built(b"other.mkv", single=b"other" * 4000)
    listed = b"d8:announce" + b"%d:%s" % (len(site.url) + 10, (site.url + "/announce2").encode())
    listed += b"4:info" + other.data[len(b"d4:info") : -1]
    listed += b"8:url-listl%d:%se" % (len(site.url) + 4, (site.url + "/ws2").encode()) + b"e"
    torrent_url = site.body("/t/other.torrent", listed)
    body = manifest(
        {"path": "Good.mkv", "torrent": _magnet_with_contacts(good, seeder, site)},
        {"path": "Other.mkv", "torrent": torrent_url},
    )
    settings = {"allow_trackers": True} if allowed else {}  # the default is what is tested
    node = Local(tmp_path, site.url + MANIFEST, **settings)
    try:
        assert node.client.apply(node.url, body)

        def settled_enough() -> bool:
            node.client.step()
            return node.state("Good.mkv").state == "placed" and bool(
                node.engine.status(other.info_hash)
            )

        wait_for(settled_enough, timeout=60, interval=0.1)
        handles = [node.engine._table.handle(ih) for ih in (good.info_hash, other.info_hash)]
        trackers = [t["url"] for h in handles for t in h.trackers()]
        seeds = [url for h in handles for url in h.url_seeds()]
        if allowed:
            assert sorted(trackers) == [site.url + "/announce", site.url + "/announce2"]
            assert sorted(seeds) == [site.url + "/ws", site.url + "/ws2"]
            wait_for(lambda: site.hits.get("/announce2"), timeout=30)
        else:
            assert (trackers, seeds) == ([], [])
            assert not any(site.hits.get(p) for p in ("/announce", "/announce2", "/ws", "/ws2"))
    finally:
        node.close()


def test_two_manifests_cannot_nest_paths_or_share_a_torrent(local: Local) -> None:
    """Across followed manifests too: a path inside another manifest's item is skipped,
    and a torrent another manifest's item has is refused, naming that item."""
    ih = "ab" * 20
    first, second = local.url, local.url + "?other"
    assert local.client.apply(
        first, manifest({"path": "A", "torrent": f"magnet:?xt=urn:btih:{ih}"})
    )
    local.client.step()
    body = manifest(
        {"path": "A/b", "torrent": "magnet:?xt=urn:btih:" + "cd" * 20},
        {"path": "C", "torrent": f"magnet:?xt=urn:btih:{ih}&dn=again"},
    )
    assert local.client.apply(second, body)
    local.client.step()
    assert local.store.client_item(second, "A/b") is None
    refused = local.store.client_item(second, "C")
    assert refused is not None
    assert refused.state == "refused"
    assert refused.error == f"its torrent {ih} is already used by A"
    assert local.state("A").state == "downloading"
