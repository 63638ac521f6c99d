"""Copies a rate-limited full seed sends to N downloaders, per libtorrent option (issue 15).

One full seed with its upload capped and N downloaders, each a real libtorrent
2.1 session in its own process, configured exactly as meshmedia configures its
engine (`meshmedia.engine_settings.session_params` and the peer class filter,
so the cap holds on the LAN) plus the variant's changes. The downloaders get
the .torrent (no metadata exchange), are told the seed's address and find each
other by PEX, as meshmedia's clients do; they keep seeding once complete.
Prints, per variant, the copies the seed sent (its `total_payload_upload` /
item size) and the seconds until every downloader had the whole item: the
median of `--runs` runs, with the load average at the start of each run.

    .venv/bin/python benchmarks/swarm.py --list
    .venv/bin/python benchmarks/swarm.py --variants default,super_seed --runs 3
    .venv/bin/python benchmarks/swarm.py --clients 1 --variants default,super_seed
    .venv/bin/python benchmarks/swarm.py --clients 3 --delay-ms 50 --seed-limit 2M \\
        --size 40M --client-limit 2M --variants default,super_seed

`--lab netns` (default; needs root) puts every session on its own host of
tests/system/netlab.py (a bridge; `--delay-ms` runs the userspace switch that
delays what every host sends); `--lab loopback` uses 127.0.0.2, 127.0.0.3, ...
Results: native_notes/engine.md, "Swarm: N clients for one upload".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt

from meshmedia.config import Config, parse_size
from meshmedia.engine.settings import peer_class_filter, session_params

MiB = 1 << 20
PORT = 6881
TRACE = os.environ.get("SWARM_TRACE") == "1"


@dataclass(frozen=True)
class Variant:
    """What one experiment changes against meshmedia's configuration of today."""

    about: str
    seed: dict[str, Any] = field(default_factory=dict)  # settings on the full seed
    peers: dict[str, Any] = field(default_factory=dict)  # settings on every downloader
    super_seed: bool = False  # torrent_flags.super_seeding on the full seed
    piece_size: int | None = None  # None: meshmedia's rule (hashing.piece_size_for)
    mesh: bool = False  # downloaders connect_peer each other at the start, not by PEX
    local_class: bool = True  # LAN peers also in libtorrent's local class (no unchoke limit)
    torrent_limit: bool = False  # the cap as a per-torrent limit instead of the session's
    max_uploads: int = -1  # torrent_handle.set_max_uploads on the seed (-1: no limit)


