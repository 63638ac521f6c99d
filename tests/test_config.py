"""Config: precedence, the earlier design's names, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmedia.config import Config, load_config, parse_size
from meshmedia.errors import ConfigError


def test_legacy_env_names_and_sizes(tmp_path: Path) -> None:
    env = {
        "MANIFEST_URL": "http://a:5000/manifest/family.json http://b/manifest/x.json",
        "GROUP": "family",
        "DOWNLOAD_DIR": str(tmp_path / "dl"),
        "JELLYFIN_URL": "http://localhost:8096",
        "JELLYFIN_API_KEY": "secret-key",
        "MESHMEDIA_UPLOAD_LIMIT": "20M",
    }
    config = load_config({}, env, None)
    assert config.manifest_urls == (
        "http://a:5000/manifest/family.json",
        "http://b/manifest/x.json",
    )
    assert config.group == "family"
    assert config.download_dir == tmp_path / "dl"
    assert config.upload_limit == 20 * 1024 * 1024
    assert "secret-key" not in repr(config)


def test_flags_beat_environment_beat_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport GROUP=fromfile\nMESHMEDIA_PORT='6000'\nSYNC_INTERVAL=7\n"
    )
    config = load_config({"port": 7000}, {"GROUP": "fromenv"}, env_file)
    assert (config.group, config.port, config.interval) == ("fromenv", 7000, 7.0)


def test_share_groups(tmp_path: Path) -> None:
    config = load_config({"shares": [f"kids={tmp_path}/k", str(tmp_path / "d")]}, {}, None)
    assert config.share_groups == {"kids": tmp_path / "k", "default": tmp_path / "d"}


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"MESHMEDIA_PORT": "http"}, "port"),
        ({"MESHMEDIA_PORT": "70000"}, "port"),
        ({"MESHMEDIA_MIN_FREE": "lots"}, "min_free"),
        ({"MESHMEDIA_DHT": "maybe"}, "dht"),
        ({"GROUP": "../etc"}, "group"),
        ({"MANIFEST_URL": "ftp://x/y.json"}, "manifest_url"),
        ({"MESHMEDIA_TRANSPORT": "carrier-pigeon"}, "transport"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env, None)
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_parse_size() -> None:
    assert parse_size("0") == 0
    assert parse_size("500K") == 500 * 1024
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert Config().min_free == 1024**3
