"""The routes' own rules: the JSON body parser's exact bounds and ?wait, on a real server."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from meshmedia import __version__
from meshmedia.bounded import MAX_DEPTH
from meshmedia.curator import Publisher
from meshmedia.engine import Engine
from meshmedia.groups.authority import make_csr, new_member_key
from meshmedia.groups.registry import CREDENTIAL_HEADER, Registry
from meshmedia.http import Limits, ManifestServer, routes
from meshmedia.http.messages import HttpError
from meshmedia.http.metrics import Metrics
from meshmedia.http.routes import MAX_BODY, MAX_WAIT, JoinFailures, parse_json_body, route_label
from meshmedia.manifest import Item, ManifestStore
from meshmedia.store import Store
from tests.groups.conftest import outside_address
from tests.helpers import make_config, random_file, wait_for


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def refused(body: bytes) -> str:
    with pytest.raises(HttpError) as caught:
        parse_json_body(body)
    assert caught.value.status == 400
    return str(caught.value)


def test_bodies_within_the_bounds_parse() -> None:
    assert parse_json_body(b'{"items": [1, -2, 2.5, "\\u00e9", null, true]}') == {
        "items": [1, -2, 2.5, "é", None, True]
    }
    assert parse_json_body(nested(MAX_DEPTH).encode()) is not None
    assert parse_json_body(("9" * 19).encode()) == int("9" * 19)
    assert parse_json_body(("-" + "9" * 19).encode()) == -int("9" * 19)
    assert parse_json_body(b"1e308") == 1e308
    # brackets inside strings (escaped quotes too) do not count as nesting
    deep_text = json.dumps(["[" * 100, '\\"[[[', "{" * 100])
    assert parse_json_body(deep_text.encode())[0] == "[" * 100


def test_bodies_over_the_bounds_are_refused_with_the_reason() -> None:
    assert f"nested deeper than {MAX_DEPTH} levels" in refused(nested(MAX_DEPTH + 1).encode())
    assert f"nested deeper than {MAX_DEPTH}" in refused(
        ('{"a": ' + nested(MAX_DEPTH) + "}").encode()
    )
    assert "a number of 20 digits (at most 19)" in refused(("9" * 20).encode())
    assert "a number of 20 digits (at most 19)" in refused(("-" + "9" * 20).encode())
    assert "the number 1e999 is out of range" in refused(b"[1e999]")
    assert "NaN is not a JSON number" in refused(b"[NaN]")
    assert "Infinity is not a JSON number" in refused(b"[-Infinity]")
    assert "not UTF-8 text" in refused(b'["\xff"]')
    assert "not JSON" in refused(b"{")
    assert "lone surrogate" in refused(b'["\\ud800"]')
    assert "lone surrogate" in refused(b'{"\\udfff": 1}')


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ManifestServer]:
    config = make_config(tmp_path, port=0)
    with ManifestServer(config, ManifestStore(tmp_path / "m"), None, None, "t") as running:
        yield running


@pytest.mark.parametrize("wait", ["0", "0.0", "60", f"{MAX_WAIT:g}"])
def test_wait_from_0_to_60_seconds_is_accepted(server: ManifestServer, wait: str) -> None:
    answer = requests.get(f"{server.url}/manifest/default.json?wait={wait}", timeout=30)
    assert answer.status_code == 200  # no If-None-Match: answered at once


@pytest.mark.parametrize("wait", ["60.001", "-0.001", "inf", "nan", "", "x", "1e3"])
def test_wait_outside_0_to_60_is_a_400(server: ManifestServer, wait: str) -> None:
    answer = requests.get(f"{server.url}/manifest/default.json?wait={wait}", timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error"] == "wait must be a number of seconds from 0 to 60"


def test_post_bodies_are_checked_before_the_items(server: ManifestServer) -> None:
    url = f"{server.url}/manifest/default.json"
    auth = {"Authorization": "Bearer t"}
    cases = [
        ({"items": []}, {"Content-Type": "text/plain"}, 400, "Content-Type must be"),
        ([], {}, 400, "the body must be a JSON object with 'items'"),
        ({"group": "other", "items": []}, {}, 400, "the body's group 'other' is not 'default'"),
        ({"group": "default"}, {}, 400, "'items' is missing"),
        ({"items": {}}, {}, 400, "'items' must be a list"),
    ]
    for body, headers, status, reason in cases:
        answer = requests.post(
            url, data=json.dumps(body), headers={"Content-Type": "application/json",
                                                  **auth, **headers}, timeout=30,
        )  # fmt: skip
        assert answer.status_code == status, (body, answer.text)
        assert reason in answer.json()["error"], answer.text
    answer = requests.post(f"{url}?replace=yes", json={"items": []}, headers=auth, timeout=30)
    assert error_of(answer, 400) == "replace must be 1 or 0"
    for mode in ("0", "1", "false", "true"):
        answer = requests.post(
            f"{url}?replace={mode}", json={"items": []}, headers=auth, timeout=30
        )
        assert answer.status_code == 200, (mode, answer.text)
    answer = requests.post(url, json={"group": "default", "items": []}, headers=auth, timeout=30)
    assert answer.status_code == 200
    assert set(answer.json()) == {"group", "version", "updated_at", "count", "etag"}
    assert answer.headers["ETag"] == answer.json()["etag"]


# -- each route's answers, exactly (issue 18: a reason is what a user reads) ----------
IH = "0123456789abcdef0123456789abcdef01234567"
AUTH = {"Authorization": "Bearer t"}


def entry(path: str) -> dict[str, str]:
    return {"title": path, "torrent": f"magnet:?xt=urn:btih:{IH}", "path": path}


def error_of(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    return str(answer.json()["error"])


@pytest.fixture
def full(tmp_path: Path) -> Iterator[ManifestServer]:
    """A manifest-only server with the optional hooks: a home page and metrics."""
    config = make_config(tmp_path, port=0)
    args = (config, ManifestStore(tmp_path / "m"), None, None, "t")
    with ManifestServer(*args, home_page=lambda: b"<p>home</p>", metrics=Metrics("curator")) as s:
        yield s


def test_the_home_page_goes_to_browsers_and_json_to_programs(
    full: ManifestServer, server: ManifestServer
) -> None:
    html = requests.get(full.url, headers={"Accept": "text/html,*/*;q=0.8"}, timeout=30)
    assert html.status_code == 200
    assert html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert html.content == b"<p>home</p>"
    plain = requests.get(full.url, headers={"Accept": "application/json"}, timeout=30)
    assert plain.json() == {"status": "ok", "version": __version__, "groups": ["default"]}
    assert requests.get(full.url, timeout=30).json()["status"] == "ok"  # no Accept at all
    no_page = requests.get(server.url, headers={"Accept": "text/html"}, timeout=30)
    assert no_page.json()["status"] == "ok"  # a server without the hook answers JSON


def test_metrics_are_served_in_the_text_format_and_count_by_route(full: ManifestServer) -> None:
    requests.get(f"{full.url}/manifest/default.json", timeout=30)
    requests.get(f"{full.url}/torrents/{IH}.torrent", timeout=30)
    requests.get(f"{full.url}/nope", timeout=30)
    answer = requests.get(f"{full.url}/metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    text = answer.text
    assert 'meshmedia_http_requests_total{code="200",route="/manifest/{group}.json"} 1.0' in text
    assert 'meshmedia_http_requests_total{code="404",route="/torrents/{info_hash}.torrent"}' in text
    assert 'meshmedia_http_requests_total{code="404",route="other"} 1.0' in text


def test_route_labels_are_the_route_templates() -> None:
    assert route_label("/") == "/"
    assert route_label("/manifest/x.json") == "/manifest/{group}.json"
    assert route_label(f"/torrents/{IH}.torrent") == "/torrents/{info_hash}.torrent"
    assert route_label("/seed") == "/seed"
    assert route_label("/seeds") == "/seeds"
    assert route_label("/status") == "/status"
    assert route_label("/metrics") == "/metrics"
    assert route_label("/secret/token") == "other"
    assert route_label("/manifest/a/b.json") == "other"


def test_routes_without_their_part_say_so(server: ManifestServer) -> None:
    url = server.url
    assert requests.get(f"{url}/seeds", timeout=30).json() == {"seeds": []}
    assert error_of(requests.get(f"{url}/status", timeout=30), 503) == (
        "no engine status on this server"
    )
    assert error_of(requests.get(f"{url}/metrics", timeout=30), 404) == "no metrics on this server"
    seed = requests.post(f"{url}/seed", json={"path": "/x"}, headers=AUTH, timeout=30)
    assert error_of(seed, 503) == "this server does not seed"
    torrent = requests.get(f"{url}/torrents/{IH.upper()}.torrent", timeout=30)
    assert error_of(torrent, 404) == f"no torrent {IH}"
    bad = requests.get(f"{url}/torrents/{IH[:-1]}g.torrent", timeout=30)
    assert error_of(bad, 400) == "the info hash must be 40 hex digits"
    assert error_of(requests.get(f"{url}/torrents/{IH}0.torrent", timeout=30), 400)


def test_a_wrong_method_is_405_with_the_methods_allowed(server: ManifestServer) -> None:
    put = requests.put(f"{server.url}/manifest/default.json", timeout=30)
    assert error_of(put, 405) == "PUT is not allowed here"
    assert put.headers["Allow"] == "GET, POST"
    seed = requests.get(f"{server.url}/seed", timeout=30)
    assert error_of(seed, 405) == "GET is not allowed here"
    assert seed.headers["Allow"] == "POST"
    assert error_of(requests.delete(f"{server.url}/status", timeout=30), 405)
    assert error_of(requests.get(f"{server.url}/seed/x", timeout=30), 404) == "no such route"
    assert error_of(requests.get(f"{server.url}/manifest/a/b.json", timeout=30), 404)


def test_an_unknown_group_is_named_within_80_characters(server: ManifestServer) -> None:
    answer = requests.get(f"{server.url}/manifest/{'g' * 200}.json", timeout=30)
    assert error_of(answer, 404) == "no manifest for group '" + "g" * 79


def test_a_token_refusal_says_how_to_authenticate(server: ManifestServer) -> None:
    answer = requests.post(f"{server.url}/manifest/default.json", json={"items": []}, timeout=30)
    assert error_of(answer, 401) == "a valid 'Authorization: Bearer <token>' is required"
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="meshmedia"'


def test_body_refusals_have_their_exact_reasons(server: ManifestServer) -> None:
    url = f"{server.url}/manifest/default.json"

    def post(data: bytes, content_type: str = "application/json") -> requests.Response:
        headers = {**AUTH, "Content-Type": content_type}
        return requests.post(url, data=data, headers=headers, timeout=30)

    assert error_of(post(b"{"), 400).startswith("the body is refused: ")
    assert error_of(post(b'["\\ud800"]'), 400) == (
        "the body is not valid UTF-8: a string has a lone surrogate (\\ud800-\\udfff)"
    )
    assert error_of(post(b"[]"), 400) == "the body must be a JSON object with 'items'"
    assert error_of(post(b'{"group": "x", "items": []}'), 400) == (
        "the body's group 'x' is not 'default'"
    )
    assert error_of(post(b'{"group": "default"}'), 400) == "'items' is missing"
    assert error_of(post(b"{}", "text/json"), 400) == "Content-Type must be application/json"
    # the media type's case and parameters do not matter
    assert post(b'{"items": []}', "Application/JSON; charset=utf-8").status_code == 200
    over = requests.post(url, data=b"x" * (MAX_BODY + 1), headers=AUTH, timeout=30)
    assert error_of(over, 413) == f"the body is over {MAX_BODY} bytes"


def test_rejected_items_are_counted_and_named(server: ManifestServer) -> None:
    items = [entry("ok.mkv"), *(entry(f"../up{n}.mkv") for n in range(22))]
    answer = requests.post(
        f"{server.url}/manifest/default.json", json={"items": items}, headers=AUTH, timeout=30
    )
    reason = error_of(answer, 400)
    named = (f"item {n} (../up{n - 1}.mkv): path has a '..' segment" for n in range(1, 21))
    assert reason == "22 of 23 items are not valid: " + "; ".join(named)  # the first 20
    assert len(answer.json()["rejected"]) == 22  # all of them in the list


def test_a_group_is_merged_or_replaced(server: ManifestServer) -> None:
    url = f"{server.url}/manifest/default.json"

    def post(query: str, *paths: str) -> dict[str, object]:
        items = [entry(p) for p in paths]
        answer = requests.post(url + query, json={"items": items}, headers=AUTH, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert post("", "a.mkv")["count"] == 1
    assert post("?replace=0", "b.mkv")["count"] == 2
    assert post("?replace=false", "c.mkv")["count"] == 3
    assert post("?replace=1", "d.mkv")["count"] == 1
    summary = post("?replace=true", "e.mkv", "f.mkv")
    served = requests.get(url, timeout=30).json()
    assert [i["path"] for i in served["items"]] == ["e.mkv", "f.mkv"]
    assert summary == {
        "group": "default",
        "version": 5,
        "updated_at": served["updated_at"],
        "count": 2,
        "etag": requests.get(url, timeout=30).headers["ETag"],
    }


def test_a_listed_but_unplaceable_manifest_is_400(server: ManifestServer) -> None:
    """Two items nesting their paths pass the item check but not the manifest's."""
    items = [entry("Show"), entry("Show/e1.mkv")]
    answer = requests.post(
        f"{server.url}/manifest/default.json", json={"items": items}, headers=AUTH, timeout=30
    )
    assert "Show" in error_of(answer, 400)


