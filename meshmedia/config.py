"""One validated, frozen settings object built from flags, the environment and `.env`.

Precedence, highest first: command-line flags, the process environment, the
`.env` file, `<state_dir>/joined.env` (written by `meshmedia join`), the
defaults below. The five unprefixed names of the earlier
webtorrent-cli design (MANIFEST_URL, GROUP, DOWNLOAD_DIR, JELLYFIN_URL,
JELLYFIN_API_KEY) and SYNC_INTERVAL are read as they were.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TRANSPORTS = ("both", "tcp", "utp")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class Share:
    """A drop folder and the group its files are published to."""

    group: str
    path: Path


def default_state_dir() -> Path:
    """The XDG state directory for meshmedia (`~/.local/state/meshmedia`)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meshmedia"


@dataclass(frozen=True)
class Config:
    """Every setting of a curator or a client; see DESIGN.md's option table."""

    shares: tuple[Share, ...] = ()
    group: str = "default"
    host: str = "127.0.0.1"
    port: int = 5000
    listen_host: str = "0.0.0.0"  # noqa: S104 - BitTorrent peers must reach us
    listen_port: int = 6881
    ssl_listen_port: int | None = None  # private groups' SSL torrents; None: listen_port + 1
    advertise_host: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    manifest_urls: tuple[str, ...] = ()
    download_dir: Path = field(default_factory=lambda: Path.home() / "Videos" / "synced")
    interval: float = 300.0
    jellyfin_url: str | None = None
    jellyfin_api_key: str | None = field(default=None, repr=False)
    jellyfin_path_map: tuple[tuple[str, str], ...] = ()
    token: str | None = field(default=None, repr=False)
    upload_limit: int = 0
    download_limit: int = 0
    min_free: int = 1024**3
    delete_removed: bool = False
    allow_trackers: bool = False
    status_port: int = 5001
    dht: bool = True
    dht_bootstrap: tuple[str, ...] = ()
    lsd: bool = True
    upnp: bool = True
    natpmp: bool = True
    transport: str = "both"
    settle_time: float = 0.2
    poll_quiet: float = 2.0
    log_level: str = "INFO"
    trust: str | None = None
    follow: tuple[str, ...] = ()
    once_timeout: float = 3600.0  # `sync --once`: seconds before it gives up (0 = none)
    select: tuple[str, ...] = ()  # client: include / `!`exclude globs on item paths
    max_size: int = 0  # client: items larger than this are not selected (0 = no cap)
    on_placed: str | None = None  # client: a command run per placed item (no shell)
    webhook: str | None = field(default=None, repr=False)  # client: JSON events (a secret)
    limit_schedule: str | None = None  # limits by weekday and time (engine/schedule.py)
    public: tuple[str, ...] = ()  # curator: groups readable without a credential ('*' = all)

    def __post_init__(self) -> None:
        _check(GROUP_RE.match(self.group) is not None, "group", self.group, _GROUP_RULE)
        for share in self.shares:
            _check(GROUP_RE.match(share.group) is not None, "share", share.group, _GROUP_RULE)
        for name in ("port", "listen_port", "status_port", "ssl_listen_port"):
            value = getattr(self, name)
            if value is None:
                continue
            _check(0 <= value <= 65535, name, value, "a port number from 0 to 65535")
        for name in ("upload_limit", "download_limit", "min_free", "max_size"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "a size of 0 or more")
        _check(self.interval > 0, "interval", self.interval, "a number of seconds above 0")
        _check(self.once_timeout >= 0, "once_timeout", self.once_timeout, "seconds, 0 = none")
        _check(self.transport in TRANSPORTS, "transport", self.transport, "both, tcp or utp")
        if self.trust is not None:
            ok = len(self.trust) == 64 and all(c in "0123456789abcdefABCDEF" for c in self.trust)
            _check(ok, "trust", self.trust, "an ed25519 public key as 64 hex digits")
        for node in self.dht_bootstrap:
            host, _, port = node.rpartition(":")
            ok = bool(host) and port.isdigit() and 0 < int(port) <= 65535
            _check(ok, "dht_bootstrap", node, "HOST:PORT")
        for spec in self.follow:
            key, _, group = spec.partition(":")
            ok = len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key)
            _check(ok and (not group or bool(GROUP_RE.match(group))), "follow", spec, _FOLLOW)
        for url in self.manifest_urls:
            _check(url.startswith(("http://", "https://")), "manifest_url", url, "an http(s) URL")
        if self.advertise_host is not None and self.advertise_host.lower() != "none":
            # A magnet's x.pe is an endpoint: libtorrent never resolves a host name there.
            ok = is_ip(self.advertise_host)
            _check(ok, "advertise_host", self.advertise_host, "an IP address or 'none'")
        if self.webhook is not None:
            ok = self.webhook.startswith(("http://", "https://"))
            _check(ok, "webhook", "(hidden)", "an http(s) URL")
        if self.on_placed is not None:
            _check(bool(_split(self.on_placed)), "on_placed", self.on_placed, "a command")
        for group in self.public:
            ok = group == "*" or GROUP_RE.match(group) is not None
            _check(ok, "public", group, f"'*' or a group name ({_GROUP_RULE})")

    @property
    def ssl_port(self) -> int:
        """The SSL BitTorrent port (private groups): `ssl_listen_port`, else the port after
        `listen_port` (the one before for 65535), 0 (any free port) when listen_port is 0."""
        if self.ssl_listen_port is not None:
            return self.ssl_listen_port
        if self.listen_port == 0:
            return 0
        return self.listen_port + 1 if self.listen_port < 65535 else 65534

    @property
    def share_groups(self) -> dict[str, Path]:
        """Map each share folder's group to its folder."""
        return {share.group: share.path for share in self.shares}

    def is_public(self, group: str) -> bool:
        """True when `group` is readable by anyone (`--public GROUP` or `--public '*'`)."""
        return "*" in self.public or group in self.public

    @property
    def all_public(self) -> bool:
        """True when every group is public (`--public '*'`): the earlier design's server."""
        return "*" in self.public

    def with_changes(self, **changes: Any) -> Config:
        """A copy of this config with some settings replaced (validated again)."""
        return replace(self, **changes)


