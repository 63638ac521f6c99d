"""The libtorrent session settings meshmedia runs with (reasons in native_notes/engine.md)."""

from __future__ import annotations

import ipaddress
from typing import Any

import libtorrent as lt

from meshmedia import __version__
from meshmedia.config import Config

# pread keeps the downloader's RSS near 100 MiB where mmap counts the page cache
# (about the file's size) as RSS; posix is leaner but slower.
DISK_IO = "pread_disk_io_constructor"

_MIB = 1024 * 1024

# Measured on loopback (native_notes/engine.md): bigger send buffers and request
# queues let one TCP connection fill a fast link.
_THROUGHPUT = {
    "send_buffer_watermark": 8 * _MIB,
    "send_buffer_low_watermark": 1 * _MIB,
    "send_buffer_watermark_factor": 150,
    "max_out_request_queue": 1500,
    "max_queued_disk_bytes": 16 * _MIB,  # 64 MiB bought no speed and ~60 MiB of RSS (engine.md)
    # libtorrent dials new peers (x.pe, connect_peer) only on its tick: 500 ms by
    # default, so every download waited up to 0.5 s for its first byte. 100 ms:
    # first byte 0.50 -> 0.11 s, no measurable idle cost with 300 seeds.
    "tick_interval": 100,
    # Disk threads: libtorrent's default 10 only add context switches on a small
    # machine (1 GiB loopback median 1.40 -> 1.30 s on 2 cores, 5 runs each).
    "aio_threads": 2,
    # libtorrent's default 20 s makes a peer that gets >= 0.4 MB/s from one source pick
    # runs of contiguous pieces (rate x 20 s, at most 8 MiB): clients fetching from the
    # same seed picked the same 8 MiB runs and the seed sent them one after the other
    # (across homes 1.57 copies of 40 MiB; with 0: 1.13-1.18, engine.md "Copies across
    # homes"). 0 = every piece picked rarest first on its own.
    "whole_pieces_threshold": 0,
}

# uTP: see "uTP stall" in native_notes/engine.md.
_UTP = {
    "send_socket_buffer_size": 4 * _MIB,
    "recv_socket_buffer_size": 4 * _MIB,
}

# Across homes (native_notes/nat.md "c." and "d."): a peer whose link was down 20 s is
# dialled again 0.6-2.2 s after it returns instead of 46-66 s (keepalives every 10 s find
# the dead connection during the cut; reconnects wait failcount x 1 s, not x 60 s, and go
# on past 3 failures); a dial that gets no answer gives up after 5 s, so BEP 55 hole
# punching starts 7 s after a peer joins instead of 20.6 s. uTP's cwnd may grow 60000
# bytes per RTT (3000: 0.59 instead of 1.74 MiB/s at 0.1 % loss, 50 ms per link).
_ACROSS_HOMES = {
    "peer_timeout": 20,
    "min_reconnect_time": 1,
    "max_failcount": 100,
    "peer_connect_timeout": 5,
    "utp_gain_factor": 60000,
}

# Networks whose peers also belong to libtorrent's "local" class (no unchoke
# slot limit); every address stays in the global class so rate limits hold.
LOCAL_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "100.64.0.0/10",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
)


def listen_interfaces(config: Config) -> str:
    """`listen_interfaces` for the config: IPv6 too when listening on every IPv4 address;
    each address also with an SSL socket (`<port>s`, private groups' torrents: only these
    accept their connections, privacy.md 2.9)."""
    host, port, ssl_port = config.listen_host, config.listen_port, config.ssl_port
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    hosts = ["0.0.0.0", "[::]"] if host in ("0.0.0.0", "") else [host]  # noqa: S104
    return ",".join([f"{h}:{port}" for h in hosts] + [f"{h}:{ssl_port}s" for h in hosts])