def test_an_item_nesting_with_a_listed_one_is_refused_by_the_store_as_400(
    server: ManifestServer,
) -> None:
    url = f"{server.url}/manifest/default.json"
    listed = requests.post(url, json={"items": [entry("Show")]}, headers=AUTH, timeout=30)
    assert listed.status_code == 200, listed.text
    inside = requests.post(url, json={"items": [entry("Show/e1.mkv")]}, headers=AUTH, timeout=30)
    assert error_of(inside, 400) == (
        "item 'Show/e1.mkv' overlaps item 'Show': one would be a folder holding the other, "
        "and no client can place both; remove one first"
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": "ETAG"}, 304),
        ({"If-None-Match": "W/ETAG"}, 304),
        ({"If-None-Match": '"x", ETAG'}, 304),
        ({"If-None-Match": '"x",W/ETAG ,"y"'}, 304),
        ({"If-None-Match": '"x", "y"'}, 200),
        ({"If-None-Match": ", ,"}, 200),
    ],
)
def test_if_none_match_forms(server: ManifestServer, headers: dict[str, str], status: int) -> None:
    url = f"{server.url}/manifest/default.json"
    etag = requests.get(url, timeout=30).headers["ETag"]
    sent = {k: v.replace("ETAG", etag) for k, v in headers.items()}
    for query in ("", "?wait=0"):
        answer = requests.get(url + query, headers=sent, timeout=30)
        assert answer.status_code == status
        assert answer.headers["ETag"] == etag
        assert answer.headers["Cache-Control"] == "no-cache"
        assert (answer.content == b"") is (status == 304)
        if status == 200:
            assert answer.headers["Content-Type"] == "application/json"


