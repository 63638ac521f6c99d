"""Private by default: what a curator answers off loopback, to strangers and to members.

A real curator (engine, publisher, HTTP) binds 0.0.0.0; the requests go to this
machine's non-loopback address, so the server sees them come from off loopback.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from meshmedia.bounded import bounded_session
from meshmedia.config import Share
from meshmedia.curator import Curator
from meshmedia.groups.curator_tls import fingerprint, tls_files
from meshmedia.groups.registry import CREDENTIAL_HEADER, Registry
from meshmedia.manifest import generate_key, save_key
from tests.helpers import make_config, random_file


@pytest.fixture
def curator(tmp_path: Path) -> Iterator[Curator]:
    base = tmp_path / "curator"
    shares = (Share("family", base / "family"), Share("open", base / "open"))
    config = make_config(tmp_path, "curator", host="0.0.0.0", shares=shares, public=("open",))
    save_key(config.state_dir, generate_key())  # private manifests are signed: POST /join needs it
    with Curator(config, force_polling=True) as running:
        assert running.publisher is not None
        random_file(base / "family" / "Grandma 80th birthday.mkv", 100_000, seed=1)
        random_file(base / "open" / "Public lecture.mkv", 100_000, seed=2)
        running.publisher.publish(base / "family" / "Grandma 80th birthday.mkv")
        running.publisher.publish(base / "open" / "Public lecture.mkv")
        yield running


def _hashes(curator: Curator, group: str) -> list[str]:
    assert curator.manifests is not None
    return [item.info_hash or "" for item in curator.manifests.get(group).items]


SECRETS = ("Grandma", "birthday", "family")  # the private group's title, path and name


def test_strangers_off_loopback_learn_nothing_of_a_private_group(
    curator: Curator, outside: str
) -> None:
    assert curator.server is not None
    port = curator.server.port
    base = f"http://{outside}:{port}"
    private_hash = _hashes(curator, "family")[0]
    public_hash = _hashes(curator, "open")[0]
    tls_base, tls = _pinned(curator, outside)  # over TLS too: TLS alone opens nothing
    for origin, http in ((base, requests.Session()), (tls_base, tls)):
        answers = {}
        for route in (
            "/", "/manifest/family.json", "/manifest/family.json?wait=1", "/seeds", "/status",
            "/metrics", f"/torrents/{private_hash}.torrent", "/members", "/manifest/x.json",
        ):  # fmt: skip
            answer = http.get(origin + route, timeout=10)
            answers[route] = answer
            for secret in (*SECRETS, private_hash, str(curator.config.shares[0].path)):
                assert secret not in answer.text, (route, secret)
        assert answers["/"].json()["groups"] == ["open"]
        for route, answer in answers.items():
            if route != "/":
                assert answer.status_code == 404, route
                assert answer.json() == {"error": "not found"}, route  # all alike to a stranger
    public = requests.get(f"{base}/manifest/open.json", timeout=10)
    local = requests.get(f"http://127.0.0.1:{port}/manifest/open.json", timeout=10)
    assert public.status_code == 200
    assert public.content == local.content  # a public group: the earlier design's answer
    torrent = requests.get(f"{base}/torrents/{public_hash}.torrent", timeout=10)
    assert torrent.status_code == 200


def test_loopback_sees_everything_as_before(curator: Curator) -> None:
    assert curator.server is not None
    base = curator.server.url
    assert requests.get(base + "/", timeout=10).json()["groups"] == ["family", "open"]
    for route in ("/manifest/family.json", "/seeds", "/status", "/metrics"):
        assert requests.get(base + route, timeout=10).status_code == 200, route
    private_hash = _hashes(curator, "family")[0]
    assert requests.get(f"{base}/torrents/{private_hash}.torrent", timeout=10).status_code == 200


def _member(state_dir: Path, group: str, name: str) -> str:
    with Registry(state_dir) as registry:
        secret, _ = registry.create_invite(group, name, dt.timedelta(days=1))
        credential = f"credential-of-{name}"
        registry.redeem(secret.hex(), f"{name}-id", credential)
    return credential


def test_a_members_credential_opens_its_group_and_a_revoke_closes_it_at_once(
    curator: Curator, outside: str
) -> None:
    assert curator.server is not None
    base = f"http://{outside}:{curator.server.port}"
    state_dir = curator.config.state_dir
    credential = _member(state_dir, "family", "aunt")
    other = _member(state_dir, "open", "neighbour")  # a member of another group only
    private_hash = _hashes(curator, "family")[0]

    def get(route: str, secret: str) -> requests.Response:
        return requests.get(base + route, headers={CREDENTIAL_HEADER: secret}, timeout=10)

    manifest = get("/manifest/family.json", credential)
    assert manifest.status_code == 200
    assert "Grandma 80th birthday.mkv" in manifest.text
    assert get(f"/torrents/{private_hash}.torrent", credential).status_code == 200
    assert get("/", credential).json()["groups"] == ["family", "open"]
    assert get("/seeds", credential).status_code == 404  # the curator's own pages stay local
    assert get("/manifest/family.json", other).status_code == 404
    assert get(f"/torrents/{private_hash}.torrent", other).status_code == 404
    assert get("/manifest/family.json", "a guess").status_code == 404
    with Registry(state_dir) as registry:
        assert [m.name for m in registry.revoke("aunt")] == ["aunt"]
    assert get("/manifest/family.json", credential).status_code == 404
    assert get(f"/torrents/{private_hash}.torrent", credential).status_code == 404


def _raw_get(host: str, port: int, host_header: str) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("host_header", "allowed"),
    [
        ("evil.example", False),
        ("evil.example:5000", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("[::1", False),
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("192.0.2.2", True),
        ("[::1]:5000", True),
        (f"{socket.gethostname()}:5000", True),  # this machine's own name
        (f"{socket.gethostname()}.local", True),
    ],
)
def test_the_host_header_must_name_this_server(
    curator: Curator, outside: str, host_header: str, allowed: bool
) -> None:
    assert curator.server is not None
    for address in ("127.0.0.1", outside):
        answer = _raw_get(address, curator.server.port, host_header)
        status = int(answer.split(b" ", 2)[1])
        if allowed:
            assert status == 200, (address, host_header)
        else:
            assert status == 421, (address, host_header)
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert "Host" in body["error"]


def _pinned(curator: Curator, outside: str) -> tuple[str, requests.Session]:
    """The curator's https origin off loopback and a session that pins its certificate."""
    assert curator.server is not None
    cert, _ = tls_files(curator.config.state_dir)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    origin = f"https://{outside}:{curator.server.port}"
    return origin, bounded_session({origin: fingerprint(der)})


