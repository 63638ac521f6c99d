"""`meshmedia sync` as a real process against a real `meshmedia serve` (or a plain
`python -m http.server` for the earlier manifest format)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import libtorrent as lt
import pytest

from meshmedia.http import request_seed
from tests.daemons import MIB, Client, Curator, Daemon, answers, sha256
from tests.helpers import free_port, random_file, run_meshmedia, wait_for
from tests.jellyfin_standin import JellyfinStandIn


class FinalPathWatcher(threading.Thread):
    """Polls final paths; whenever one exists it must already be complete and verified."""

    def __init__(self, expected: dict[Path, str]) -> None:
        super().__init__(daemon=True)
        self.expected = expected
        self.stop = threading.Event()
        self.seen: set[Path] = set()
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for path, digest in self.expected.items():
                try:
                    actual = sha256(path)
                except OSError:
                    continue
                self.seen.add(path)
                if actual != digest:
                    self.violations.append(f"{path} existed with sha256 {actual}")


def test_sync_once_places_byte_identical_files_only_when_complete(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "Film.mkv", 6 * MIB, seed=1)
    random_file(curator.share / "Show" / "e1.mkv", MIB, seed=2)
    curator.start()
    curator.wait_items(2)
    client = Client(tmp_path / "client", [curator.manifest_url])
    expected = {
        client.media / "Film.mkv": sha256(curator.share / "Film.mkv"),
        client.media / "Show" / "e1.mkv": sha256(curator.share / "Show" / "e1.mkv"),
    }
    watcher = FinalPathWatcher(expected)
    watcher.start()
    try:
        result = client.once("--download-limit", "3M")
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert "2 in place" in result.stdout
    for path, digest in expected.items():
        assert sha256(path) == digest
    assert watcher.seen == set(expected)
    assert watcher.violations == []


def test_sync_tells_jellyfin_of_every_placed_file(tmp_path: Path, stop_later: list[Daemon]) -> None:
    """The whole wiring: `meshmedia sync --jellyfin-url` (key from the environment, never
    on the command line) places the files and reports each one to the stand-in, mapped."""
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "Film.mkv", MIB, seed=31)
    random_file(curator.share / "Show" / "e1.mkv", 300_000, seed=32)
    curator.start()
    curator.wait_items(2)
    client = Client(tmp_path / "client", [curator.manifest_url])
    with JellyfinStandIn() as jellyfin:
        result = client.once(
            "--jellyfin-url", jellyfin.url, "--jellyfin-path-map", f"{client.media}=/media",
            env={"JELLYFIN_API_KEY": jellyfin.state.api_key},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        updates = jellyfin.requests("/Library/Media/Updated")
    assert (client.media / "Show" / "e1.mkv").exists()
    assert updates, result.stderr[-3000:]
    assert {r.status for r in updates} == {204}
    told = {u["Path"]: u["UpdateType"] for r in updates for u in r.json()["Updates"]}
    assert told == {"/media/Film.mkv": "Created", "/media/Show/e1.mkv": "Created"}
    assert jellyfin.state.api_key not in result.stderr


def test_status_reads_the_real_daemons(tmp_path: Path, stop_later: list[Daemon]) -> None:
    """`meshmedia status` against a running serve's and a running sync's own /status."""
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "Film.mkv", MIB, seed=33)
    curator.start()
    curator.wait_items(1)
    client = Client(tmp_path / "client", [curator.manifest_url])
    stop_later.append(client)
    client.start()
    wait_for(lambda: client.placed("Film.mkv"), timeout=90, interval=0.2, describe=client.text)
    seeding = {"progress": 1.0, "state": "seeding"}
    wait_for(
        lambda: (
            [{k: t[k] for k in seeding} for t in client.status()["engine"]["torrents"]] == [seeding]
        )
    )
    for role, url in (
        ("client", f"http://127.0.0.1:{client.status_port}"),
        ("curator", f"http://127.0.0.1:{curator.port}"),
    ):
        plain = run_meshmedia("status", "--url", url, cwd=tmp_path)
        raw = run_meshmedia("status", "--url", url, "--json", cwd=tmp_path)
        assert plain.returncode == 0, plain.stderr
        header, *rest = plain.stdout.splitlines()  # then a limits line, then the torrents
        line = rest[-1]
        assert header.startswith(f"{role}: 1 torrents, down "), header
        assert line.startswith("seeding     100.0%"), line
        assert line.endswith("  Film.mkv"), line
        answer = json.loads(raw.stdout)  # as the daemon sent it: a client nests its engine
        snapshot = answer["engine"] if role == "client" else answer
        assert snapshot["torrents"][0]["name"] == "Film.mkv"
    assert client.stop() == 0


def test_earlier_format_from_a_plain_http_server(tmp_path: Path, stop_later: list[Daemon]) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "old.mkv", 2 * MIB, seed=3)
    random_file(curator.share / "bad.mkv", MIB, seed=4)
    curator.start()
    items = {i["path"]: i for i in curator.wait_items(2)}
    good, bad = items["old.mkv"], items["bad.mkv"]
    wrong = "cd" * 32
    site = tmp_path / "site"
    site.mkdir()
    old = {  # the webtorrent-cli era format: no version, no size, no xxh3
        "group": "default",
        "items": [
            {"title": "Old", "torrent": good["torrent"], "path": "Movies/Old.mkv",
             "sha256": good["sha256"]},
            {"title": "Evil", "torrent": good["torrent"], "path": "../evil.mkv"},
            {"title": "Abs", "torrent": good["torrent"], "path": "/tmp/abs.mkv"},
            {"title": "Bad", "torrent": bad["torrent"], "path": "bad.mkv", "sha256": wrong},
        ],
    }  # fmt: skip
    (site / "family.json").write_text(json.dumps(old))
    port = free_port()
    plain = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/family.json"
        wait_for(lambda: answers(url), timeout=30, interval=0.1)
        client = Client(tmp_path / "client", [url])
        result = client.once()
    finally:
        plain.terminate()
        plain.wait(timeout=30)
    assert (client.media / "Movies" / "Old.mkv").read_bytes() == (
        curator.share / "old.mkv"
    ).read_bytes()
    assert result.returncode == 1  # the wrong hash keeps one valid item out
    assert not (client.media / "bad.mkv").exists()
    assert wrong in result.stderr
    assert bad["sha256"] in result.stderr
    assert "../evil.mkv" in result.stderr
    assert "/tmp/abs.mkv" in result.stderr
    assert not (tmp_path / "client" / "evil.mkv").exists()
    assert not Path("/tmp/abs.mkv").exists()


def saved_have(db: Path) -> int:
    """Bytes of whole pieces that the resume data in a daemon's store says it has."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT data FROM resume").fetchall()
    best = 0
    for (data,) in rows:
        params = lt.read_resume_data(bytes(data))
        if params.ti is not None:
            have = sum(1 for bit in params.have_pieces if bit)
            best = max(best, have * params.ti.piece_length())
    return best