def test_a_held_poll_answers_the_change_or_304_at_its_end(server: ManifestServer) -> None:
    url = f"{server.url}/manifest/default.json"
    etag = requests.get(url, timeout=30).headers["ETag"]
    star = requests.get(url + "?wait=30", headers={"If-None-Match": "*"}, timeout=5)
    assert star.status_code == 304  # "*" is never held: it matches every version
    other = requests.get(url + "?wait=30", headers={"If-None-Match": '"old"'}, timeout=5)
    assert other.status_code == 200  # an older tag is answered at once
    ended = requests.get(url + "?wait=0.2", headers={"If-None-Match": etag}, timeout=30)
    assert ended.status_code == 304
    assert ended.headers["ETag"] == etag


def test_a_body_over_the_bound_is_refused_by_the_parser_itself() -> None:
    """The plumbing answers 413 first; the parser holds the same bound on its own."""
    assert parse_json_body(b" " * (MAX_BODY - 1) + b"1") == 1
    assert refused(b" " * MAX_BODY + b"1").startswith("the body is refused: ")


def raw_get(server: ManifestServer, head: str) -> bytes:
    """One request with exactly the headers given (no client adds any), read to the close."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        request = f"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{head}\r\n"
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_request_without_accept_gets_json_from_a_server_with_a_home_page(
    full: ManifestServer,
) -> None:
    answer = raw_get(full, "")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Type: application/json" in answer
    assert b'"status":"ok"' in answer.replace(b" ", b"")


def test_a_304_has_no_body_on_the_wire(server: ManifestServer) -> None:
    etag = requests.get(f"{server.url}/manifest/default.json", timeout=30).headers["ETag"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        request = (
            "GET /manifest/default.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"If-None-Match: {etag}\r\n\r\n"
        )
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 304 ")
    assert body == b""


def test_a_poll_without_wait_is_never_held(tmp_path: Path) -> None:
    """With no room to hold a single poll, one without ?wait is still answered: 304."""
    config = make_config(tmp_path, port=0)
    limits = Limits(max_body=MAX_BODY, max_held=0)
    with ManifestServer(config, ManifestStore(tmp_path / "m"), None, None, "t", limits=limits) as s:
        url = f"{s.url}/manifest/default.json"
        etag = requests.get(url, timeout=30).headers["ETag"]

        def status(query: str, tags: str) -> int:
            return requests.get(
                url + query, headers={"If-None-Match": tags}, timeout=30
            ).status_code

        assert status("", etag) == 304
        assert status("?wait=0", etag) == 304
        assert status("?wait=5", f"*, {etag}") == 304  # "*" is never held
        assert status("?wait=5", etag) == 503  # the same poll with a wait is a hold: no room
        assert status("?wait=0.5", etag) == 503


@pytest.fixture
def seeding(tmp_path: Path) -> Iterator[ManifestServer]:
    """A server over a real Store, Engine and Publisher (the one that can seed)."""
    config = make_config(tmp_path, port=0, listen_port=0)
    store = Store.in_state_dir(config.state_dir)
    try:
        with Engine(config, store) as engine:
            manifests = ManifestStore(config.state_dir / "manifests")
            publisher = Publisher(config, store, engine, manifests)
            try:
                args = (config, manifests, publisher, engine.snapshot, "t")
                with ManifestServer(*args, advertised=lambda: [ADVERTISED]) as srv:
                    yield srv
            finally:
                publisher.close()
    finally:
        store.close()


ADVERTISED = "http://192.0.2.1:5000"


def test_status_is_the_engines_snapshot_and_where_others_reach_the_server(
    seeding: ManifestServer,
) -> None:
    status = requests.get(f"{seeding.url}/status", timeout=30)
    assert status.status_code == 200, status.text
    doc = status.json()
    assert doc["advertised_http"] == [ADVERTISED]
    assert set(doc) - {"advertised_http"}, doc  # the snapshot's own fields are there too
    assert requests.get(f"{seeding.url}/identity", timeout=30).json() == {"signing_key": None}


def seed(server: ManifestServer, body: object) -> requests.Response:
    return requests.post(f"{server.url}/seed", json=body, headers=AUTH, timeout=60)


def test_seed_refusals_have_their_exact_reasons(seeding: ManifestServer, tmp_path: Path) -> None:
    share = seeding.config.shares[0].path
    random_file(share / "ok.mkv", 1000, seed=3)
    ok = str(share / "ok.mkv")
    cases: list[tuple[object, int, str]] = [
        ([ok], 400, "the body must be a JSON object with 'path'"),
        ({}, 400, "path is missing"),
        ({"path": ""}, 400, "path must be a non-empty string"),
        ({"path": 5}, 400, "path must be a non-empty string"),
        ({"path": ok, "group": ""}, 400, "group must be a non-empty string"),
        ({"path": ok, "title": 5}, 400, "title must be a non-empty string"),
        ({"path": ok, "dest_path": 5}, 400, "dest_path must be a non-empty string"),
        ({"path": "relative/ok.mkv"}, 400, "path must be an absolute path on the curator"),
        ({"path": ok + "\x00"}, 400, "path must be an absolute path on the curator"),
        ({"path": str(share / "missing.mkv")}, 400, "path does not exist"),
        ({"path": str(tmp_path)}, 403, "path is not inside a share folder"),
    ]
    for body, status, reason in cases:
        assert error_of(seed(seeding, body), status) == reason, body
    bad_dest = error_of(seed(seeding, {"path": ok, "dest_path": "../up.mkv"}), 400)
    assert bad_dest.startswith("dest_path: path has a '..'"), bad_dest
    (share / "Show").mkdir()
    (share / "Show" / "in.mkv").symlink_to(share / "ok.mkv")  # a link is never published
    refusal = error_of(seed(seeding, {"path": str(share / "Show")}), 400)  # the publisher's
    assert refusal == f"{share / 'Show'} holds no non-empty files; there is nothing to publish"
    assert requests.get(f"{seeding.url}/seeds", timeout=30).json() == {"seeds": []}


def test_seed_publishes_into_the_group_asked_for(seeding: ManifestServer) -> None:
    share = seeding.config.shares[0].path
    source = random_file(share / "clip.mkv", 20_000, seed=4)
    answer = seed(seeding, {"path": str(source), "group": "other", "title": "A clip"})
    assert answer.status_code == 200, answer.text
    item = answer.json()["item"]
    assert (item["path"], item["title"]) == ("clip.mkv", "A clip")
    served = requests.get(f"{seeding.url}/manifest/other.json", timeout=30).json()
    assert [i["path"] for i in served["items"]] == ["clip.mkv"]
    info_hash = answer.json()["magnet"].split("urn:btih:")[1][:40].lower()
    torrent = requests.get(f"{seeding.url}/torrents/{info_hash}.torrent", timeout=30)
    assert torrent.headers["Cache-Control"] == "max-age=86400"


# -- members: POST /join, POST /members/report, GET /members (in-process, on loopback) --
@dataclass
class Members:
    """A manifest-only server with a registry, a signing key and a swarm-peers hook."""

    server: ManifestServer
    registry: Registry
    asked: list[str | None]

    def invite(self, name: str | None = "aunt", days: float = 1) -> str:
        secret, _ = self.registry.create_invite("family", name, dt.timedelta(days=days))
        return secret.hex()

    def join(self, secret: str, headers: dict[str, str] | None = None) -> requests.Response:
        csr = make_csr(new_member_key()).decode()
        body = {"secret": secret, "csr": csr}
        return requests.post(f"{self.server.url}/join", json=body, headers=headers, timeout=30)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Members]:
    config = make_config(tmp_path, port=0, public=())
    asked: list[str | None] = []

    def peers(host: str | None) -> list[str]:
        asked.append(host)
        return [f"{host}:6881"] if host else []

    manifests = ManifestStore(tmp_path / "m")
    manifests.upsert("family", [Item("Film", f"magnet:?xt=urn:btih:{IH}", "Film/f.mkv")])
    with Registry(config.state_dir) as registry:
        args = (config, manifests, None, None, "t")
        hooks = {"registry": registry, "signing_key": "ab" * 32, "swarm_peers": peers}
        with ManifestServer(*args, **hooks) as server:  # type: ignore[arg-type]
            yield Members(server, registry, asked)


def test_a_join_answers_the_membership_and_the_peers_for_the_host_asked(
    members: Members,
) -> None:
    identity = requests.get(f"{members.server.url}/identity", timeout=30)
    assert identity.json() == {"signing_key": "ab" * 32}
    answer = members.join(members.invite())
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert set(got) == {
        "member_id", "name", "group", "credential", "certificate", "ca", "signing_key",
        "manifest", "dht", "peers",
    }  # fmt: skip
    assert (got["name"], got["group"], got["signing_key"]) == ("aunt", "family", "ab" * 32)
    assert got["manifest"] == "/manifest/family.json"
    assert got["peers"] == ["127.0.0.1:6881"]  # requests' Host is 127.0.0.1:<port>
    (member,) = members.registry.members()
    assert member.member_id == got["member_id"]
    assert members.registry.member_of(got["credential"]) == member


@pytest.mark.parametrize(
    ("host", "asked"),
    [
        ("localhost", "127.0.0.1"),
        ("LocalHost:5000", "127.0.0.1"),
        ("192.0.2.7:5000", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("[fd00::5]:5000", "fd00::5"),
        ("[::1]", "::1"),
    ],
)
def test_a_joins_peers_are_for_the_address_the_client_reached(
    members: Members, host: str, asked: str
) -> None:
    answer = members.join(members.invite(), {"Host": host})
    assert answer.status_code == 200, answer.text
    assert members.asked == [asked]
    assert answer.json()["peers"] == [f"{asked}:6881"]


def test_a_join_without_a_host_header_asks_for_no_host(members: Members) -> None:
    """HTTP/1.0 without Host: the hook is asked for None (its own addresses)."""
    body = json.dumps({"secret": members.invite(), "csr": make_csr(new_member_key()).decode()})
    head = f"POST /join HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    data = b""
    with socket.create_connection(("127.0.0.1", members.server.port), timeout=30) as sock:
        sock.sendall(f"{head}\r\n\r\n{body}".encode())
        while chunk := sock.recv(65536):
            data += chunk
    status, _, rest = data.partition(b"\r\n")
    assert status.split()[1] == b"200", data
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["peers"] == []
    assert members.asked == [None]


def test_join_refusals_have_their_exact_reasons(members: Members) -> None:
    used = members.invite()
    assert members.join(used).status_code == 200
    cases: list[tuple[str, int, str]] = [
        ("ab" * 16, 404, "unknown invite code"),
        (members.invite(days=-1), 410, "this invite code expired on "),
        (used, 409, "this invite code was already used on "),
    ]
    for secret, status, reason in cases:
        assert error_of(members.join(secret), status).startswith(reason), secret
    bad_csr = requests.post(
        f"{members.server.url}/join", json={"secret": members.invite(), "csr": "x"}, timeout=30
    )
    assert "not a certificate signing request" in error_of(bad_csr, 400)


def test_ten_unknown_codes_a_minute_block_the_address_and_nothing_else_counts(
    members: Members,
) -> None:
    for _ in range(9):
        assert error_of(members.join("ab" * 16), 404) == "unknown invite code"
    used = members.invite()
    assert members.join(used).status_code == 200
    for _ in range(3):  # a used code, an expired one, a bad CSR: not guesses
        assert members.join(used).status_code == 409
        assert members.join(members.invite(days=-1)).status_code == 410
        bad = {"secret": members.invite(), "csr": "x"}
        assert requests.post(f"{members.server.url}/join", json=bad, timeout=30).status_code == 400
    assert members.join("ab" * 16).status_code == 404  # the tenth
    blocked = members.join(members.invite())  # even a good code, now
    reason = "too many unknown invite codes; retry in a minute"
    assert error_of(blocked, 429) == reason
    assert blocked.headers["Retry-After"] == "60"


def test_join_failures_are_counted_per_address_within_a_bounded_table() -> None:
    failures = JoinFailures(per_minute=2)
    assert not failures.blocked("192.0.2.1")
    failures.failed("192.0.2.1")
    assert not failures.blocked("192.0.2.1")
    failures.failed("192.0.2.1")
    assert failures.blocked("192.0.2.1")
    assert not failures.blocked("192.0.2.2")
    for n in range(4096):
        failures.failed(f"10.0.{n // 256}.{n % 256}")
    assert failures.blocked("192.0.2.1")  # 4,097 sources: not over the bound yet
    failures.failed("10.1.0.0")  # over it: the table starts again
    assert not failures.blocked("192.0.2.1")
    assert JoinFailures().per_minute == 10


def test_join_failures_count_for_one_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """On routes' own clock (set by hand, never waited for): a failure blocks for 60 s
    and no longer."""
    now = [1000.0]
    monkeypatch.setattr(routes, "time", SimpleNamespace(monotonic=lambda: now[0]))
    failures = JoinFailures(per_minute=2)
    failures.failed("192.0.2.1")
    failures.failed("192.0.2.1")
    now[0] += 60.0
    assert failures.blocked("192.0.2.1")  # a minute old: still counted
    now[0] += 0.5
    assert not failures.blocked("192.0.2.1")  # older than a minute: forgotten
    failures.failed("192.0.2.1")
    assert not failures.blocked("192.0.2.1")  # one in the last minute, not two


def test_join_needs_a_registry_and_a_signing_key(tmp_path: Path) -> None:
    config = make_config(tmp_path, port=0)
    reason = "this curator takes no members: it has no signing key; restart it"
    with Registry(config.state_dir) as registry:
        hooks: dict[str, Any]
        for hooks in ({}, {"registry": registry}, {"signing_key": "ab" * 32}):
            args = (config, ManifestStore(tmp_path / "m"), None, None, "t")
            with ManifestServer(*args, **hooks) as server:
                body = {"secret": "ab" * 16, "csr": "x"}
                answer = requests.post(f"{server.url}/join", json=body, timeout=30)
                assert error_of(answer, 503) == reason, hooks


def test_join_bodies_are_checked_before_the_code(members: Members) -> None:
    url = f"{members.server.url}/join"
    secret = members.invite()
    cases: list[tuple[Any, str]] = [
        ([1, 2], "secret must be 32 hex digits"),
        ({"secret": 5, "csr": "x"}, "secret must be 32 hex digits"),
        ({"secret": "ab" * 15, "csr": "x"}, "secret must be 32 hex digits"),
        ({"secret": "ab" * 16 + "a", "csr": "x"}, "secret must be 32 hex digits"),
        ({"secret": "zz" * 16, "csr": "x"}, "secret must be 32 hex digits"),
        ({"secret": secret}, "csr must be a PEM certificate signing request"),
        ({"secret": secret, "csr": 5}, "csr must be a PEM certificate signing request"),
        ({"secret": secret, "csr": "\u00e9"}, "csr must be a PEM certificate signing request"),
    ]
    for body, reason in cases:
        assert error_of(requests.post(url, json=body, timeout=30), 400) == reason, body
    assert members.registry.members() == []
    assert members.join(secret.upper()).status_code == 200  # hex in any case


def test_a_members_report_is_kept_and_listed_with_the_groups_items(members: Members) -> None:
    credential = members.join(members.invite()).json()["credential"]
    url = f"{members.server.url}/members/report"
    report: dict[str, Any] = {
        "version": "x",
        "free_disk": 1,
        "placed": ["ab" * 20],
        "secret": "dropped",
    }
    report |= {"downloading": [], "failed": [], "items": 3}
    for headers in ({}, {CREDENTIAL_HEADER: "not-a-credential"}):
        stranger = requests.post(url, json=report, headers=headers, timeout=30)
        assert error_of(stranger, 401) == "a member's credential is required"
        assert stranger.headers["WWW-Authenticate"] == "Member"
    not_an_object = requests.post(
        url, json=[1], headers={CREDENTIAL_HEADER: credential}, timeout=30
    )
    assert error_of(not_an_object, 400) == "the report must be a JSON object"
    kept = requests.post(url, json=report, headers={CREDENTIAL_HEADER: credential}, timeout=30)
    assert kept.status_code == 200, kept.text
    (member,) = members.registry.members()
    assert kept.json() == {"member_id": member.member_id, "last_seen": member.last_seen}
    del report["secret"]
    assert member.report == report
    listed = requests.get(f"{members.server.url}/members", timeout=30).json()
    assert listed["members"] == [member.to_json()]
    rows = [{"info_hash": IH.lower(), "title": "Film", "path": "Film/f.mkv"}]
    assert listed["items"] == {"default": [], "family": rows}  # the share's group has none


def test_members_and_reports_need_a_registry(server: ManifestServer) -> None:
    assert error_of(requests.get(f"{server.url}/members", timeout=30), 404) == "not found"
    for headers in ({}, {CREDENTIAL_HEADER: "credential-of-nobody"}):
        answer = requests.post(f"{server.url}/members/report", json={}, headers=headers, timeout=30)
        assert error_of(answer, 401) == "a member's credential is required"


def test_a_join_on_a_server_without_swarm_peers_answers_no_peers(tmp_path: Path) -> None:
    config = make_config(tmp_path, port=0, public=())
    with Registry(config.state_dir) as registry:
        args = (config, ManifestStore(tmp_path / "m"), None, None, "t")
        with ManifestServer(*args, registry=registry, signing_key="ab" * 32) as server:
            secret, _ = registry.create_invite("family", None, dt.timedelta(days=1))
            body = {"secret": secret.hex(), "csr": make_csr(new_member_key()).decode()}
            answer = requests.post(f"{server.url}/join", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["peers"] == []
            assert answer.json()["name"] == f"home-{answer.json()['member_id'][:6]}"


def test_a_dual_stack_server_takes_mapped_127_0_0_1_and_ipv6_loopback_as_loopback(
    tmp_path: Path,
) -> None:
    """Bound on `::`, a request to 127.0.0.1 comes from `::ffff:127.0.0.1`, which Python
    3.11's `is_loopback` does not count as loopback unless it is unmapped first."""
    config = make_config(tmp_path, port=0, host="::", public=())
    with ManifestServer(config, ManifestStore(tmp_path / "m"), None, None, "t") as server:
        for host in ("127.0.0.1", "[::1]"):
            answer = requests.get(f"http://{host}:{server.port}/seeds", timeout=30)
            assert answer.status_code == 200, (host, answer.text)
            assert answer.json() == {"seeds": []}


