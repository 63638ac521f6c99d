"""A bare libtorrent session in a lab machine, driven line by line over JSON (research tool).

Run inside a host (`Agent` below does it): every line on stdin is one request, every line
on stdout one event. Requests (`op` plus arguments; an `id` is echoed in the reply):

    {"op": "start", "settings": {...}, "log": "regex"}     session with these settings
    {"op": "settings", "settings": {...}}                  apply_settings
    {"op": "add", "torrent": PATH, "save_path": DIR, "seed": bool, "flags": ["disable_pex"]}
    {"op": "connect", "ih": HEX, "ip": IP, "port": N, "source": N, "flags": N}
    {"op": "torrent", "ih": HEX, "call": "pause"|"resume"|"clear_peers"|...}
    {"op": "map", "protocol": "tcp"|"udp", "external": N, "local": N}   add_port_mapping
    {"op": "unmap", "handle": N}
    {"op": "dht_node", "ip": IP, "port": N}
    {"op": "pause"} / {"op": "resume"} / {"op": "status"} / {"op": "quit"}

Events carry `ev`, `t` (seconds since start) and fields: every alert of interest as
{"ev": "alert", "type": ..., "msg": ...} with its useful members copied out in the alert
thread (an alert is invalid after the next pop_alerts); "status" answers with torrents and
their peers (transport, source, counters). peer_log alerts are sent only when their text
matches the "log" regex of start (e.g. "HOLEPUNCH").
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libtorrent as lt

ALERTS = (
    "portmap_alert",
    "portmap_error_alert",
    "external_ip_alert",
    "listen_succeeded_alert",
    "listen_failed_alert",
    "peer_connect_alert",
    "peer_disconnected_alert",
    "incoming_connection_alert",
    "torrent_finished_alert",
    "peer_error_alert",
    "dht_bootstrap_alert",
    "torrent_error_alert",
)
UTP_SOCKET = 1 << 17
HOLEPUNCHED = 1 << 15
OUTGOING = 1 << 5


def _alert_fields(alert: Any) -> dict[str, Any]:
    """The members of `alert` worth keeping, as plain values."""
    fields: dict[str, Any] = {}
    for name in ("mapping", "external_port", "external_address", "error", "ip", "endpoint"):
        if not hasattr(alert, name):
            continue
        value = getattr(alert, name)
        if name == "error":
            value = value.message() if value.value() else ""
        elif isinstance(value, tuple):
            value = list(value)
        fields[name] = value if isinstance(value, (int, str, list)) else str(value)
    for name in ("map_transport", "map_protocol", "socket_type", "op", "reason"):
        if hasattr(alert, name):
            fields[name] = str(getattr(alert, name))
    return fields


class Runner:
    """The agent's side: one session, its alert thread, the request loop."""

    def __init__(self) -> None:
        self.start_time = time.monotonic()
        self.out_lock = threading.Lock()
        self.session: Any = None
        self.handles: dict[str, Any] = {}
        self.log_filter: re.Pattern[str] | None = None
        self.alert_thread: threading.Thread | None = None

    def emit(self, event: dict[str, Any]) -> None:
        """Write one event line."""
        event["t"] = round(time.monotonic() - self.start_time, 3)
        with self.out_lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    def alerts(self) -> None:
        """Copy the alerts of interest out and emit them, until the session goes."""
        while (session := self.session) is not None:
            session.wait_for_alert(200)
            for alert in session.pop_alerts():
                kind = type(alert).__name__
                if kind in ("peer_log_alert", "portmap_log_alert"):
                    text = alert.message()
                    if self.log_filter and self.log_filter.search(text):
                        self.emit({"ev": "alert", "type": kind, "msg": text})
                elif kind in ALERTS:
                    self.emit({"ev": "alert", "type": kind, "msg": alert.message(),
                               **_alert_fields(alert)})  # fmt: skip

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Carry out one request; the reply's fields, or None to stop."""
        op = request["op"]
        if op == "start":
            self.log_filter = re.compile(request["log"]) if request.get("log") else None
            self.session = lt.session(request.get("settings", {}))
            self.alert_thread = threading.Thread(target=self.alerts, daemon=True)
            self.alert_thread.start()
        elif op == "settings":
            self.session.apply_settings(request["settings"])
        elif op == "add":
            return self.add(request)
        elif op == "connect":
            handle = self.handles[request["ih"]]
            flags = request.get("flags", 13)
            handle.connect_peer((request["ip"], request["port"]), request.get("source", 0), flags)
        elif op == "torrent":  # a torrent_handle method without arguments: pause, resume, ...
            getattr(self.handles[request["ih"]], request["call"])()
        elif op == "map":
            protocol = (
                lt.portmap_protocol.tcp if request["protocol"] == "tcp" else lt.portmap_protocol.udp
            )
            mapped = self.session.add_port_mapping(protocol, request["external"], request["local"])
            return {"handles": [int(h) for h in mapped]}
        elif op == "unmap":
            self.session.delete_port_mapping(request["handle"])
        elif op == "dht_node":
            self.session.add_dht_node((request["ip"], request["port"]))
        elif op in ("pause", "resume"):
            getattr(self.session, op)()
        elif op == "status":
            return {"torrents": [self.torrent_status(h) for h in self.handles.values()]}
        elif op == "quit":
            return None
        else:
            raise ValueError(f"unknown op {op}")
        return {}

    def add(self, request: dict[str, Any]) -> dict[str, Any]:
        """Add a torrent from a .torrent file, as a seed (every piece had) or a download."""
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(request["torrent"])
        params.save_path = request["save_path"]
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        if request.get("seed"):
            params.flags |= lt.torrent_flags.seed_mode
        for flag in request.get("flags", []):  # e.g. "disable_pex"
            params.flags |= getattr(lt.torrent_flags, flag)
        params.peers = [tuple(peer) for peer in request.get("peers", [])]
        handle = self.session.add_torrent(params)
        ih = str(handle.info_hashes().v1)
        self.handles[ih] = handle
        return {"ih": ih}

    @staticmethod
    def torrent_status(handle: Any) -> dict[str, Any]:
        """A torrent's progress, counters and peers, as plain values."""
        status = handle.status()
        peers = [
            {
                "ip": list(peer.ip),
                "utp": bool(int(peer.flags) & UTP_SOCKET),
                "outgoing": bool(int(peer.flags) & OUTGOING),
                "holepunched": bool(int(peer.flags) & HOLEPUNCHED),
                "source": int(peer.source),
                "client": peer.client.decode(errors="replace")
                if isinstance(peer.client, bytes)
                else str(peer.client),
                "total_download": peer.total_download,
                "total_upload": peer.total_upload,
                "down_speed": peer.payload_down_speed,
                "up_speed": peer.payload_up_speed,
                "rtt": peer.rtt,
            }
            for peer in handle.get_peer_info()
        ]
        return {
            "ih": str(handle.info_hashes().v1),
            "state": str(status.state),
            "progress": status.progress,
            "total_download": status.total_payload_download,
            "total_upload": status.total_payload_upload,
            "download_rate": status.download_payload_rate,
            "upload_rate": status.upload_payload_rate,
            "is_seeding": status.is_seeding,
            "list_peers": status.list_peers,
            "connect_candidates": status.connect_candidates,
            "num_connections": status.num_connections,
            "peers": peers,
        }

    def run(self) -> None:
        """Read requests until quit or end of input."""
        self.emit({"ev": "ready", "pid": os.getpid()})
        for line in sys.stdin:
            request = json.loads(line)
            try:
                reply = self.handle(request)
            except Exception as exc:  # a bad request is reported, the agent goes on
                self.emit({"ev": "error", "id": request.get("id"), "error": repr(exc)})
                continue
            if reply is None:
                break
            self.emit({"ev": "reply", "id": request.get("id"), "op": request["op"], **reply})
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the alert thread, then close the session the way a daemon's exit does
        (abort, and wait for it: libtorrent then removes its port mappings)."""
        session, self.session = self.session, None
        if self.alert_thread is not None:
            self.alert_thread.join()
        if session is not None:
            proxy = session.abort()
            del session
            del proxy


class Agent:
    """The test's side: starts the agent in `host`, sends requests, collects events."""

    def __init__(self, host: Any, log: Path) -> None:
        self.host = host
        self.log = log
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.ids = iter(range(1, 1 << 30))
        with log.open("ab") as err:
            self.proc = host.popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
            )
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["ev"] == "ready", 30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its reply (raises on an error event)."""
        ident = next(self.ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "id": ident, **args}) + "\n")
        self.proc.stdin.flush()
        event = self.wait(lambda e: e.get("id") == ident, timeout)
        if event["ev"] == "error":
            raise RuntimeError(f"{self.host.name}: {op}: {event['error']}")
        return event

    def wait(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float, start: int = 0
    ) -> dict[str, Any]:
        """The first event (from index `start`) for which `predicate` holds; waits for it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"{self.host.name}: no such event in {timeout}s")
                self.cond.wait(left)

    def alerts(self, kind: str, start: int = 0) -> list[dict[str, Any]]:
        """Every alert of type `kind` so far (from event index `start`)."""
        with self.cond:
            return [e for e in self.events[start:] if e.get("type") == kind]

    def status(self) -> list[dict[str, Any]]:
        """The torrents' status now."""
        return list(self.request("status")["torrents"])

    def close(self) -> None:
        """Ask the agent to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def make_torrent(path: Path, piece_size: int = 256 * 1024) -> Path:
    """Write `path`.torrent for the file `path` (v1, no trackers); its path."""
    entry = lt.create_file_entry(path.name, path.stat().st_size)
    creator = lt.create_torrent([entry], piece_size, lt.create_torrent.v1_only)
    with path.open("rb") as source:
        for index in range(creator.num_pieces()):
            creator.set_hash(index, hashlib.sha1(source.read(piece_size)).digest())
    out = path.with_name(path.name + ".torrent")
    out.write_bytes(lt.bencode(creator.generate()))
    return out


MASK = (
    "error_notification status_notification port_mapping_notification peer_notification "
    "connect_notification"
)


def alert_mask(names: str = MASK) -> int:
    """An alert_mask from category names (libtorrent.alert.category_t)."""
    mask = 0
    for name in names.split():
        mask |= int(getattr(lt.alert.category_t, name))
    return mask


def lab_settings(
    port: int = 6881, upnp: bool = True, natpmp: bool = True, utp: bool = True,
    tcp: bool = True, log: bool = False, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """A settings pack for a lab peer: listen on every address at `port`, no DHT or LSD,
    the mapping protocols and outgoing transports as given, meshmedia's socket buffers
    and tick (native_notes/engine.md); `extra` overrides any of it."""
    settings: dict[str, Any] = {
        "listen_interfaces": f"0.0.0.0:{port}",
        "enable_upnp": upnp,
        "enable_natpmp": natpmp,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_outgoing_utp": utp,
        "enable_outgoing_tcp": tcp,
        "allow_multiple_connections_per_ip": True,
        "send_socket_buffer_size": 4 << 20,
        "recv_socket_buffer_size": 4 << 20,
        "tick_interval": 100,
        "alert_mask": alert_mask(MASK + (" peer_log_notification" if log else "")),
    }
    settings.update(extra)
    return settings


class LtPeer:
    """An Agent with one torrent: a seed of `source` or a download into `save_dir`;
    `flags` are torrent_flags names to set (e.g. "disable_pex")."""

    def __init__(
        self,
        host: Any,
        logs: Path,
        torrent: Path,
        save_dir: Path,
        seed: bool = False,
        log: str | None = None,
        flags: tuple[str, ...] = (),
        **settings: Any,
    ) -> None:
        self.host = host
        self.agent = Agent(host, logs / f"{host.name}.ltagent.log")
        self.agent.request("start", settings=lab_settings(log=bool(log), **settings), log=log)
        save_dir.mkdir(parents=True, exist_ok=True)
        added = self.agent.request(
            "add", torrent=str(torrent), save_path=str(save_dir), seed=seed, flags=list(flags)
        )
        self.ih = str(added["ih"])

    def connect(self, address: str, port: int = 6881, flags: int = 13) -> None:
        """connect_peer(address:port) on the torrent (pex flags: 13 = default)."""
        self.agent.request("connect", ih=self.ih, ip=address, port=port, flags=flags)

    def status(self) -> dict[str, Any]:
        """The torrent's status with its peers."""
        return self.agent.status()[0]

    def peer(self, address: str) -> dict[str, Any] | None:
        """The connection with `address` (the peer's ip as seen here), or None."""
        found = [p for p in self.status()["peers"] if p["ip"][0] == address]
        return found[0] if found else None

    def close(self) -> None:
        """Quit the agent (the session closes and removes its port mappings)."""
        self.agent.close()


if __name__ == "__main__":
    Runner().run()