def test_killed_mid_download_resumes_without_starting_over(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    size = 8 * MIB
    random_file(curator.share / "big.mkv", size, seed=5)
    curator.start()
    curator.wait_items(1)
    client = Client(tmp_path / "client", [curator.manifest_url])
    stop_later.append(client)
    client.start("--download-limit", "1M")

    def done() -> int:
        torrents = ((client.status() or {}).get("engine") or {}).get("torrents", [])
        return max((t["total_done"] for t in torrents), default=0)

    wait_for(lambda: done() >= 3 * MIB, timeout=60, interval=0.2)
    # What a SIGKILL keeps is what the last resume save recorded (a tick a second; on a
    # loaded machine the save lags the status): kill once the store holds >= 2 MiB.
    wait_for(lambda: saved_have(client.base / "state" / "state.db") >= 2 * MIB, 60, 0.2)
    client.stop(signal.SIGKILL)
    assert not (client.media / "big.mkv").exists()
    result = client.once()
    assert result.returncode == 0, result.stderr
    assert (client.media / "big.mkv").read_bytes() == (curator.share / "big.mkv").read_bytes()
    fetched = int(re.search(r"placed .*big\.mkv \((\d+) bytes", result.stderr).group(1))
    assert fetched <= size - 2 * MIB, f"fetched {fetched} of {size} after the restart"


def test_client_outlives_its_curator_and_syncs_when_it_is_back(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "first.mkv", MIB, seed=6)
    curator.start()
    curator.wait_items(1)
    client = Client(tmp_path / "client", [curator.manifest_url])
    stop_later.append(client)
    client.start()
    wait_for(lambda: client.placed("first.mkv"), timeout=60, interval=0.2)
    assert curator.stop() == 0
    wait_for(lambda: client.text().count("manifest fetch failed") >= 2, timeout=30)
    assert client.alive
    random_file(curator.share / "second.mkv", MIB, seed=7)
    curator.start()
    wait_for(lambda: client.placed("second.mkv"), timeout=90, interval=0.2)
    assert (client.media / "second.mkv").read_bytes() == (curator.share / "second.mkv").read_bytes()
    assert client.stop() == 0


@pytest.mark.timeout(280)
def test_clients_share_pieces_with_each_other(tmp_path: Path, stop_later: list[Daemon]) -> None:
    size = int(os.environ.get("MESHMEDIA_SWARM_SIZE", "60000000"))
    curator = Curator(tmp_path / "curator", upload_limit="5M")
    stop_later.append(curator)
    random_file(curator.share / "big.mkv", size, seed=8)
    curator.start()
    curator.wait_items(1)

    clients = [Client(tmp_path / name, [curator.manifest_url]) for name in ("a", "b", "c")]
    stop_later.extend(clients)
    for client in clients:
        client.start()
    wait_for(
        lambda: all(c.placed("big.mkv") for c in clients), timeout=240, interval=0.2,
        describe=lambda: "\n".join(
            f"client {c.base.name} alive={c.alive}:\n{c.text()[-1500:]}" for c in clients
        ) + f"\ncurator:\n{curator.text()[-1500:]}",
    )  # fmt: skip
    # Byte counters, not wall time: what each client uploaded came to the others.
    counters = [c.status()["engine"]["torrents"][0] for c in clients]  # type: ignore[index]
    downloaded = sum(t["total_download"] for t in counters)
    from_clients = sum(t["total_upload"] for t in counters)
    for client in clients:
        assert client.stop() == 0
        assert sha256(client.media / "big.mkv") == sha256(curator.share / "big.mkv")
    print(
        f"swarm of 3: {downloaded / size:.2f} copies downloaded, "
        f"{from_clients / size:.2f} of them uploaded by the clients themselves"
    )
    assert downloaded >= 3 * size
    assert from_clients >= size // 2  # the curator (5 MB/s) did not serve every copy


def _vm(pid: int, key: str) -> int:
    """A VmXXX figure of /proc/<pid>/status in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {key} for {pid}")


@pytest.mark.timeout(280)
def test_a_manifest_of_100000_items_keeps_the_client_small_and_sigterm_honoured(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    """150k items took a client to 475 MB RSS and growing, its status to 2.7 s, and
    SIGTERM was ignored while it planned. Now: queued rows, at most 32 torrents."""
    from tests.hostile import serve  # noqa: PLC0415

    count = 100_000
    items = [
        {"path": f"d{n % 100}/f{n}.mkv", "size": 1000,
         "torrent": f"magnet:?xt=urn:btih:{n + 1:040x}&x.pe=127.0.0.1:9"}
        for n in range(count)
    ]  # fmt: skip
    body = json.dumps({"group": "default", "version": 1, "items": items}).encode()
    with serve() as site:
        url = site.body("/manifest/default.json", body)
        client = Client(tmp_path / "client", [url])
        stop_later.append(client)
        client.start()
        wait_for(
            lambda: "planning" in client.text() or (client.status() or {}).get("items"),
            timeout=120,
            interval=0.02,
        )  # processing it (the log says so, or the first items show)
        assert client.proc is not None
        client.proc.send_signal(signal.SIGTERM)
        assert client.proc.wait(timeout=60) == 0, client.text()[-2000:]
        client.proc = None
        client.start()
        wait_for(lambda: len((client.status() or {}).get("items", [])) == count, timeout=180)
        status = client.status() or {}
        torrents = status["engine"]["torrents"]
        assert client.proc is not None
        peak = _vm(client.proc.pid, "VmHWM")
        print(f"{count} items: {len(torrents)} torrents, peak RSS {peak} MiB")
        assert len(torrents) <= 32
        assert {i["state"] for i in status["items"]} <= {"queued", "downloading"}
        assert peak < 600
        assert client.stop() == 0


@pytest.mark.parametrize(
    ("kind", "mode"), [("file", "moved"), ("file", "resumed"), ("folder", "moved")]
)
def test_killed_just_after_placement_adopts_what_it_placed(
    tmp_path: Path, stop_later: list[Daemon], kind: str, mode: str
) -> None:
    """After a SIGKILL between the move and its bookkeeping, the item was downloaded
    again and the good file moved to .meshmedia/replaced. Now it is adopted."""
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "movie.mkv", 3 * MIB, seed=21)
    random_file(curator.share / "Show" / "e1.mkv", 2 * MIB, seed=22)
    random_file(curator.share / "Show" / "e2.mkv", MIB, seed=23)
    curator.start()
    curator.wait_items(3)
    if kind == "folder":
        token = (curator.base / "state" / "token").read_text().strip()
        request_seed(
            f"http://127.0.0.1:{curator.port}", token, curator.share / "Show", dest_path="Series"
        )
        # the folder item takes over the items of its own files (Show/e1.mkv, Show/e2.mkv)
        wait_for(lambda: {i["path"] for i in curator.items()} == {"movie.mkv", "Series"}, 60)
    items = {i["path"]: i for i in curator.items()}
    victim = items["movie.mkv" if kind == "file" else "Series"]
    placed = ["movie.mkv"] if kind == "file" else ["Series/e1.mkv", "Series/e2.mkv"]
    ih = victim["torrent"].split("btih:")[1][:40]
    worker = subprocess.run(
        [sys.executable, str(Path(__file__).parent.parent / "crash_worker.py"), str(tmp_path),
         curator.manifest_url, mode, ih],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert worker.returncode == -signal.SIGKILL, worker.stdout + worker.stderr[-3000:]
    assert f"RELOCATED {ih}" in worker.stdout
    client = Client(tmp_path / "client", [curator.manifest_url])
    inodes = {rel: (client.media / rel).stat().st_ino for rel in placed}
    result = client.once()
    assert result.returncode == 0, result.stderr[-3000:]
    for rel in placed:
        assert (client.media / rel).stat().st_ino == inodes[rel], f"{rel} was replaced"
        source = curator.share / rel.replace("Series/", "Show/")
        assert sha256(client.media / rel) == sha256(source)
    assert not (client.media / ".meshmedia" / "replaced").exists()
    name = re.escape(str(client.media / victim["path"]))
    fetched = re.findall(name + r" \((\d+) bytes downloaded", result.stderr)
    assert fetched == ["0"], result.stderr[-3000:]