def is_ip(text: str) -> bool:
    """True when `text` is a literal IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_FOLLOW = "PUBLIC_KEY[:GROUP], the key as 64 hex digits"


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []


_GROUP_RULE = "letters, digits, '.', '_' or '-' (at most 64, not starting with a symbol)"


def _check(ok: bool, setting: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(setting, f"{value!r} is not accepted; expected {accepted}")


def parse_size(text: str, setting: str = "size") -> int:
    """Parse `20M`, `500K`, `1G`, `1.5GiB` or `0` into bytes (binary multiples)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ConfigError(setting, f"{text!r} is not a size; expected e.g. 0, 500K, 20M, 1G")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def format_size(size: float) -> str:
    """`1.5 GiB`-style: the binary units parse_size reads (the one size format)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def parse_bool(text: str, setting: str) -> bool:
    """Parse the usual spellings of a yes/no setting."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(setting, f"{text!r} is not a yes/no value; expected true/false, 1/0, on/off")


def parse_share(text: str, default_group: str) -> Share:
    """Parse `DIR` or `GROUP=DIR` into a Share."""
    group, sep, path = text.partition("=")
    if not sep or "/" in group:
        group, path = default_group, text
    if not path:
        raise ConfigError("share", f"{text!r} has no folder; expected DIR or GROUP=DIR")
    return Share(group=group, path=Path(path).expanduser().resolve())


def parse_path_map(text: str) -> tuple[str, str]:
    """Parse `LOCAL=REMOTE` for --jellyfin-path-map."""
    local, sep, remote = text.partition("=")
    if not sep or not local or not remote:
        raise ConfigError("jellyfin_path_map", f"{text!r} is not LOCAL=REMOTE")
    return local.rstrip("/") or "/", remote.rstrip("/") or "/"


