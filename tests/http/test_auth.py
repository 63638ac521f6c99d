"""The write token: where it comes from, how it is kept, and what matches it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshmedia.errors import ConfigError
from meshmedia.http.auth import load_or_create_token, token_matches, token_path
from tests.helpers import make_config


def test_a_generated_token_is_kept_0600_whole_and_reused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert token_path(config) == config.state_dir / "token"
    token = load_or_create_token(config)
    path = token_path(config)
    assert path.read_text(encoding="ascii") == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) == 43  # secrets.token_urlsafe(32): 256 bits
    assert sorted(p.name for p in path.parent.iterdir() if "token" in p.name) == ["token"]
    assert load_or_create_token(config) == token


def test_a_token_file_is_read_stripped(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    token_path(config).write_text("  kept-token \n")
    os.chmod(token_path(config), 0o600)
    assert load_or_create_token(config) == "kept-token"


def test_an_empty_token_file_gets_a_new_token(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    token_path(config).write_text("\n")
    os.chmod(token_path(config), 0o600)
    token = load_or_create_token(config)
    assert len(token) == 43
    assert token_path(config).read_text() == token + "\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601])
def test_a_token_file_others_can_read_is_tightened(tmp_path: Path, mode: int) -> None:
    config = make_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    token_path(config).write_text("t0ken\n")
    os.chmod(token_path(config), mode)
    assert load_or_create_token(config) == "t0ken"
    assert stat.S_IMODE(token_path(config).stat().st_mode) == 0o600


def test_an_unreadable_token_file_is_a_config_error(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    token_path(config).write_bytes(b"\xff\xfe not ascii")
    os.chmod(token_path(config), 0o600)
    with pytest.raises(ConfigError, match=r"cannot read .*token") as caught:
        load_or_create_token(config)
    assert caught.value.setting == "token"
    assert str(caught.value).startswith(f"token: cannot read {token_path(config)}: ")


def test_a_configured_token_wins_and_writes_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, token="given")
    assert load_or_create_token(config) == "given"
    assert not token_path(config).exists()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("BEARER s3cret", True),
        ("  Bearer s3cret  ", True),
        ("Bearer  s3cret", True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer s3cre", False),
        ("Bearer s3crets", False),
        ("Bearer S3CRET", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("Bearers3cret", False),
    ],
)
def test_token_matches(header: str | None, expected: bool) -> None:
    assert token_matches("s3cret", header) is expected


def test_a_private_token_file_is_read_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    token_path(config).write_text("t0ken\n")
    os.chmod(token_path(config), 0o600)
    with caplog.at_level("WARNING", logger="meshmedia.http.auth"):
        assert load_or_create_token(config) == "t0ken"
    assert caplog.records == []


def test_the_token_is_created_in_a_state_dir_that_does_not_exist_yet(tmp_path: Path) -> None:
    config = make_config(tmp_path, state_dir=tmp_path / "a" / "b" / "state")
    token = load_or_create_token(config)
    assert (tmp_path / "a" / "b" / "state" / "token").read_text() == token + "\n"


def test_a_token_file_that_is_not_ascii_names_the_token_setting(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.state_dir.mkdir(parents=True)
    token_path(config).write_text("tökén\n", encoding="utf-8")
    os.chmod(token_path(config), 0o600)
    with pytest.raises(ConfigError) as caught:
        load_or_create_token(config)
    assert "token" in str(caught.value).split(":")[0]
