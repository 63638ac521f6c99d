"""invite + join with real processes: one code adds a home; bad codes write nothing.

The curator (`meshmedia serve`) binds 0.0.0.0 and the client joins it over
loopback; strangers ask from this machine's non-loopback address, so the
curator sees them off loopback.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import requests

from meshmedia.bounded import bounded_session
from meshmedia.groups import GroupAuthority, invite_code
from meshmedia.groups.curator_tls import curator_pin
from meshmedia.groups.registry import CREDENTIAL_HEADER, Registry
from tests.daemons import NETWORK, Daemon, sha256
from tests.groups.nodes import CODE, PrivateCurator, join
from tests.helpers import free_port, random_file, run_meshmedia, wait_for


def nothing_written(state: Path) -> bool:
    return not state.exists() or not any(state.rglob("*"))


def test_codes_round_trip_and_any_change_is_refused() -> None:
    code = invite_code.InviteCode(
        b"p" * 16, b"s" * 16, (("192.168.1.10", 5000), ("fd00::1", 5000), ("nas.home", 80))
    )
    text = invite_code.encode(code)
    assert invite_code.decode(text) == code
    spaced = "-".join(text[i : i + 5] for i in range(0, len(text), 5)).lower()
    assert invite_code.decode(spaced) == code  # any case, dashes and spaces
    for bad in (
        text[:-1], text[:20], "XX" + text[2:], text[:10] + ("A" if text[10] != "A" else "B")
        + text[11:], "", "MM", "MM0189",
    ):  # fmt: skip
        with pytest.raises(invite_code.InviteCodeError, match="not a valid invite code"):
            invite_code.decode(bad)


def test_join_then_plain_sync_and_strangers_learn_nothing(
    curator: PrivateCurator, tmp_path: Path, outside: str
) -> None:
    film = random_file(curator.share / "Grandma 80th birthday.mkv", 300_000, seed=3)
    items = wait_for(curator.items, 60, 0.2, curator.text)
    info_hash = str(items[0]["torrent"]).split("btih:")[1][:40]
    shown = run_meshmedia(  # the client reaches it off loopback: it needs its credential
        "invite", "--group", "family", "--name", "aunt", "--state-dir", str(curator.state),
        "--address", f"{outside}:{curator.port}",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    code = CODE.findall(shown.stdout)[0]
    assert "\u2588" in shown.stdout or "\u2580" in shown.stdout  # the QR code's blocks
    assert "single use" in shown.stdout
    assert code not in shown.stderr  # printed once, never logged
    assert code not in curator.text()

    client = tmp_path / "client"
    media = client / "media"
    status, said = join(client / "state", code, "--download-dir", str(media))
    assert status == 0, said
    assert "joined group family as member aunt" in said
    state_files = {
        p.relative_to(client / "state").as_posix() for p in (client / "state").rglob("*")
    }
    assert {"member.key", "groups/family.json", "joined.env"} <= state_files
    assert (client / "state" / "groups" / "family.json").stat().st_mode & 0o077 == 0
    assert (client / "state" / "member.key").stat().st_mode & 0o077 == 0

    synced = run_meshmedia(
        "sync", "--once", "--state-dir", str(client / "state"), "--listen-port", "0",
        "--status-port", str(free_port()), "--min-free", "0", *NETWORK, timeout=180,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert sha256(media / film.name) == sha256(film)
    joined = json.loads((client / "state" / "groups" / "family.json").read_text())
    assert joined["manifest_url"] == f"https://{outside}:{curator.port}/manifest/family.json"
    group = GroupAuthority.open(curator.state, "family")  # its sealed DHT item, for --follow
    assert joined["dht"] == {"public_key": group.dht_public.hex(), "secret": group.secret.hex()}

    stranger = f"http://{outside}:{curator.port}"
    for route in (
        "/", "/manifest/family.json", "/seeds", "/status", "/metrics",
        f"/torrents/{info_hash}.torrent", "/members",
    ):  # fmt: skip
        answer = requests.get(stranger + route, timeout=10)
        for secret in ("Grandma", "birthday", "family", info_hash, str(curator.share), "aunt"):
            assert secret not in answer.text, (route, secret)
        assert answer.status_code == (200 if route == "/" else 404), route


def test_a_used_code_is_refused_and_writes_nothing(curator: PrivateCurator, tmp_path: Path) -> None:
    code = curator.invite("--no-qr", "--name", "first")
    assert join(tmp_path / "first", code)[0] == 0
    status, said = join(tmp_path / "second", code)
    assert status == 1
    assert "this invite code was already used on" in said
    assert "by member first" in said
    assert nothing_written(tmp_path / "second")


def test_an_expired_code_is_refused_and_writes_nothing(
    curator: PrivateCurator, tmp_path: Path
) -> None:
    with Registry(curator.state) as registry:  # a code that expired a minute ago
        secret, expired = registry.create_invite("family", None, dt.timedelta(minutes=-1))
    code = invite_code.encode(
        invite_code.InviteCode(curator_pin(curator.state), secret, (("127.0.0.1", curator.port),))
    )
    status, said = join(tmp_path / "client", code)
    assert status == 1
    assert f"this invite code expired on {expired}" in said
    assert nothing_written(tmp_path / "client")


def test_a_tampered_code_is_refused_and_writes_nothing(
    curator: PrivateCurator, tmp_path: Path
) -> None:
    code = curator.invite("--no-qr")
    changed = code[:12] + ("Q" if code[12] != "Q" else "R") + code[13:]
    status, said = join(tmp_path / "client", changed)
    assert status == 2
    assert "this is not a valid invite code (mistyped or cut short?)" in said
    assert nothing_written(tmp_path / "client")
    status, said = join(tmp_path / "client", code[:30])
    assert status == 2
    assert nothing_written(tmp_path / "client")


def test_a_code_for_another_curator_is_refused_before_the_secret_is_sent(
    curator: PrivateCurator, tmp_path: Path
) -> None:
    other = PrivateCurator(tmp_path / "other")
    other.invite("--no-qr")
    other.start()
    try:
        real = invite_code.decode(curator.invite("--no-qr"))
        # the same code, led to another curator (a wrong address, or someone in between)
        led = invite_code.InviteCode(real.pin, real.secret, (("127.0.0.1", other.port),))
        status, said = join(tmp_path / "client", invite_code.encode(led))
        assert status == 1
        assert f"the host at 127.0.0.1:{other.port} is not the curator that made this code" in said
        assert nothing_written(tmp_path / "client")
        assert "POST /join" not in other.text()  # it never saw the secret
        assert join(tmp_path / "client", invite_code.encode(real))[0] == 0  # still unused
    finally:
        other.stop()


def test_an_unreachable_curator_is_named(tmp_path: Path) -> None:
    port = free_port()
    code = invite_code.encode(invite_code.InviteCode(b"p" * 16, b"s" * 16, (("127.0.0.1", port),)))
    status, said = join(tmp_path / "client", code)
    assert status == 1
    assert f"cannot reach the curator at 127.0.0.1:{port}" in said
    assert nothing_written(tmp_path / "client")


def test_members_and_revoke_on_the_command_line(
    curator: PrivateCurator, tmp_path: Path, outside: str
) -> None:
    code = curator.invite("--no-qr", "--name", "grandma")
    assert join(tmp_path / "client", code)[0] == 0
    joined = json.loads((tmp_path / "client" / "groups" / "family.json").read_text())
    origin = f"https://{outside}:{curator.port}"  # over TLS, its certificate pinned
    manifest = origin + "/manifest/family.json"
    http = bounded_session({origin: joined["curator"]["pin"]})
    as_member = {CREDENTIAL_HEADER: joined["credential"]}
    assert http.get(manifest, headers=as_member, timeout=10).status_code == 200
    assert http.get(manifest, timeout=10).status_code == 404  # TLS alone opens nothing
    env = {"MESHMEDIA_PORT": str(curator.port)}
    listed = run_meshmedia("members", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "grandma  group family  0/0 placed" in listed.stdout
    as_json = json.loads(run_meshmedia("members", "--json", env=env).stdout)
    assert [m["name"] for m in as_json["members"]] == ["grandma"]
    gone = run_meshmedia("revoke", "grandma", "--state-dir", str(curator.state))
    assert gone.returncode == 0, gone.stderr
    assert "revoked grandma" in gone.stdout
    refused = http.get(manifest, headers=as_member, timeout=10)  # at once: the next request
    assert refused.status_code == 404
    assert refused.json() == {"error": "not found"}
    again = run_meshmedia("revoke", "grandma", "--state-dir", str(curator.state))
    assert again.returncode == 1
    assert "no member 'grandma'" in again.stderr


def test_an_invite_carries_what_the_running_curator_advertises(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    """Without --address, `invite` asks the running curator (GET /status on loopback) for
    where other machines reach it: its LAN address, and behind a router that mapped the
    port, the router's external address (tests/system/test_across_homes.py). Here the
    curator is told its address (a documentation address, never dialled) so that the
    code can only have it from the curator."""
    curator = PrivateCurator(tmp_path / "curator")
    stop_later.append(curator)
    curator.start("--advertise-host", "192.0.2.50")
    status = requests.get(f"http://127.0.0.1:{curator.port}/status", timeout=10).json()
    assert status["advertised_http"] == [f"http://192.0.2.50:{curator.port}"]
    made = run_meshmedia(
        "invite", "--group", "family", "--state-dir", str(curator.state),
        "--port", str(curator.port), "--no-qr",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    code = invite_code.decode(CODE.findall(made.stdout)[0])
    assert list(code.addresses) == [("192.0.2.50", curator.port)]