def read_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines from a `.env` file (comments, `export`, quotes allowed)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("env_file", f"cannot read {path}: {exc.strerror}") from exc
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise ConfigError("env_file", f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# setting -> (environment names, parser); the parser gets the raw string.
Parser = Callable[[str], Any]


def _float(setting: str) -> Parser:
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(setting, f"{text!r} is not a number") from None

    return parse


def _int(setting: str) -> Parser:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(setting, f"{text!r} is not a whole number") from None

    return parse


def _path(text: str) -> Path:
    return Path(text).expanduser()


ENVIRONMENT: dict[str, tuple[tuple[str, ...], Parser]] = {
    "group": (("GROUP", "MESHMEDIA_GROUP"), str),
    "host": (("MESHMEDIA_HOST",), str),
    "port": (("MESHMEDIA_PORT",), _int("port")),
    "listen_host": (("MESHMEDIA_LISTEN_HOST",), str),
    "listen_port": (("MESHMEDIA_LISTEN_PORT",), _int("listen_port")),
    "ssl_listen_port": (("MESHMEDIA_SSL_LISTEN_PORT",), _int("ssl_listen_port")),
    "advertise_host": (("MESHMEDIA_ADVERTISE_HOST",), str),
    "state_dir": (("MESHMEDIA_STATE_DIR",), _path),
    "manifest_urls": (("MANIFEST_URL", "MESHMEDIA_MANIFEST_URL"), lambda t: tuple(t.split())),
    "download_dir": (("DOWNLOAD_DIR", "MESHMEDIA_DOWNLOAD_DIR"), _path),
    "interval": (("SYNC_INTERVAL", "MESHMEDIA_INTERVAL"), _float("interval")),
    "jellyfin_url": (("JELLYFIN_URL",), lambda t: t or None),
    "jellyfin_api_key": (("JELLYFIN_API_KEY",), lambda t: t or None),
    "jellyfin_path_map": (
        ("MESHMEDIA_JELLYFIN_PATH_MAP",),
        lambda t: tuple(parse_path_map(p) for p in t.split()),
    ),
    "token": (("MESHMEDIA_TOKEN",), lambda t: t or None),
    "upload_limit": (("MESHMEDIA_UPLOAD_LIMIT",), lambda t: parse_size(t, "upload_limit")),
    "download_limit": (("MESHMEDIA_DOWNLOAD_LIMIT",), lambda t: parse_size(t, "download_limit")),
    "min_free": (("MESHMEDIA_MIN_FREE",), lambda t: parse_size(t, "min_free")),
    "delete_removed": (
        ("MESHMEDIA_DELETE_REMOVED",),
        lambda t: parse_bool(t, "delete_removed"),
    ),
    "allow_trackers": (
        ("MESHMEDIA_ALLOW_TRACKERS",),
        lambda t: parse_bool(t, "allow_trackers"),
    ),
    "status_port": (("MESHMEDIA_STATUS_PORT",), _int("status_port")),
    "dht": (("MESHMEDIA_DHT",), lambda t: parse_bool(t, "dht")),
    "dht_bootstrap": (("MESHMEDIA_DHT_BOOTSTRAP",), lambda t: tuple(t.split())),
    "lsd": (("MESHMEDIA_LSD",), lambda t: parse_bool(t, "lsd")),
    "upnp": (("MESHMEDIA_UPNP",), lambda t: parse_bool(t, "upnp")),
    "natpmp": (("MESHMEDIA_NATPMP",), lambda t: parse_bool(t, "natpmp")),
    "transport": (("MESHMEDIA_TRANSPORT",), str.lower),
    "settle_time": (("MESHMEDIA_SETTLE_TIME",), _float("settle_time")),
    "poll_quiet": (("MESHMEDIA_POLL_QUIET",), _float("poll_quiet")),
    "log_level": (("MESHMEDIA_LOG_LEVEL",), str.upper),
    "trust": (("MESHMEDIA_TRUST",), lambda t: t or None),
    "follow": (("MESHMEDIA_FOLLOW",), lambda t: tuple(t.split())),
    "once_timeout": (("MESHMEDIA_ONCE_TIMEOUT",), _float("once_timeout")),
    "select": (("MESHMEDIA_SELECT",), lambda t: tuple(shlex.split(t))),
    "max_size": (("MESHMEDIA_MAX_SIZE",), lambda t: parse_size(t, "max_size")),
    "on_placed": (("MESHMEDIA_ON_PLACED",), lambda t: t or None),
    "webhook": (("MESHMEDIA_WEBHOOK",), lambda t: t or None),
    "limit_schedule": (("MESHMEDIA_LIMIT_SCHEDULE",), lambda t: t or None),
    "public": (
        ("MESHMEDIA_PUBLIC",),
        lambda t: tuple(g.strip() for g in t.split(",") if g.strip()),
    ),
}


# Secrets read from a file named in the environment (systemd credentials, Docker
# secrets), so that they are in no process list (review12 finding 13).
SECRET_FILES = {"token": "MESHMEDIA_TOKEN_FILE", "jellyfin_api_key": "JELLYFIN_API_KEY_FILE"}


def read_secret(path: Path, setting: str) -> str:
    """The secret in `path`: its text without the line end; ConfigError when unreadable
    or empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(setting, f"cannot read the secret file {path}: {reason}") from None
    if not text:
        raise ConfigError(setting, f"the secret file {path} is empty")
    return text


def load_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> Config:
    """Build the Config: flags (already typed, None = not given) over environment over `.env`.

    `shares` in flags or MESHMEDIA_SHARE (os.pathsep separated) are `DIR` or
    `GROUP=DIR` strings. Raises ConfigError naming the first bad setting.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    environ = dict(os.environ if environ is None else environ)
    if env_file is None and Path(".env").is_file():
        env_file = Path(".env")
    sources = {**(read_env_file(env_file) if env_file else {}), **environ}
    values = _from_sources(sources)
    for setting, value in _joined_settings(flags.get("state_dir") or values.get("state_dir")):
        values.setdefault(setting, value)
    for setting, name in SECRET_FILES.items():
        if setting not in values and sources.get(name, "") != "":
            values[setting] = read_secret(Path(sources[name]).expanduser(), setting)
    values.update({k: v for k, v in flags.items() if k != "shares"})
    group = values.get("group", "default")
    raw_shares = flags.get("shares") or [
        s for s in sources.get("MESHMEDIA_SHARE", "").split(os.pathsep) if s
    ]
    if not raw_shares:
        raw_shares = [str(Path.home() / "share")]
    values["shares"] = tuple(parse_share(str(s), group) for s in raw_shares)
    for key in ("state_dir", "download_dir"):
        if key in values:
            values[key] = Path(values[key]).expanduser()
    known = {f.name for f in fields(Config)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(sorted(unknown)[0], "is not a meshmedia setting")
    return Config(**values)


def _from_sources(sources: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting, (names, parser) in ENVIRONMENT.items():
        for name in names:
            if sources.get(name, "") != "":
                values[setting] = parser(sources[name])
                break
    return values


JOINED_FILE = "joined.env"  # what `meshmedia join` wrote: below every other source


def _joined_settings(state_dir: Any) -> list[tuple[str, Any]]:
    """The settings `meshmedia join` kept in `<state_dir>/joined.env` (the state dir
    comes from the other sources), so a plain `meshmedia sync` uses them."""
    path = Path(state_dir or default_state_dir()).expanduser() / JOINED_FILE
    if not path.is_file():
        return []
    return list(_from_sources(read_env_file(path)).items())


WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - the hosts that mean "every address"


def local_url(host: str, port: int) -> str:
    """`http://host:port` to reach a server on this machine that binds `host`: loopback
    (127.0.0.1, or ::1 for `::`) when it binds every address; IPv6 in brackets."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