def build_settings(config: Config, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings pack for a session run with this config, plus explicit overrides."""
    tcp = config.transport in ("both", "tcp")
    utp = config.transport in ("both", "utp")
    # "both" accepts either. It dials uTP first (TCP when that fails) when the session
    # maps ports, i.e. talks across homes: BEP 55 hole punching into a strict home
    # works only over uTP, and LEDBAT keeps the home uplink usable (nat.md "b.", "c.").
    # Otherwise it dials TCP: uTP took 8-9 s for 1 GiB on loopback against 3.1-4.7 s
    # over TCP ("Transfer speed" in engine.md); libtorrent cannot choose per peer.
    dial_utp = config.transport == "utp" or (config.transport == "both" and across_homes(config))
    settings: dict[str, Any] = {
        "user_agent": f"meshmedia/{__version__} libtorrent/{lt.__version__}",
        "listen_interfaces": listen_interfaces(config),
        # A taken port is not retried as port+1..+10 (libtorrent's default): port+1 can be
        # the curator's own HTTP --port, which then failed to bind with a message naming
        # the HTTP port. The system picks a free port instead and the engine says so.
        "max_retry_port_bind": 0,
        "enable_dht": config.dht,
        "enable_lsd": config.lsd,
        "enable_upnp": config.upnp,
        "enable_natpmp": config.natpmp,
        "enable_outgoing_tcp": tcp,
        "enable_incoming_tcp": tcp,
        "enable_outgoing_utp": dial_utp,
        "enable_incoming_utp": utp,
        "mixed_mode_algorithm": 0,  # prefer_tcp: uTP's delay-based backoff never starves TCP
        "alert_mask": (
            lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.storage_notification
            | lt.alert.category_t.port_mapping_notification
        ),
        "alert_queue_size": 10000,
        "allow_multiple_connections_per_ip": True,
        "active_seeds": -1,
        "active_downloads": -1,
        "active_limit": -1,
        "active_checking": 1,
        # A Raspberry Pi: a few dozen peers per torrent, a bounded total.
        "connections_limit": 200,
        "unchoke_slots_limit": 16,
        # A choked peer gets nothing, not even its "allowed fast" pieces: a capped seed
        # would otherwise send the same pieces to every client (engine.md, swarm).
        "allowed_fast_set_size": 0,
        "upload_rate_limit": config.upload_limit,
        "download_rate_limit": config.download_limit,
        **_THROUGHPUT,
        **_UTP,
        **_ACROSS_HOMES,
    }
    if config.dht_bootstrap:
        settings.update(dht_settings(config.dht_bootstrap))
    settings.update(overrides or {})
    return settings


def across_homes(config: Config) -> bool:
    """True when the session maps ports, i.e. talks to peers in other homes: where its
    home uplink is the narrowest link even with no upload limit set."""
    return config.upnp or config.natpmp


def dht_settings(nodes: tuple[str, ...]) -> dict[str, Any]:
    """Bootstrap from our own nodes (a private swarm, often on private addresses):
    libtorrent's defaults would ignore nodes and peers on private or shared IPs."""
    return {
        "dht_bootstrap_nodes": ",".join(nodes),
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
    }


def session_params(config: Config, overrides: dict[str, Any] | None = None) -> Any:
    """`session_params` with our settings and disk I/O backend."""
    params: Any = lt.session_params()  # the binding takes a dict where its stub says settings_pack
    params.settings = build_settings(config, overrides)
    params.disk_io_constructor = DISK_IO
    return params


def peer_class_filter() -> Any:
    """Every address in the global class (its limits hold everywhere); local nets also local."""
    global_bit = 1 << lt.session.global_peer_class_id
    local_bit = 1 << lt.session.local_peer_class_id
    rules = lt.ip_filter()
    rules.add_rule("0.0.0.0", "255.255.255.255", global_bit)  # noqa: S104 - an address range
    rules.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", global_bit)
    for cidr in LOCAL_NETWORKS:
        net = ipaddress.ip_network(cidr)
        rules.add_rule(str(net[0]), str(net[-1]), global_bit | local_bit)
    return rules


def is_local_address(host: str) -> bool:
    """True when the host is an IP literal on a loopback, private or link-local network."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(cidr) for cidr in LOCAL_NETWORKS)
