"""The routes' own rules: the JSON body parser's exact bounds and ?wait, on a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from meshmedia.bounded import MAX_DEPTH
from meshmedia.http import ManifestServer
from meshmedia.http.plumbing import HttpError
from meshmedia.http.routes import MAX_WAIT, parse_json_body
from meshmedia.manifest import ManifestStore
from tests.helpers import make_config


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
    assert answer.json()["error"] == "replace must be 1 or 0"
    for mode in ("0", "1", "false", "true"):
        answer = requests.post(
            f"{url}?replace={mode}", json={"items": []}, headers=auth, timeout=30
        )
        assert answer.status_code == 200, (mode, answer.text)
    answer = requests.post(url, json={"group": "default", "items": []}, headers=auth, timeout=30)
    assert answer.status_code == 200
    assert set(answer.json()) == {"group", "version", "updated_at", "count", "etag"}
    assert answer.headers["ETag"] == answer.json()["etag"]
