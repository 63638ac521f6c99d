"""The curator's HTTP contract, against a real server on a free port.

Manifest routes run against a real ManifestStore (fixture `server`, no engine);
/seed, /seeds, /status and /torrents against a real Store, Engine and Publisher
(fixture `seeding`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from meshmedia import __version__
from meshmedia.http import Limits, ManifestServer, load_or_create_token
from meshmedia.manifest import ManifestStore
from tests.helpers import make_config, random_file, run_meshmedia, wait_for

TOKEN = "test-token-5d2c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IH = "0123456789abcdef0123456789abcdef01234567"


def entry(path: str, **fields: Any) -> dict[str, Any]:
    return {"title": path, "torrent": f"magnet:?xt=urn:btih:{IH}", "path": path, **fields}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ManifestServer]:
    config = make_config(tmp_path, port=0)
    store = ManifestStore(tmp_path / "manifests")
    with ManifestServer(config, store, None, None, TOKEN) as running:
        yield running


def post(server: ManifestServer, path: str, body: Any, **kwargs: Any) -> requests.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return requests.post(server.url + path, json=body, headers=headers, timeout=30, **kwargs)


def get(server: ManifestServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url + path, timeout=60, **kwargs)


def raw_request(server: ManifestServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a fresh socket and read one response (the server closes after errors)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_health_lists_version_and_groups(server: ManifestServer) -> None:
    assert server.port > 0
    answer = get(server, "/")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {"status": "ok", "version": __version__, "groups": ["default"]}
    assert post(server, "/manifest/family.json", {"items": [entry("a.mkv")]}).ok
    assert get(server, "/").json()["groups"] == ["default", "family"]


def test_manifest_get_etag_304_and_unknown_groups(server: ManifestServer) -> None:
    empty = get(server, "/manifest/default.json")  # a share's group exists before any item
    assert empty.status_code == 200
    assert empty.json()["items"] == []
    assert get(server, "/manifest/nobody.json").status_code == 404
    assert get(server, "/manifest/..%2Fetc.json").status_code == 404
    missing = get(server, "/manifest/nobody.json")
    assert missing.json() == {"error": "no manifest for group 'nobody'"}
    first = post(server, "/manifest/default.json", {"items": [entry("a.mkv")]})
    assert first.json()["version"] == 1
    answer = get(server, "/manifest/default.json")
    etag = answer.headers["ETag"]
    assert answer.json()["items"][0]["path"] == "a.mkv"
    assert etag == first.headers["ETag"]
    cached = get(server, "/manifest/default.json", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.headers["ETag"] == etag
    assert cached.content == b""
    other = get(server, "/manifest/default.json", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200


def test_writes_need_the_token(server: ManifestServer) -> None:
    body = {"items": [entry("a.mkv")]}
    url = server.url + "/manifest/default.json"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        answer = requests.post(url, json=body, headers=headers, timeout=30)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization" in answer.json()["error"]
    answer = requests.post(server.url + "/seed", json={"path": "/x"}, timeout=30)
    assert answer.status_code == 401
    assert get(server, "/manifest/default.json").json()["version"] == 0


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",  # the scheme and nothing after it
        "Bearer ",
        "Bearer \t",
        f"Bearer {TOKEN[:1]}",  # any prefix of the token
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",  # the token and more
        f"Bearer x{TOKEN}",
        f"Basic {TOKEN}",
        f"Bearer{TOKEN}",
        f"{TOKEN} {TOKEN}",
    ],
)
def test_only_the_whole_token_writes(server: ManifestServer, authorization: str) -> None:
    body = json.dumps({"items": [entry("a.mkv")]}).encode()
    head = (
        f"POST /manifest/default.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Authorization: {authorization}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    status, headers, answer = raw_request(server, head.encode("latin-1") + body)
    assert status == 401, authorization
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization" in json.loads(answer)["error"]
    assert get(server, "/manifest/default.json").json()["version"] == 0


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN}"]
)
def test_the_whole_token_writes(server: ManifestServer, authorization: str) -> None:
    answer = post(server, "/manifest/default.json", {"items": [entry("a.mkv")]},
                  headers={"Authorization": authorization})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert get(server, "/manifest/default.json").json()["version"] == 1


def test_if_none_match_takes_weak_tags_and_lists(server: ManifestServer) -> None:
    assert post(server, "/manifest/default.json", {"items": [entry("a.mkv")]}).ok
    etag = get(server, "/manifest/default.json").headers["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    for header in (f"W/{etag}", f'"other", {etag}', f'"a",W/{etag} , "b"', f"{etag},", "*"):
        answer = get(server, "/manifest/default.json", headers={"If-None-Match": header})
        assert answer.status_code == 304, header
        assert answer.headers["ETag"] == etag
    for header in ('"other"', f'"x{etag[1:]}', 'W/"other", "b"', etag[1:-1], f"w/{etag}"):
        answer = get(server, "/manifest/default.json", headers={"If-None-Match": header})
        assert answer.status_code == 200, header
    # a long-poll that holds the current tag (weak, in a list) is held until a change
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"GET /manifest/default.json?wait=60 HTTP/1.1\r\nHost: localhost\r\n"
            + f'If-None-Match: "old", W/{etag}\r\n\r\n'.encode()
        )
        wait_for(lambda: server.stats().held == 1)
        assert post(server, "/manifest/default.json", {"items": [entry("b.mkv")]}).ok
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_merge_replace_and_noop(server: ManifestServer) -> None:
    one = post(server, "/manifest/default.json", {"items": [entry("a.mkv"), entry("b.mkv")]})
    assert one.json()["version"] == 1
    same = post(server, "/manifest/default.json", {"items": [entry("a.mkv")]})
    assert same.json()["version"] == 1  # nothing changed, no bump
    full = {"group": "default", "version": 99, "items": [entry("c.mkv", size=3)]}
    two = post(server, "/manifest/default.json", full)
    assert two.json()["version"] == 2
    paths = [i["path"] for i in get(server, "/manifest/default.json").json()["items"]]
    assert paths == ["a.mkv", "b.mkv", "c.mkv"]
    three = post(server, "/manifest/default.json?replace=1", {"items": [entry("z.mkv")]})
    assert three.json()["count"] == 1
    manifest = get(server, "/manifest/default.json").json()
    assert [i["path"] for i in manifest["items"]] == ["z.mkv"]
    assert manifest["version"] == 3


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        ({"items": [entry("ok.mkv"), entry("../up.mkv")]}, {}, 400, "item 1 (../up.mkv)"),
        ({"items": [entry("/abs.mkv")]}, {}, 400, "path is absolute"),
        ({"items": {}}, {}, 400, "'items' must be a list"),
        ({"group": "other", "items": []}, {}, 400, "group 'other' is not 'default'"),
        ({"title": "no items"}, {}, 400, "'items' is missing"),
        ([1, 2], {}, 400, "JSON object"),
        ("{broken", {"Content-Type": "application/json"}, 400, "not JSON"),
        ({"items": []}, {"Content-Type": "text/plain"}, 400, "Content-Type"),
    ],
)
def test_bad_bodies_are_400_with_the_reason(
    server: ManifestServer, body: Any, headers: dict[str, str], status: int, reason: str
) -> None:
    url = server.url + "/manifest/default.json"
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    headers = {**AUTH, "Content-Type": "application/json", **headers}
    answer = requests.post(url, data=data, headers=headers, timeout=30)
    assert answer.status_code == status
    assert reason in answer.json()["error"]
    assert get(server, "/manifest/default.json").json()["items"] == []  # nothing was applied


def test_rejected_items_are_listed(server: ManifestServer) -> None:
    answer = post(server, "/manifest/default.json", {"items": [entry("a"), entry("a//b")]})
    assert answer.status_code == 400
    assert answer.json()["rejected"] == [
        {"index": 1, "name": "a//b", "reason": "path has an empty segment"}
    ]


def test_a_body_over_1_mib_is_413(server: ManifestServer) -> None:
    head = (
        "POST /manifest/default.json HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {(1 << 20) + 1}\r\n\r\n"
    )
    status, headers, body = raw_request(server, head.encode() + b"[")
    assert status == 413
    assert headers["Connection"] == "close"
    assert "over 1048576 bytes" in json.loads(body)["error"]
    exactly = {"items": [entry("a.mkv", note="x" * ((1 << 20) - 200))]}
    data = json.dumps(exactly).encode()
    assert len(data) <= 1 << 20
    headers = {"Content-Type": "application/json"}
    answer = post(server, "/manifest/default.json", None, data=data, headers=headers)
    assert answer.status_code == 200


def test_protocol_errors_are_json(server: ManifestServer) -> None:
    status, _, body = raw_request(server, b"NONSENSE\r\n\r\n")
    assert status == 400
    assert "error" in json.loads(body)
    status, _, body = raw_request(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    assert status == 414
    put = requests.put(server.url + "/manifest/default.json", timeout=30)
    assert put.status_code == 405
    assert put.headers["Allow"] == "GET, POST"
    assert get(server, "/nope").status_code == 404
    assert get(server, "/nope").json() == {"error": "no such route"}
    head = "POST /manifest/default.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
    head += TOKEN
    status, _, body = raw_request(
        server, (head + "\r\nContent-Type: application/json\r\n\r\n").encode()
    )
    assert status == 411


def test_long_poll_answers_after_a_change(server: ManifestServer) -> None:
    post(server, "/manifest/default.json", {"items": [entry("a.mkv")]})
    etag = get(server, "/manifest/default.json").headers["ETag"]
    result: dict[str, Any] = {}

    def poll() -> None:
        answer = get(server, "/manifest/default.json?wait=60", headers={"If-None-Match": etag})
        result.update(answer=answer)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        wait_for(lambda: server.stats().held == 1)  # the poll is being held
        assert not result
        post(server, "/manifest/default.json", {"items": [entry("b.mkv")]})
    finally:
        thread.join(60)
    # a 200 with the new items: answered by the change (its timeout would be a 304)
    assert result["answer"].status_code == 200
    assert result["answer"].headers["ETag"] != etag
    assert [i["path"] for i in result["answer"].json()["items"]] == ["a.mkv", "b.mkv"]


def test_long_poll_times_out_with_304_and_checks_wait(server: ManifestServer) -> None:
    etag = get(server, "/manifest/default.json").headers["ETag"]
    answers: list[requests.Response] = []
    url = "/manifest/default.json?wait=2"
    poll = threading.Thread(
        target=lambda: answers.append(get(server, url, headers={"If-None-Match": etag}))
    )
    poll.start()
    try:
        wait_for(lambda: server.stats().held == 1 or answers)
        assert answers == []  # it was held, not answered at once
    finally:
        poll.join(60)
    [answer] = answers
    assert answer.status_code == 304  # nothing changed: its timeout answered
    assert answer.headers["ETag"] == etag
    assert server.stats().held == 0
    for wait in ("61", "-1", "abc", "nan"):
        bad = get(server, f"/manifest/default.json?wait={wait}")
        assert bad.status_code == 400
        assert "wait must be" in bad.json()["error"]
    fresh = get(server, "/manifest/default.json?wait=60")  # no If-None-Match: at once
    assert fresh.status_code == 200


def test_keep_alive_serves_several_requests_on_one_connection(server: ManifestServer) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(server.url + "/", timeout=30).status_code == 200
        answer = session.get(server.url + "/manifest/default.json", timeout=30)
        assert answer.headers.get("Connection") != "close"


def test_head_answers_like_get_without_a_body(server: ManifestServer) -> None:
    answer = requests.head(server.url + "/manifest/default.json", timeout=30)
    assert answer.status_code == 200
    assert answer.content == b""
    assert int(answer.headers["Content-Length"]) == len(
        get(server, "/manifest/default.json").content
    )


def test_a_request_unfinished_at_its_deadline_gets_408_and_is_closed(tmp_path: Path) -> None:
    config = make_config(tmp_path, port=0)
    store = ManifestStore(tmp_path / "manifests")
    limits = Limits(request_timeout=0.5)
    with (
        ManifestServer(config, store, None, None, TOKEN, limits=limits) as srv,
        socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # headers never finished
        data = b""
        while chunk := sock.recv(1024):  # until the server closes
            data += chunk
        assert data.startswith(b"HTTP/1.1 408 ")
        assert b"Connection: close" in data


def test_closing_the_server_ends_held_long_polls(tmp_path: Path) -> None:
    config = make_config(tmp_path, port=0)
    store = ManifestStore(tmp_path / "manifests")
    srv = ManifestServer(config, store, None, None, TOKEN).start()
    try:
        etag = get(srv, "/manifest/default.json").headers["ETag"]
        answers: list[int] = []

        def poll() -> None:
            url = "/manifest/default.json?wait=60"
            answers.append(get(srv, url, headers={"If-None-Match": etag}).status_code)

        thread = threading.Thread(target=poll)
        thread.start()
        wait_for(lambda: srv.stats().held == 1)
    finally:
        srv.close()
    thread.join(20)
    assert answers == [304]  # answered well before its 60 s wait


def test_validate_command_reads_a_url(server: ManifestServer) -> None:
    post(server, "/manifest/default.json", {"items": [entry("a.mkv")]})
    result = run_meshmedia("manifest", "validate", server.url + "/manifest/default.json")
    assert result.returncode == 0, result.stderr
    assert "1 items valid, 0 rejected" in result.stdout
    missing = run_meshmedia("manifest", "validate", server.url + "/manifest/nobody.json")
    assert missing.returncode == 1
    assert "404" in missing.stderr


def test_torrents_route_checks_the_info_hash(server: ManifestServer) -> None:
    assert get(server, "/torrents/xyz.torrent").status_code == 400
    assert get(server, f"/torrents/{IH}.torrent").status_code == 404


def test_access_log_has_one_line_per_request_and_no_token(
    server: ManifestServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="meshmedia"):
        get(server, "/")
        post(server, "/manifest/default.json", {"items": [entry("a.mkv")]})
        requests.post(
            server.url + "/seed", json={}, headers={"Authorization": "Bearer nope"}, timeout=30
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "meshmedia.http.curator"]
    assert any('"GET /" 200' in line for line in lines)
    assert any('"POST /manifest/default.json" 200' in line for line in lines)
    assert any('"POST /seed" 401' in line for line in lines)
    assert not any(TOKEN in r.getMessage() or "nope" in r.getMessage() for r in caplog.records)


def test_token_is_generated_once_with_mode_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    with caplog.at_level(logging.INFO, logger="meshmedia"):
        token = load_or_create_token(config)
    path = config.state_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 32
    assert load_or_create_token(config) == token
    assert str(path) in caplog.text
    assert token not in caplog.text
    assert load_or_create_token(config.with_changes(token="given")) == "given"
    os.chmod(path, 0o644)
    assert load_or_create_token(config) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- /seed, /seeds, /status, /torrents with a real Store, Engine and Publisher --------


@pytest.fixture
def seeding(tmp_path: Path) -> Iterator[ManifestServer]:
    from meshmedia.curator import Publisher  # noqa: PLC0415
    from meshmedia.engine import Engine  # noqa: PLC0415 - only these tests need libtorrent
    from meshmedia.store import Store  # noqa: PLC0415

    config = make_config(tmp_path, port=0, listen_port=0)
    store = Store.in_state_dir(config.state_dir)
    try:
        with Engine(config, store) as engine:
            manifests = ManifestStore(config.state_dir / "manifests")
            publisher = Publisher(config, store, engine, manifests)
            try:
                with ManifestServer(config, manifests, publisher, engine.snapshot, TOKEN) as srv:
                    yield srv
            finally:
                publisher.close()
    finally:
        store.close()


def test_seed_publishes_and_every_read_route_shows_it(seeding: ManifestServer) -> None:
    share = seeding.config.shares[0].path
    source = random_file(share / "clip.mkv", 300_000, seed=1)
    body = {"path": str(source), "group": "default", "dest_path": "Clips/clip.mkv", "title": "Clip"}
    answer = post(seeding, "/seed", body)
    assert answer.status_code == 200, answer.text
    magnet, item = answer.json()["magnet"], answer.json()["item"]
    assert magnet.startswith("magnet:?xt=urn:btih:")
    assert (item["path"], item["title"], item["size"]) == ("Clips/clip.mkv", "Clip", 300_000)
    info_hash = magnet.split("urn:btih:")[1][:40].lower()
    manifest = get(seeding, "/manifest/default.json").json()
    assert [i["path"] for i in manifest["items"]] == ["Clips/clip.mkv"]
    torrent = get(seeding, f"/torrents/{info_hash}.torrent")
    assert torrent.status_code == 200
    assert torrent.headers["Content-Type"] == "application/x-bittorrent"
    assert torrent.content.startswith(b"d")
    assert get(seeding, f"/torrents/{info_hash.upper()}.torrent").status_code == 200
    assert get(seeding, f"/torrents/{'f' * 40}.torrent").status_code == 404
    seeds = get(seeding, "/seeds").json()["seeds"]
    assert [(s["path"], s["info_hash"]) for s in seeds] == [("Clips/clip.mkv", info_hash)]
    status = get(seeding, "/status").json()
    assert info_hash in [t["info_hash"] for t in status["torrents"]]


def test_seed_refuses_paths_outside_the_share(seeding: ManifestServer, tmp_path: Path) -> None:
    share = seeding.config.shares[0].path
    outside = random_file(tmp_path / "outside" / "secret.mkv", 1000, seed=2)
    (share / "link.mkv").symlink_to(outside)
    (share / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    for path in (
        str(outside),
        f"{share}/../../outside/secret.mkv",
        str(share / "link.mkv"),
        str(share / "linkdir" / "secret.mkv"),
        "/etc/passwd",
    ):
        answer = post(seeding, "/seed", {"path": path})
        assert answer.status_code == 403, path
        assert answer.json() == {"error": "path is not inside a share folder"}
    assert get(seeding, "/manifest/default.json").json()["items"] == []
    assert get(seeding, "/seeds").json()["seeds"] == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "path is missing"),
        ({"path": "relative/clip.mkv"}, "absolute"),
        ({"path": "SHARE/missing.mkv"}, "does not exist"),
        ({"path": "SHARE/ok.mkv", "dest_path": "../up.mkv"}, "dest_path: path has a '..'"),
        ({"path": "SHARE/ok.mkv", "title": 5}, "title must be a non-empty string"),
    ],
)
def test_seed_bad_bodies_are_400(
    seeding: ManifestServer, body: dict[str, Any], reason: str
) -> None:
    share = seeding.config.shares[0].path
    random_file(share / "ok.mkv", 1000, seed=3)
    if "path" in body:
        body = {**body, "path": body["path"].replace("SHARE", str(share))}
    answer = post(seeding, "/seed", body)
    assert answer.status_code == 400
    assert reason in answer.json()["error"]
