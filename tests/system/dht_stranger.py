"""A stranger on the lab's DHT (issue 14): collects what the DHT gives it, then tries
every info hash it saw on every address. Run inside a lab host:

    python -m tests.system.dht_stranger OWN_IP SECONDS BOOTSTRAP_IP:PORT KEY_HEX ADDR...

It collects for at most SECONDS, or until a line (or the end) comes on stdin.

Its own DHT node records the get_peers and announces that reach it and every put it
stores (their values); it asks every ADDR (port 6881) for `sample_infohashes`, looks
up every hash it saw with `get_peers`, gets the BEP 46 items under KEY with guessed
salts, then adds each hash (at most 12) as a magnet and dials every ADDR on the plain
and the SSL port. Prints one JSON line of what it learnt.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Any

import libtorrent as lt

SALTS = (b"", b"default", b"family", b"Default")
PORTS = (6881, 6882)


def _session(own: str, bootstrap: str) -> Any:
    mask = (
        lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_log_notification
        | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.status_notification
    )
    return lt.session(
        {
            "listen_interfaces": f"{own}:6881,{own}:6882s",
            "enable_dht": True,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_bootstrap_nodes": bootstrap,
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_ignore_dark_internet": False,
            "dht_prefer_verified_node_ids": False,
            "dht_block_ratelimit": 10000,
            "alert_mask": int(mask),
        }
    )


class Seen:
    """What reached the stranger."""

    def __init__(self) -> None:
        self.hashes: set[str] = set()
        self.get_peers_in: set[str] = set()
        self.announces_in: set[str] = set()
        self.samples: set[str] = set()
        self.peers: dict[str, set[str]] = {}
        self.put_values: list[str] = []
        self.items: dict[str, str] = {}

    def take(self, alerts: list[Any]) -> None:
        for a in alerts:
            if isinstance(a, lt.dht_get_peers_alert):
                self.get_peers_in.add(str(a.info_hash))
            elif isinstance(a, lt.dht_announce_alert):
                self.announces_in.add(str(a.info_hash))
            elif isinstance(a, lt.dht_sample_infohashes_alert):
                self.samples.update(str(s) for s in a.samples)
            elif isinstance(a, lt.dht_get_peers_reply_alert):
                found = {f"{ip}:{port}" for ip, port in a.peers()}
                self.peers.setdefault(str(a.info_hash), set()).update(found)
            elif isinstance(a, lt.dht_pkt_alert):
                self._packet(bytes(a.pkt_buf))
            elif isinstance(a, lt.dht_mutable_item_alert) and a.item:
                item = a.item if isinstance(a.item, bytes) else b""
                self.items[bytes(a.salt).hex()] = item.hex()
        self.hashes = self.get_peers_in | self.announces_in | self.samples

    def _packet(self, buf: bytes) -> None:
        try:
            msg = lt.bdecode(buf)
        except RuntimeError:
            return
        if isinstance(msg, dict) and msg.get(b"q") == b"put":
            value = msg.get(b"a", {}).get(b"v")
            if isinstance(value, bytes):
                self.put_values.append(value.hex())


def main(argv: list[str]) -> None:
    own, seconds, bootstrap, key = argv[0], float(argv[1]), argv[2], bytes.fromhex(argv[3])
    addresses = argv[4:]
    ses = _session(own, bootstrap)
    seen = Seen()
    end = time.monotonic() + seconds
    while time.monotonic() < end and not select.select([sys.stdin], [], [], 0)[0]:
        for address in addresses:
            ses.dht_sample_infohashes((address, 6881), lt.sha1_hash(os.urandom(20)))
        for salt in SALTS:
            ses.dht_get_mutable_item(key, salt)
        for ih in list(seen.hashes):
            ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(ih)))
        for _ in range(50):
            seen.take(ses.pop_alerts())
            time.sleep(0.1)
    handles = {}
    for ih in sorted(seen.hashes)[:12]:
        atp = lt.parse_magnet_uri(f"magnet:?xt=urn:btih:{ih}")
        atp.save_path = f"/tmp/stranger-{os.getpid()}"
        handles[ih] = ses.add_torrent(atp)
        for address in addresses:
            for port in PORTS:
                handles[ih].connect_peer((address, port), 0, 1)
    for _ in range(150):  # 15 s for metadata from anyone
        seen.take(ses.pop_alerts())
        time.sleep(0.1)
    got = {}
    for ih, handle in handles.items():
        status = handle.status()
        got[ih] = {
            "metadata": status.name if status.has_metadata else None,
            "bytes": int(status.total_payload_download),
        }
    print(
        json.dumps(
            {
                "hashes": sorted(seen.hashes),
                "get_peers_in": sorted(seen.get_peers_in),
                "announces_in": sorted(seen.announces_in),
                "samples": sorted(seen.samples),
                "peers": {k: sorted(v) for k, v in seen.peers.items()},
                "put_values": seen.put_values,
                "items": seen.items,
                "tried": got,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
