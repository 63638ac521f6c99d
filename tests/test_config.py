"""Config: precedence, the earlier design's names, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmedia.config import Config, format_size, load_config, local_url, parse_size
from meshmedia.engine.building import advertise_host, magnet_uri
from meshmedia.engine.settings import build_settings, listen_interfaces
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
        ({"MESHMEDIA_DHT_BOOTSTRAP": "curator"}, "dht_bootstrap"),
        ({"MESHMEDIA_DHT_BOOTSTRAP": "curator:0"}, "dht_bootstrap"),
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


def test_dht_bootstrap_nodes_reach_the_session_with_private_ips_allowed(tmp_path: Path) -> None:
    env = {"MESHMEDIA_DHT_BOOTSTRAP": "10.0.0.2:6881 [fd00::2]:6881"}
    config = load_config({"state_dir": tmp_path}, env, None)
    assert config.dht_bootstrap == ("10.0.0.2:6881", "[fd00::2]:6881")
    settings = build_settings(config)
    assert settings["dht_bootstrap_nodes"] == "10.0.0.2:6881,[fd00::2]:6881"
    assert settings["dht_restrict_routing_ips"] is False
    assert settings["dht_ignore_dark_internet"] is False
    assert "dht_bootstrap_nodes" not in build_settings(Config(state_dir=tmp_path))


def test_advertise_host_none_gives_magnets_without_a_peer(tmp_path: Path) -> None:
    config = load_config({"advertise_host": "none", "state_dir": tmp_path}, {}, None)
    assert advertise_host(config) is None
    ih = "ab" * 20
    assert magnet_uri(ih, "a b.mkv", None, 6881) == f"magnet:?xt=urn:btih:{ih}&dn=a%20b.mkv"
    assert magnet_uri(ih, "x", "10.0.0.2", 6881).endswith("&x.pe=10.0.0.2:6881")


def test_trackers_named_by_sources_are_off_unless_allowed() -> None:
    assert load_config({}, {}, None).allow_trackers is False
    assert load_config({}, {"MESHMEDIA_ALLOW_TRACKERS": "yes"}, None).allow_trackers is True
    assert (
        load_config(
            {"allow_trackers": False}, {"MESHMEDIA_ALLOW_TRACKERS": "1"}, None
        ).allow_trackers
        is False
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:5000"),
        ("", "http://127.0.0.1:5000"),
        ("::", "http://[::1]:5000"),
        ("192.168.1.10", "http://192.168.1.10:5000"),
        ("fd00::1", "http://[fd00::1]:5000"),
    ],
)
def test_a_local_server_is_reached_on_loopback_when_it_binds_every_address(
    host: str, url: str
) -> None:
    assert local_url(host, 5000) == url


def test_sizes_print_in_the_units_they_are_read_in() -> None:
    for text in ("500K", "20M", "1.5G", "3G"):
        number, unit = format_size(parse_size(text)).split()
        assert parse_size(f"{number}{unit}") == parse_size(text)
    assert [format_size(n) for n in (0, 1023, 1024, 2_500_000)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "2.4 MiB",
    ]


def test_the_ssl_port_follows_the_listen_port_unless_given(tmp_path: Path) -> None:
    assert Config(listen_port=6881).ssl_port == 6882
    assert Config(listen_port=65535).ssl_port == 65534
    assert Config(listen_port=0).ssl_port == 0
    assert Config(listen_port=6881, ssl_listen_port=7000).ssl_port == 7000
    env = {"MESHMEDIA_SSL_LISTEN_PORT": "7001", "MESHMEDIA_LISTEN_PORT": "6000"}
    (tmp_path / "empty.env").write_text("")
    config = load_config(environ=env, env_file=tmp_path / "empty.env")
    assert (config.listen_port, config.ssl_port) == (6000, 7001)
    with pytest.raises(ConfigError, match="ssl_listen_port"):
        Config(ssl_listen_port=70000)


def test_the_session_listens_plain_and_ssl_on_each_address() -> None:
    assert listen_interfaces(Config(listen_host="0.0.0.0", listen_port=6881)) == (
        "0.0.0.0:6881,[::]:6881,0.0.0.0:6882s,[::]:6882s"
    )
    assert listen_interfaces(Config(listen_host="::1", listen_port=0)) == "[::1]:0,[::1]:0s"