def test_an_unknown_group_is_named_on_loopback_only(tmp_path: Path) -> None:
    """Off loopback a 404 names nothing, even for a group anyone may read."""
    address = outside_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    config = make_config(tmp_path, port=0, host="0.0.0.0")
    with ManifestServer(config, ManifestStore(tmp_path / "m"), None, None, "t") as server:
        path = "/manifest/nope.json"
        local = requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=30)
        assert error_of(local, 404) == "no manifest for group 'nope'"
        outside = requests.get(f"http://{address}:{server.port}{path}", timeout=30)
        assert error_of(outside, 404) == "not found"


class CountingStore(ManifestStore):
    """A real ManifestStore that counts the waits a held poll asks of it."""

    waits = 0

    def wait_for_change(self, group: str, etag: str | None, timeout: float) -> Any:
        """Count, then wait as the store does."""
        self.waits += 1
        return super().wait_for_change(group, etag, timeout)


def test_a_held_poll_waits_on_the_store_and_does_not_spin(tmp_path: Path) -> None:
    """A 2 s hold asks the store for a change in 1 s slices: a handful of waits, not the
    thousands of a wait that returns at once (a count, not a duration)."""
    config = make_config(tmp_path, port=0)
    store = CountingStore(tmp_path / "m")
    with ManifestServer(config, store, None, None, "t") as server:
        url = f"{server.url}/manifest/default.json"
        etag = requests.get(url, timeout=30).headers["ETag"]
        held = requests.get(url + "?wait=2", headers={"If-None-Match": etag}, timeout=30)
        assert held.status_code == 304
    assert 1 <= store.waits <= 5, store.waits