_LT_RR, _LT_FASTEST, _LT_ANTILEECH = 0, 1, 2
VARIANTS: dict[str, Variant] = {
    "default": Variant("meshmedia's engine settings of today"),
    "super_seed": Variant("torrent_flags.super_seeding on the full seed", super_seed=True),
    "super_seed_mesh": Variant("super seeding, downloaders meshed at once", super_seed=True,
                               mesh=True),
    "mesh": Variant("downloaders connect_peer each other at once", mesh=True),
    "fastest_upload": Variant("seed_choking_algorithm fastest_upload, 2 unchoke slots",
                              seed={"seed_choking_algorithm": _LT_FASTEST,
                                    "unchoke_slots_limit": 2}, local_class=False),
    "anti_leech": Variant("seed_choking_algorithm anti_leech, 2 unchoke slots",
                          seed={"seed_choking_algorithm": _LT_ANTILEECH,
                                "unchoke_slots_limit": 2}, local_class=False),
    "round_robin2": Variant("seed_choking_algorithm round_robin, 2 unchoke slots",
                            seed={"seed_choking_algorithm": _LT_RR, "unchoke_slots_limit": 2},
                            local_class=False),
    "slots1": Variant("1 unchoke slot on the seed (LAN peers counted)",
                      seed={"unchoke_slots_limit": 1}, local_class=False),
    "piece64k": Variant("64 KiB pieces", piece_size=64 << 10),
    "piece128k": Variant("128 KiB pieces", piece_size=128 << 10),
    "piece1m": Variant("1 MiB pieces", piece_size=1 << 20),
    "no_strict_endgame": Variant("strict_end_game_mode off on the downloaders",
                                 peers={"strict_end_game_mode": False}),
    "picker0": Variant("initial_picker_threshold 0 (rarest first at once)",
                       peers={"initial_picker_threshold": 0}),
    "picker50": Variant("initial_picker_threshold 50 (random pieces longer)",
                        peers={"initial_picker_threshold": 50}),
    "queue1s": Variant("request_queue_time 1 s on the downloaders (default 3)",
                       peers={"request_queue_time": 1}),
    "queue_small": Variant("max_out_request_queue 16 on the downloaders (ours 1500)",
                           peers={"max_out_request_queue": 16}),
    "piece_timeout5": Variant("piece_timeout 5 s, request_timeout 10 s on the downloaders",
                              peers={"piece_timeout": 5, "request_timeout": 10}),
    "tick500": Variant("tick_interval 500 ms everywhere (rate limiter quota granularity)",
                       seed={"tick_interval": 500}, peers={"tick_interval": 500}),
    "seed_queue16": Variant("max_allowed_in_request_queue 16 on the seed (default 2000)",
                            seed={"max_allowed_in_request_queue": 16}),
    "seed_queue64": Variant("max_allowed_in_request_queue 64 on the seed",
                            seed={"max_allowed_in_request_queue": 64}),
    "seed_queue250": Variant("max_allowed_in_request_queue 250 on the seed",
                             seed={"max_allowed_in_request_queue": 250}),
    "slots2": Variant("2 unchoke slots on the seed (LAN peers counted)",
                      seed={"unchoke_slots_limit": 2}, local_class=False),
    "slots1_fastest": Variant("1 unchoke slot and seed_choking_algorithm fastest_upload",
                              seed={"unchoke_slots_limit": 1,
                                    "seed_choking_algorithm": _LT_FASTEST}, local_class=False),
    "slots1_q16": Variant("1 unchoke slot and max_allowed_in_request_queue 16 on the seed",
                          seed={"unchoke_slots_limit": 1, "max_allowed_in_request_queue": 16},
                          local_class=False),
    # set_max_uploads refuses 1 ("max_uploads must be at least 2") in 2.1.1.
    "max_uploads2": Variant("seed: 2 unchoked peers per torrent, LAN counted",
                            max_uploads=2, local_class=False),
    "max_uploads2_q16": Variant("max_uploads2 and max_allowed_in_request_queue 16 on the seed",
                                max_uploads=2, local_class=False,
                                seed={"max_allowed_in_request_queue": 16}),
    "max_uploads2_q64": Variant("max_uploads2 and max_allowed_in_request_queue 64 on the seed",
                                max_uploads=2, local_class=False,
                                seed={"max_allowed_in_request_queue": 64}),
    "max_uploads3_q16": Variant("3 unchoked peers per torrent, max_allowed_in_request_queue 16",
                                max_uploads=3, local_class=False,
                                seed={"max_allowed_in_request_queue": 16}),
    "slots1_noaf": Variant("1 unchoke slot, allowed_fast_set_size 0 on the seed",
                           seed={"unchoke_slots_limit": 1, "allowed_fast_set_size": 0},
                           local_class=False),
    "slots1_ui5": Variant("1 unchoke slot, unchoke_interval 5 s on the seed",
                          seed={"unchoke_slots_limit": 1, "unchoke_interval": 5},
                          local_class=False),
    "slots1_rot5": Variant(
        "1 unchoke slot, rotate every 5 s (unchoke_interval 5, seeding_piece_quota 4), "
        "allowed_fast_set_size 0",
        seed={"unchoke_slots_limit": 1, "unchoke_interval": 5, "seeding_piece_quota": 4,
              "allowed_fast_set_size": 0},
        local_class=False,
    ),
    "slots1_rot2": Variant(
        "1 unchoke slot, rotate every 2 s (unchoke_interval 2, seeding_piece_quota 2), "
        "allowed_fast_set_size 0",
        seed={"unchoke_slots_limit": 1, "unchoke_interval": 2, "seeding_piece_quota": 2,
              "allowed_fast_set_size": 0},
        local_class=False,
    ),
    "slots2_q16": Variant("2 unchoke slots, max_allowed_in_request_queue 16 on the seed",
                          seed={"unchoke_slots_limit": 2, "max_allowed_in_request_queue": 16},
                          local_class=False),
    "max_uploads2_q128": Variant(
        "max_uploads2 and max_allowed_in_request_queue 128 on the seed",
        max_uploads=2, local_class=False, seed={"max_allowed_in_request_queue": 128},
    ),
    "max_uploads2_q64_noaf": Variant(
        "max_uploads2_q64 and allowed_fast_set_size 0 on the seed",
        max_uploads=2, local_class=False,
        seed={"max_allowed_in_request_queue": 64, "allowed_fast_set_size": 0},
    ),
    "affinity": Variant("piece_extent_affinity on the downloaders (4 MiB extents)",
                        peers={"piece_extent_affinity": True}),
    "max_uploads2_q16_affinity": Variant(
        "max_uploads2_q16 and piece_extent_affinity on the downloaders",
        max_uploads=2, local_class=False, seed={"max_allowed_in_request_queue": 16},
        peers={"piece_extent_affinity": True},
    ),
    "slots1_affinity": Variant(
        "1 unchoke slot, allowed_fast_set_size 0; piece_extent_affinity on the downloaders",
        seed={"unchoke_slots_limit": 1, "allowed_fast_set_size": 0}, local_class=False,
        peers={"piece_extent_affinity": True},
    ),
    "max_uploads2_q16_noaf": Variant(
        "max_uploads2_q16 and allowed_fast_set_size 0 on the seed",
        max_uploads=2, local_class=False,
        seed={"max_allowed_in_request_queue": 16, "allowed_fast_set_size": 0},
    ),
    "max_uploads2_q8_noaf": Variant(
        "2 unchoked per torrent, max_allowed_in_request_queue 8, allowed_fast_set_size 0",
        max_uploads=2, local_class=False,
        seed={"max_allowed_in_request_queue": 8, "allowed_fast_set_size": 0},
    ),
    "max_uploads2_q16_fastest": Variant(
        "max_uploads2_q16_noaf and seed_choking_algorithm fastest_upload (no rotation)",
        max_uploads=2, local_class=False,
        seed={"max_allowed_in_request_queue": 16, "allowed_fast_set_size": 0,
              "seed_choking_algorithm": _LT_FASTEST},
    ),
    "torrent_limit": Variant("the cap as a per-torrent upload limit", torrent_limit=True),
}  # fmt: skip