def test_join_refuses_bad_bodies_and_slows_down_guessing(curator: Curator, outside: str) -> None:
    assert curator.server is not None
    base, http = _pinned(curator, outside)
    plain = requests.post(
        f"http://{outside}:{curator.server.port}/join", json={"secret": "ab" * 16}, timeout=10
    )
    assert plain.status_code == 400
    reason = "POST /join needs https: the secret must not cross the network in clear"
    assert plain.json()["error"] == reason
    state_dir = curator.config.state_dir
    with Registry(state_dir) as registry:
        secret, _ = registry.create_invite("family", "cousin", dt.timedelta(days=1))
    for body, reason in (
        ({"secret": "zz", "csr": "x"}, "secret must be 32 hex digits"),
        ({"secret": secret.hex()}, "csr must be a PEM certificate signing request"),
        ([1, 2], "secret must be 32 hex digits"),
    ):
        answer = http.post(base + "/join", json=body, timeout=10)
        assert answer.status_code == 400
        assert answer.json()["error"] == reason
    garbage = http.post(base + "/join", json={"secret": secret.hex(), "csr": "junk"}, timeout=10)
    assert garbage.status_code == 400
    assert "not a certificate signing request" in garbage.json()["error"]
    with Registry(state_dir) as registry:  # a refused CSR used no code
        assert registry.members() == []
    for _ in range(10):
        guess = http.post(base + "/join", json={"secret": "ab" * 16, "csr": "x"}, timeout=10)
        assert guess.status_code == 404
        assert guess.json() == {"error": "unknown invite code"}
    blocked = http.post(base + "/join", json={"secret": "ab" * 16, "csr": "x"}, timeout=10)
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "60"
    local = requests.post(
        curator.server.url + "/join", json={"secret": "cd" * 16, "csr": "x"}, timeout=10
    )
    assert local.status_code == 404  # counted per source address: loopback is another


def test_reports_need_a_members_credential(curator: Curator, outside: str) -> None:
    assert curator.server is not None
    base = f"http://{outside}:{curator.server.port}"
    credential = _member(curator.config.state_dir, "family", "aunt")
    report = {"version": "x", "free_disk": 1, "placed": ["ab" * 20], "secret": "dropped"}
    stranger = requests.post(base + "/members/report", json=report, timeout=10)
    assert stranger.status_code == 401
    member = requests.post(
        base + "/members/report", json=report, headers={CREDENTIAL_HEADER: credential}, timeout=10
    )
    assert member.status_code == 200
    listed = requests.get(curator.server.url + "/members", timeout=10).json()
    (aunt,) = listed["members"]
    assert aunt["report"] == {"version": "x", "free_disk": 1, "placed": ["ab" * 20]}
    assert aunt["last_seen"] == member.json()["last_seen"]
    assert [i["path"] for i in listed["items"]["family"]] == ["Grandma 80th birthday.mkv"]