def test_held_polls_of_two_groups_are_each_answered_by_their_own_change(
    server: ManifestServer,
) -> None:
    """A poll of `b` held beside one of `a` is answered when `b` changes, `a` still held
    (one watcher per group and tag: with one for all, `b` waited for `a`'s change)."""
    answers: dict[str, requests.Response] = {}

    def poll(group: str) -> threading.Thread:
        url = f"{server.url}/manifest/{group}.json"
        etag = requests.get(url, timeout=30).headers["ETag"]

        def run() -> None:
            headers = {"If-None-Match": etag}
            answers[group] = requests.get(url + "?wait=60", headers=headers, timeout=90)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def post(group: str, path: str) -> None:
        body = {"items": [entry(path)]}
        url = f"{server.url}/manifest/{group}.json"
        assert requests.post(url, json=body, headers=AUTH, timeout=30).status_code == 200

    post("a", "a0.mkv")
    post("b", "b0.mkv")
    held_a = poll("a")
    wait_for(lambda: server.stats().held == 1)
    held_b = poll("b")
    wait_for(lambda: server.stats().held == 2)
    post("b", "b1.mkv")
    held_b.join(30)
    assert answers["b"].status_code == 200
    assert [i["path"] for i in answers["b"].json()["items"]] == ["b0.mkv", "b1.mkv"]
    assert "a" not in answers
    assert server.stats().held == 1
    post("a", "a1.mkv")
    held_a.join(30)
    assert answers["a"].status_code == 200


def test_a_post_without_a_length_is_411_word_for_word(server: ManifestServer) -> None:
    request = (
        "POST /manifest/default.json HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n\r\n"
    )
    data = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request.encode())
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 "), data
    assert json.loads(body) == {"error": "Content-Length is required"}


def test_a_body_of_exactly_the_bound_is_read_and_one_without_a_type_refused(
    server: ManifestServer,
) -> None:
    url = f"{server.url}/manifest/default.json"
    head = b'{"items": [], "pad": "'
    at_bound = head + b"x" * (MAX_BODY - len(head) - 2) + b'"}'
    assert len(at_bound) == MAX_BODY
    json_type = {**AUTH, "Content-Type": "application/json"}
    assert requests.post(url, data=at_bound, headers=json_type, timeout=30).status_code == 200
    untyped = requests.post(url, data=b'{"items": []}', headers=AUTH, timeout=30)
    assert error_of(untyped, 400) == "Content-Type must be application/json"
