"""The Jellyfin notifier against a real HTTP stand-in that follows CONTRACT.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from meshmedia.errors import ConfigError
from meshmedia.jellyfin import JellyfinNotifier, check, map_path
from tests.helpers import free_port, wait_for
from tests.jellyfin_standin import Contract, JellyfinStandIn

KEY = "0123456789abcdef0123456789abcdef"
MEDIA_UPDATED = "/Library/Media/Updated"
REFRESH = "/Library/Refresh"
FAST = {"window": 0.05, "retry_base": 0.05, "retry_max": 0.2, "timeout": 10.0}
Factory = Callable[..., JellyfinNotifier]


@pytest.fixture
def standin() -> Iterator[JellyfinStandIn]:
    with JellyfinStandIn(api_key=KEY) as server:
        yield server


@pytest.fixture
def notifiers() -> Iterator[Factory]:
    made: list[JellyfinNotifier] = []

    def make(url: str, **options: Any) -> JellyfinNotifier:
        notifier = JellyfinNotifier(url, options.pop("api_key", KEY), **{**FAST, **options})
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close(timeout=10)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="meshmedia.jellyfin")
    return caplog


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "meshmedia.jellyfin.notifier" and r.levelno == logging.WARNING
    ]


def delivered(server: JellyfinStandIn) -> list[str]:
    """Every path the stand-in accepted in a 204 Media/Updated, in order."""
    return [
        update["Path"]
        for r in server.requests(MEDIA_UPDATED)
        if r.status == 204
        for update in r.json()["Updates"]
    ]


def test_a_batch_is_one_media_updated_valid_against_the_schema(
    standin: JellyfinStandIn, notifiers: Factory, tmp_path: Any
) -> None:
    paths = [str(tmp_path / f"Film {n} (2001)" / f"film{n}.mkv") for n in range(5)]
    notifier = notifiers(standin.url, window=2.0)
    for path in paths:
        notifier.notify(path)
    wait_for(lambda: standin.requests(MEDIA_UPDATED), timeout=30)
    assert notifier.flush(timeout=30)
    [sent] = standin.requests()
    assert (sent.method, sent.path, sent.status) == ("POST", MEDIA_UPDATED, 204)
    assert sent.json() == {"Updates": [{"Path": p, "UpdateType": "Created"} for p in paths]}
    contract = Contract()
    schema = contract.validator(contract.request_schema(MEDIA_UPDATED))
    assert list(schema.iter_errors(sent.json())) == []


def test_flush_sends_at_once_and_the_key_is_only_in_the_authorization_header(
    standin: JellyfinStandIn, notifiers: Factory, logs: pytest.LogCaptureFixture
) -> None:
    notifier = notifiers(standin.url, window=3600)
    notifier.notify("/media/a.mkv")
    assert notifier.flush(timeout=30)
    [sent] = standin.requests()
    assert sent.headers["authorization"] == f'MediaBrowser Token="{KEY}"'
    legacy = {"x-emby-token", "x-mediabrowser-token", "x-emby-authorization"}
    assert legacy.isdisjoint(sent.headers)
    assert sent.query == {}
    assert KEY not in logs.text
    assert delivered(standin) == ["/media/a.mkv"]


@pytest.mark.parametrize(
    ("path", "path_map", "expected"),
    [
        ("/srv/media/Films/a.mkv", [("/srv/media", "/media")], "/media/Films/a.mkv"),
        ("/srv/media2/a.mkv", [("/srv/media", "/media")], "/srv/media2/a.mkv"),
        ("/srv/media", [("/srv/media/", "/media/")], "/media"),
        ("/srv/media/x/a.mkv", [("/srv", "/s"), ("/srv/media/x", "/m")], "/m/a.mkv"),
        ("/srv/a.mkv", [("/", "/host")], "/host/srv/a.mkv"),
        ("/srv/a.mkv", [("/srv", "/")], "/a.mkv"),
    ],
)
def test_path_map_rewrites_on_a_segment_boundary(
    path: str, path_map: list[tuple[str, str]], expected: str
) -> None:
    assert map_path(path, path_map) == expected


def test_the_notifier_reports_mapped_paths(standin: JellyfinStandIn, notifiers: Factory) -> None:
    notifier = notifiers(standin.url, path_map=(("/home/pi/Videos/synced", "/data/synced"),))
    notifier.notify("/home/pi/Videos/synced/Show/S01E01.mkv")
    notifier.notify("/home/pi/Videos/synced-old/x.mkv")
    assert notifier.flush(timeout=30)
    assert delivered(standin) == [
        "/data/synced/Show/S01E01.mkv",
        "/home/pi/Videos/synced-old/x.mkv",
    ]


def test_401_warns_once_keeps_the_paths_and_delivers_once_the_key_is_fixed(
    standin: JellyfinStandIn, notifiers: Factory, logs: pytest.LogCaptureFixture
) -> None:
    standin.state.api_key = "another-key"  # the key we hold is not (yet) known to the server
    notifier = notifiers(standin.url)
    notifier.notify("/media/a.mkv")
    notifier.notify("/media/b.mkv")
    wait_for(lambda: len(standin.requests(MEDIA_UPDATED)) >= 4, timeout=30)
    assert {r.status for r in standin.requests()} == {401}
    [warning] = warnings_of(logs)
    assert "401" in warning
    assert "JELLYFIN_API_KEY" in warning
    standin.state.api_key = KEY
    wait_for(lambda: delivered(standin), timeout=30)
    assert delivered(standin) == ["/media/a.mkv", "/media/b.mkv"]
    assert standin.requests(REFRESH) == []
    assert len(warnings_of(logs)) == 1
    assert KEY not in logs.text


def test_503_then_recovery(
    standin: JellyfinStandIn, notifiers: Factory, logs: pytest.LogCaptureFixture
) -> None:
    standin.mode = "unavailable"
    notifier = notifiers(standin.url)
    notifier.notify("/media/a.mkv")
    wait_for(lambda: len(standin.requests()) >= 3, timeout=30)
    assert not notifier.flush(timeout=30)  # still answering 503: the path stays queued
    notifier.notify("/media/b.mkv")
    standin.mode = "ok"
    wait_for(lambda: len(delivered(standin)) == 2, timeout=30)
    assert sorted(delivered(standin)) == ["/media/a.mkv", "/media/b.mkv"]
    assert standin.requests(REFRESH) == []
    [warning] = warnings_of(logs)
    assert "503" in warning


def test_jellyfin_down_then_up_on_that_port(
    notifiers: Factory, logs: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    notifier = notifiers(f"http://127.0.0.1:{port}")
    notifier.notify("/media/a.mkv")  # nothing listens: no exception, no wait
    assert not notifier.flush(timeout=30)
    notifier.notify("/media/b.mkv")
    assert not notifier.flush(timeout=30)
    [warning] = warnings_of(logs)
    assert "cannot connect" in warning
    with JellyfinStandIn(api_key=KEY, port=port) as standin:
        wait_for(lambda: len(delivered(standin)) == 2, timeout=30)
        assert notifier.flush(timeout=30)
    assert sorted(delivered(standin)) == ["/media/a.mkv", "/media/b.mkv"]


def test_stand_in_going_down_and_coming_back(standin: JellyfinStandIn, notifiers: Factory) -> None:
    notifier = notifiers(standin.url)
    notifier.notify("/media/a.mkv")
    assert notifier.flush(timeout=30)
    standin.stop()
    notifier.notify("/media/b.mkv")
    assert not notifier.flush(timeout=30)
    standin.start()
    wait_for(lambda: len(delivered(standin)) == 2, timeout=30)


def test_falls_back_to_one_refresh_when_media_updated_is_missing(
    standin: JellyfinStandIn, notifiers: Factory, logs: pytest.LogCaptureFixture
) -> None:
    standin.mode = "no_media_updated"
    notifier = notifiers(standin.url, window=3600, refresh_spacing=3600)
    for name in ("a", "b", "c"):
        notifier.notify(f"/media/{name}.mkv")
    assert notifier.flush(timeout=30)
    assert [(r.path, r.status) for r in standin.requests()] == [
        (MEDIA_UPDATED, 404),
        (REFRESH, 204),
    ]
    assert standin.requests(REFRESH)[0].body == b""
    assert any("falling back" in w for w in warnings_of(logs))
    notifier.notify("/media/d.mkv")  # the server is known to lack Media/Updated now
    assert notifier.flush(timeout=30)
    assert [r.path for r in standin.requests()] == [MEDIA_UPDATED, REFRESH, REFRESH]


def test_an_overflowing_queue_becomes_one_refresh(
    standin: JellyfinStandIn, notifiers: Factory
) -> None:
    standin.mode = "unavailable"
    notifier = notifiers(standin.url, max_pending=3)
    for n in range(5):
        notifier.notify(f"/media/{n}.mkv")
    standin.mode = "ok"
    wait_for(lambda: standin.requests(REFRESH), timeout=30)
    assert notifier.flush(timeout=30)
    assert [r.status for r in standin.requests(REFRESH)] == [204]
    assert delivered(standin) == []


def test_notify_never_raises_and_close_stops_the_thread(
    standin: JellyfinStandIn, logs: pytest.LogCaptureFixture
) -> None:
    notifier = JellyfinNotifier(standin.url, KEY, **FAST)
    notifier.notify(object())  # type: ignore[arg-type]
    notifier.notify("/media/a.mkv")
    notifier.close(timeout=30)
    assert delivered(standin) == ["/media/a.mkv"]
    assert not notifier._thread.is_alive()
    notifier.notify("/media/late.mkv")
    assert notifier.flush(timeout=5)
    assert len(standin.requests()) == 1


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("jellyfin:8096", KEY),
        ("http://127.0.0.1:8096", None),
        ("http://h", 'a"b'),
        ("http://h", "a b"),
    ],
)
def test_bad_settings_are_config_errors(url: str, key: str | None) -> None:
    with pytest.raises(ConfigError):
        JellyfinNotifier(url, key)


# The stand-in must be able to fail, or the tests above prove nothing.


def post(standin: JellyfinStandIn, body: bytes, **kwargs: Any) -> int:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    if "auth" not in kwargs:
        headers.setdefault("Authorization", f'MediaBrowser Token="{KEY}"')
    kwargs.pop("auth", None)
    answer = requests.post(standin.url + MEDIA_UPDATED, data=body, headers=headers, **kwargs)
    return answer.status_code


GOOD = json.dumps({"Updates": [{"Path": "/m/a.mkv", "UpdateType": "Created"}]}).encode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (GOOD, 204),
        (b'{"Updates": [{"Path": null, "UpdateType": null}]}', 204),
        (b'{"Updates": []}', 204),
        (b'{"Updates": [{"Path": "/m/a.mkv", "UpdateType": "Created", "Id": 1}]}', 400),
        (b'{"Updates": [{"Path": 7}]}', 400),
        (b'{"Updates": "/m/a.mkv"}', 400),
        (b'{"Path": "/m/a.mkv"}', 400),
        (b"[]", 400),
        (b"not json", 400),
        (b"", 400),
    ],
)
def test_the_stand_in_validates_bodies_against_the_excerpt(
    standin: JellyfinStandIn, body: bytes, status: int
) -> None:
    assert post(standin, body) == status


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"headers": {"Authorization": f"MediaBrowser Token={KEY}"}}, 204),
        ({"headers": {"Authorization": f'MediaBrowser Client="x", Token="{KEY}"'}}, 204),
        ({"auth": None, "params": {"ApiKey": KEY}}, 204),
        ({"auth": None, "headers": {"X-Emby-Token": KEY}}, 401),
        ({"auth": None, "headers": {"X-MediaBrowser-Token": KEY}}, 401),
        ({"auth": None, "headers": {"X-Emby-Authorization": f'MediaBrowser Token="{KEY}"'}}, 401),
        ({"auth": None, "params": {"api_key": KEY}}, 401),
        ({"headers": {"Authorization": f'Emby Token="{KEY}"'}}, 401),
        ({"headers": {"Authorization": 'MediaBrowser Token="wrong"'}}, 401),
        ({"auth": None}, 401),
        ({"headers": {"Content-Type": "text/plain"}}, 415),
    ],
)
def test_the_stand_in_reads_the_key_as_jellyfin_12_does(
    standin: JellyfinStandIn, kwargs: dict[str, Any], status: int
) -> None:
    assert post(standin, GOOD, **kwargs) == status


def test_the_stand_in_public_info_follows_the_schema(standin: JellyfinStandIn) -> None:
    answer = requests.get(standin.url + "/System/Info/Public", timeout=10)
    assert answer.status_code == 200
    contract = Contract()
    schema = contract.validator(contract.response_schema("/System/Info/Public"))
    assert list(schema.iter_errors(answer.json())) == []
    assert list(schema.iter_errors({**answer.json(), "Extra": 1}))  # the schema can say no


def test_check_names_the_server_and_accepts_the_key(standin: JellyfinStandIn) -> None:
    found = check(standin.url, KEY)
    assert found.ok, found.detail
    assert (found.server_name, found.version, found.product_name) == (
        "standin",
        "12.0.0",
        "Jellyfin Server",
    )
    assert "API key accepted" in found.detail
    assert [r.path for r in standin.requests()] == ["/System/Info/Public", MEDIA_UPDATED]
    assert "authorization" not in standin.requests()[0].headers


def test_check_explains_what_is_wrong(standin: JellyfinStandIn) -> None:
    wrong = check(standin.url, "not-the-key")
    assert (wrong.reachable, wrong.key_ok, wrong.ok) == (True, False, False)
    assert "401" in wrong.detail
    standin.mode = "no_media_updated"
    old = check(standin.url, KEY)
    assert old.key_ok is None
    assert "404" in (old.problem or "")
    standin.mode = "unavailable"
    starting = check(standin.url, KEY)
    assert not starting.reachable
    assert "503" in (starting.problem or "")
    down = check(f"http://127.0.0.1:{free_port()}", KEY)
    assert not down.reachable
    assert down.problem
    assert check("http://127.0.0.1:1", None).problem


def test_the_stand_in_accepts_legacy_forms_only_when_told_to(standin: JellyfinStandIn) -> None:
    legacy = {"auth": None, "headers": {"X-Emby-Token": KEY}}
    assert post(standin, GOOD, **legacy) == 401
    standin.state.legacy_authorization = True  # Jellyfin 10.x's default
    assert post(standin, GOOD, **legacy) == 204