# -- the worker: one session in its own process ------------------------------------
def emit(**fields: Any) -> None:
    """One JSON line to the orchestrator."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def global_only_filter() -> Any:
    """Every address in the global class only: unchoke slots then count LAN peers too."""
    rules = lt.ip_filter()
    bit = 1 << lt.session.global_peer_class_id
    rules.add_rule("0.0.0.0", "255.255.255.255", bit)
    return rules


def worker(spec: dict[str, Any]) -> None:
    """Run one session until told to quit; JSON lines on stdout, commands on stdin."""
    variant = VARIANTS[spec["variant"]]
    seed = spec["role"] == "seed"
    limit = 0 if variant.torrent_limit else spec["up"]
    config = Config(
        listen_host=spec["addr"], listen_port=spec["port"], dht=False, lsd=False, upnp=False,
        natpmp=False, upload_limit=limit,
    )  # fmt: skip
    settings = {**spec.get("settings", {}), **(variant.seed if seed else variant.peers)}
    ses = lt.session(session_params(config, settings))
    ses.set_peer_class_filter(peer_class_filter() if variant.local_class else global_only_filter())
    handles = [_add(ses, torrent, spec, variant, seed) for torrent in spec["torrents"]]
    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_read_commands, args=(commands,), daemon=True).start()
    emit(event="ready", port=ses.listen_port())
    _serve(ses, handles[0], commands)


def _add(ses: Any, torrent: str, spec: dict[str, Any], variant: Variant, seed: bool) -> Any:
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = spec["save"]
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if seed:
        atp.have_pieces = [True] * atp.ti.num_pieces()
        if variant.super_seed:
            atp.flags |= lt.torrent_flags.super_seeding
    handle = ses.add_torrent(atp)
    if seed and variant.max_uploads >= 0:
        handle.set_max_uploads(variant.max_uploads)
    if variant.torrent_limit and spec["up"]:
        handle.set_upload_limit(spec["up"])
    return handle


def _read_commands(commands: queue.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        commands.put(json.loads(line))
    commands.put({"cmd": "quit"})


def _serve(ses: Any, handle: Any, commands: queue.Queue[dict[str, Any]]) -> None:
    # Connections between two seeds close at once: keep each connection's byte
    # counts (by remote endpoint) as they were last seen.
    per_peer: dict[tuple[str, int], tuple[int, int]] = {}
    looked = 0.0
    while True:
        ses.wait_for_alert(50)
        if time.monotonic() - looked > 0.2:
            looked = time.monotonic()
            peers = handle.get_peer_info()
            for p in peers:
                per_peer[tuple(p.ip)] = (p.total_download, p.total_upload)
            if TRACE:
                _trace(handle, peers)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.torrent_finished_alert):
                emit(event="done", at=time.monotonic())
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if command["cmd"] == "quit":
            return
        if command["cmd"] == "connect":
            for host, port in command["peers"]:
                handle.connect_peer((host, port), 0, 1)
        elif command["cmd"] == "stats":
            for p in handle.get_peer_info():
                per_peer[tuple(p.ip)] = (p.total_download, p.total_upload)
            emit(event="stats", **_stats(handle, per_peer), counters=_counters(ses))


def _trace(handle: Any, peers: list[Any]) -> None:
    """SWARM_TRACE=1: one stderr line per look (payload up/down, each peer's flags)."""
    st = handle.status()
    flags = " ".join(
        f"{p.ip[0]}:{'I' if p.flags & lt.peer_info.interesting else 'i'}"
        f"{'C' if p.flags & lt.peer_info.choked else 'c'}"
        f"{'R' if p.flags & lt.peer_info.remote_interested else 'r'}"
        f"{'X' if p.flags & lt.peer_info.remote_choked else 'x'}{p.upload_queue_length}"
        for p in peers
    )
    print(
        f"{time.monotonic():.2f} up {st.total_payload_upload >> 10} KiB down "
        f"{st.total_payload_download >> 10} KiB {flags}",
        file=sys.stderr,
        flush=True,
    )


COUNTERS = (
    "ses.num_incoming_request", "ses.num_outgoing_reject", "ses.num_incoming_reject",
    "picker.end_game_piece_picks", "net.recv_redundant_bytes", "ses.waste_piece_end_game",
)  # fmt: skip


def _counters(ses: Any) -> dict[str, float]:
    """A few session counters (requests and rejects on the wire, waste) and this
    process's CPU seconds."""
    ses.post_session_stats()
    values: dict[str, float] = {}
    deadline = time.monotonic() + 5
    while not values and time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.session_stats_alert):
                values = {name: alert.values[name] for name in COUNTERS}
    times = os.times()
    values["cpu_s"] = times.user + times.system
    return values


def _stats(handle: Any, per_peer: dict[tuple[str, int], tuple[int, int]]) -> dict[str, Any]:
    st = handle.status()
    peers = [
        {"endpoint": list(endpoint), "down": down, "up": up}
        for endpoint, (down, up) in per_peer.items()
    ]
    return {
        "up": st.total_payload_upload,
        "down": st.total_payload_download,
        "redundant": st.total_redundant_bytes,
        "progress": st.progress,
        "peers": peers,
    }


# -- the orchestrator ---------------------------------------------------------------
class Node:
    """One worker process and the lines it sent."""

    def __init__(self, argv: list[str], address: str) -> None:
        self.address = address
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.expect("ready", 30)["port"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.put(json.loads(line))

    def send(self, **command: Any) -> None:
        """A command line to the worker."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line with this event (others are dropped); TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"{self.address}: no {event!r} (exit {self.proc.poll()})")
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line.get("event") == event:
                return line

    def stats(self) -> dict[str, Any]:
        """The worker's torrent counters now."""
        self.send(cmd="stats")
        return self.expect("stats", 10)

    def stop(self) -> None:
        """Close stdin (the worker quits), kill it after 10 s."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Lab:
    """Where the sessions run: hosts of a netlab Network, or 127.0.0.x on this host."""

    def __init__(self, kind: str, hosts: int, delay_ms: float) -> None:
        self.kind = kind
        self.network: Any = None
        if kind == "netns":
            from tests.system.netlab import Network  # noqa: PLC0415 - needs root, netns only

            self.network = Network(n_hosts=hosts, prefix="mmswarm")
            self.network.__enter__()
            if delay_ms:
                self.network.impair(delay_ms=delay_ms)
        elif delay_ms:
            raise SystemExit("--delay-ms needs --lab netns")

    def address(self, index: int) -> str:
        """The address of host `index`."""
        return self.network.hosts[index].address if self.network else f"127.0.0.{index + 2}"

    def port(self) -> int:
        """The listen port for a new session (fixed in namespaces, free on loopback)."""
        if self.network:
            return PORT
        from benchmarks.common import free_port  # noqa: PLC0415

        return free_port()

    def wrap(self, index: int, argv: list[str]) -> list[str]:
        """`argv` run on host `index`."""
        return self.network.hosts[index].command(argv) if self.network else argv

    def close(self) -> None:
        """Tear the network down."""
        if self.network is not None:
            self.network.close()


def make_item(folder: Path, size: int, piece_size: int, name: str = "item") -> Path:
    """A random file and its v1 .torrent at `piece_size`; returns the .torrent path."""
    data = folder / f"{name}.bin"
    if not data.exists() or data.stat().st_size != size:
        with data.open("wb") as out:
            for start in range(0, size, 16 * MiB):
                out.write(os.urandom(min(16 * MiB, size - start)))
    torrent = folder / f"{name}-{piece_size}.torrent"
    if not torrent.exists():
        entries = [lt.create_file_entry(data.name, size)]
        ct = lt.create_torrent(entries, piece_size, lt.create_torrent.v1_only)
        lt.set_piece_hashes(ct, str(folder))
        torrent.write_bytes(lt.bencode(ct.generate()))
    return torrent


@dataclass
class Run:
    """The outcome of one run."""

    copies: float
    seconds: float
    load: float
    client_up: list[int]
    from_seed: list[int]
    seed_counters: dict[str, float]
    client_cpu: list[float]
    second_s: float | None = None


def one_run(lab: Lab, work: Path, torrents: list[Path], name: str, args: argparse.Namespace) -> Run:
    """Start a seed and the downloaders, wait until all are complete, read the counters.

    With a second torrent, one more client starts downloading it `--second-after`
    seconds after the others started on the first."""
    load = os.getloadavg()[0]
    variant = VARIANTS[name]
    torrent = torrents[0]
    nodes: list[Node] = []
    second_s = None
    try:
        seed = _start(lab, 0, "seed", torrents, torrent.parent, name, args.seed_limit)
        nodes.append(seed)
        peers = []
        for index in range(1, args.clients + 1):
            save = work / f"client{index}"
            save.mkdir()
            peers.append(_start(lab, index, "peer", [torrent], save, name, args.client_limit))
        nodes.extend(peers)
        late = None
        if len(torrents) > 1:
            save = work / f"client{args.clients + 1}"
            save.mkdir()
            late = _start(lab, args.clients + 1, "peer", torrents[1:], save, name, 0)
            nodes.append(late)
        started = time.monotonic()
        for peer in peers:
            others = [(p.address, p.port) for p in peers if p is not peer] if variant.mesh else []
            peer.send(cmd="connect", peers=[(seed.address, seed.port), *others])
        timeout = args.size / max(args.seed_limit or 1, 1) * 6 + 120
        if late is not None:
            time.sleep(args.second_after)
            late_start = time.monotonic()
            late.send(cmd="connect", peers=[(seed.address, seed.port)])
            second_s = late.expect("done", timeout)["at"] - late_start
        finished = [peer.expect("done", timeout)["at"] for peer in peers]
        seed_stats = seed.stats()
        peer_stats = [peer.stats() for peer in peers]
    finally:
        for node in nodes:
            node.stop()
        for index in range(1, args.clients + 2):
            shutil.rmtree(work / f"client{index}", ignore_errors=True)
    seed_endpoint = [seed.address, seed.port]
    from_seed = [
        sum(p["down"] for p in st["peers"] if p["endpoint"] == seed_endpoint) for st in peer_stats
    ]
    return Run(
        copies=seed_stats["up"] / args.size,
        seconds=max(finished) - started,
        load=load,
        client_up=[st["up"] for st in peer_stats],
        from_seed=from_seed,
        seed_counters=seed_stats["counters"],
        client_cpu=[st["counters"]["cpu_s"] for st in peer_stats],
        second_s=second_s,
    )


def _start(
    lab: Lab, index: int, role: str, torrents: list[Path], save: Path, variant: str, up: int
) -> Node:
    address = lab.address(index)
    # On loopback, outgoing connections must leave from the session's own address,
    # or PEX hands out 127.0.0.1 with a port nobody listens on there.
    settings = {} if lab.network else {"outgoing_interfaces": address}
    spec = {
        "role": role, "addr": address, "port": lab.port(), "torrents": [str(t) for t in torrents],
        "save": str(save), "variant": variant, "up": up, "settings": settings,
    }  # fmt: skip
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    return Node(lab.wrap(index, argv), spec["addr"])


def piece_size_of(variant: Variant, size: int) -> int:
    """The variant's piece size, or meshmedia's rule for this size."""
    from meshmedia.hashing import piece_size_for  # noqa: PLC0415

    return variant.piece_size or piece_size_for(size)


def main() -> int:
    """Run the chosen variants and print one line per variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--variants", default="default", help="comma-separated names (--list)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=parse_size, default=parse_size("100M"))
    parser.add_argument("--seed-limit", type=parse_size, default=parse_size("10M"))
    parser.add_argument("--client-limit", type=parse_size, default=0, help="0: uncapped")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way, every host")
    parser.add_argument(
        "--second",
        type=parse_size,
        default=0,
        help="size of a second item one more client fetches (0: none)",
    )
    parser.add_argument(
        "--second-after",
        type=float,
        default=2.0,
        help="seconds after the start the second item's client starts",
    )
    parser.add_argument("--lab", choices=("netns", "loopback"), default="netns")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (temp dir)")
    parser.add_argument("--json", type=Path, help="append every run as a JSON line here")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    if args.list:
        for name, variant in VARIANTS.items():
            print(f"{name:20} {variant.about}")
        return 0
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown} (see --list)")
    print(
        f"swarm: {args.clients} clients, {args.size / MiB:.0f} MiB, seed capped at "
        f"{args.seed_limit / MiB:g} MiB/s, clients {args.client_limit / MiB:g} MiB/s (0 = none), "
        f"one-way delay {args.delay_ms:g} ms, lab {args.lab}, {args.runs} runs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mm-swarm-") as tmp:
        lab = Lab(args.lab, args.clients + 1 + (1 if args.second else 0), args.delay_ms)
        try:
            for name in names:
                report(name, list(_runs(lab, Path(tmp), name, args)), args)
        finally:
            lab.close()
    return 0


def _runs(lab: Lab, work: Path, name: str, args: argparse.Namespace) -> Iterator[Run]:
    item = work / "item"
    item.mkdir(exist_ok=True)
    torrents = [make_item(item, args.size, piece_size_of(VARIANTS[name], args.size))]
    if args.second:
        piece = piece_size_of(VARIANTS[name], args.second)
        torrents.append(make_item(item, args.second, piece, "second"))
    for _ in range(args.runs):
        run = one_run(lab, work, torrents, name, args)
        print(
            f"  {name} run: {run.copies:.2f} copies, {run.seconds:.1f} s, load {run.load:.2f}, "
            f"from seed MiB {[b // MiB for b in run.from_seed]}, "
            f"client up MiB {[b // MiB for b in run.client_up]}, seed "
            f"{ {k.split('.')[-1]: round(v, 1) for k, v in run.seed_counters.items()} }, "
            f"client cpu s {[round(c, 1) for c in run.client_cpu]}"
            + (f", second item {run.second_s:.1f} s" if run.second_s is not None else ""),
            flush=True
        )  # fmt: skip
        if args.json:
            with args.json.open("a") as out:
                row = {"variant": name, "clients": args.clients, "size": args.size,
                       "seed_limit": args.seed_limit, "client_limit": args.client_limit,
                       "delay_ms": args.delay_ms, **run.__dict__}  # fmt: skip
                out.write(json.dumps(row) + "\n")
        yield run


def report(name: str, runs: list[Run], args: argparse.Namespace) -> None:
    """One summary line: median copies and seconds, the runs, the loads."""
    copies = statistics.median(r.copies for r in runs)
    seconds_two = [r.second_s for r in runs if r.second_s is not None]
    second = (
        f"; second item {statistics.median(seconds_two):.1f} s "
        f"(runs {', '.join(f'{s:.1f}' for s in seconds_two)})"
        if seconds_two
        else ""
    )
    seconds = statistics.median(r.seconds for r in runs)
    ideal = args.size / args.seed_limit if args.seed_limit else 0.0
    print(
        f"{name:18} copies {copies:.2f} (runs {', '.join(f'{r.copies:.2f}' for r in runs)}); "
        f"all complete {seconds:.1f} s (runs {', '.join(f'{r.seconds:.1f}' for r in runs)}; "
        f"one copy at the cap {ideal:.1f} s){second}; "
        f"load {', '.join(f'{r.load:.2f}' for r in runs)}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
