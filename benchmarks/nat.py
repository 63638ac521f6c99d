"""Research figures for meshmedia across homes: bare libtorrent 2.1 sessions in the internet lab.

    python -m benchmarks.nat portmap                 # mapping times, extra port, kill, reboot
    python -m benchmarks.nat holepunch [--wan reject] [--set peer_connect_timeout=5]
    python -m benchmarks.nat transport --loss 0.01 [--modes tcp,utp] [--set utp_gain_factor=60000]
    python -m benchmarks.nat recovery --mode both [--home c] [--flush] [--set peer_timeout=20]
    python -m benchmarks.nat lan                     # TCP against uTP between two hosts of a home

Needs root (network namespaces) and the lab's Debian packages (tests/system/internet.py).
Prints figures with the load average; native_notes/nat.md has the results and the reasons.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import random_file
from tests.system.internet import HomeSpec, Internet, Mapping, Router
from tests.system.ltagent import LtPeer, make_torrent
from tests.system.netlab import Machine
from tests.system.nodes import inside
from tests.system.probing import server

STRICT: dict[str, Any] = {"upnp": False, "natpmp": False}


def load() -> str:
    """The load average now."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def until(predicate: Callable[[], Any], timeout: float, step: float = 0.2) -> float | None:
    """Seconds until `predicate` held, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


def payload(work: Path, mib: int) -> tuple[Path, Path]:
    """A random file of `mib` MiB and its .torrent."""
    source = random_file(work / f"seed-{mib}" / "film.bin", mib << 20, seed=mib)
    return source, make_torrent(source)


def transports(mode: str) -> dict[str, Any]:
    """Outgoing transports for "tcp", "utp" or "both" (libtorrent's default: uTP first)."""
    return {"tcp": mode in ("tcp", "both"), "utp": mode in ("utp", "both")}


def alerts_of(peer: LtPeer, kind: str, count: int) -> Callable[[], bool]:
    """A predicate: `peer` has had `count` alerts of `kind`."""
    return lambda: len(peer.agent.alerts(kind)) >= count


def in_router(router: Router, mapping: Mapping) -> Callable[[], bool]:
    """A predicate: the router forwards `mapping`."""
    return lambda: mapping in router.mappings()


def all_seeding(peers: list[LtPeer]) -> Callable[[], bool]:
    """A predicate: every one of `peers` has the whole torrent."""
    return lambda: all(peer.status()["is_seeding"] for peer in peers)


class Pinger(threading.Thread):
    """UDP echoes every `gap` s from `host` to `target`:7101, the RTT of each (ms)."""

    def __init__(self, host: Machine, target: str, gap: float = 0.1) -> None:
        super().__init__(daemon=True)
        with inside(host):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(1.0)
        self.target, self.gap = (target, 7101), gap
        self.rtts: list[float] = []
        self.lost = 0
        self.done = threading.Event()

    def run(self) -> None:
        """Ping until stopped."""
        number = 0
        while not self.done.is_set():
            number += 1
            start = time.monotonic()
            self.sock.sendto(number.to_bytes(4, "big"), self.target)
            try:
                while int.from_bytes(self.sock.recv(64)[:4], "big") != number:
                    pass
                self.rtts.append((time.monotonic() - start) * 1000.0)
            except TimeoutError:
                self.lost += 1
            self.done.wait(max(0.0, self.gap - (time.monotonic() - start)))

    def summary(self) -> str:
        """Median, 90th percentile and maximum RTT, and losses."""
        rtts = sorted(self.rtts)
        if not rtts:
            return "no answer"
        p90 = rtts[int(len(rtts) * 0.9)]
        return (
            f"RTT median {statistics.median(rtts):.0f} p90 {p90:.0f} max {rtts[-1]:.0f} ms, "
            f"lost {self.lost}/{len(rtts) + self.lost}"
        )


def portmap(args: argparse.Namespace, work: Path) -> None:
    """Mapping times (UPnP, NAT-PMP), an extra port, clean close, SIGKILL, router reboot."""
    homes = [HomeSpec("a"), HomeSpec("n", upnp=False), HomeSpec("c", **STRICT)]
    source, torrent = payload(work, 1)
    with Internet(homes=homes) as net:
        for name in "an":
            home = net.homes[name]
            peer = LtPeer(home.hosts[0], work, torrent, source.parent, seed=True)
            until(alerts_of(peer, "portmap_alert", 2), 30)
            first = [
                (e["map_transport"], e["map_protocol"], e["t"])
                for e in peer.agent.alerts("portmap_alert")
            ]
            ext = [(e["external_address"], e["t"]) for e in peer.agent.alerts("external_ip_alert")]
            kind = "UPnP+NAT-PMP" if home.spec.upnp else "NAT-PMP"
            print(f"home {name} ({kind}): {first}; external ip {ext}")
            peer.agent.request("map", protocol="tcp", external=5000, local=5000)
            extra = Mapping("tcp", 5000, home.hosts[0].address, 5000)
            took = until(in_router(home.router, extra), 30, 0.01)
            print(f"  add_port_mapping(tcp, 5000, 5000) in the router after {took} s")
            start = time.monotonic()
            home.router.reboot()
            back = until(home.router.mappings, args.wait, 0.5)
            print("  router reboot (mappings, leases, conntrack gone): back by itself after")
            print(f"  {back} s (waited {args.wait:.0f} s); {time.monotonic() - start:.0f} s")
            peer.agent.proc.kill()
            peer.agent.proc.wait()
            print(f"  after SIGKILL of the session: {len(home.router.mappings())} stale mappings")
        strict = LtPeer(net.homes["c"].hosts[0], work, torrent, source.parent, seed=True)
        time.sleep(args.wait)
        errors = [
            (e["map_transport"], e["t"], e["error"])
            for e in strict.agent.alerts("portmap_error_alert")
        ]
        ok = strict.agent.alerts("portmap_alert")
        print(f"strict home, {args.wait:.0f} s: {len(ok)} mappings, error alerts {errors}")
    print(f"load {load()}")


def holepunch(args: argparse.Namespace, work: Path) -> None:
    """Two strict homes c, d behind the seed a (introducer); b makes a's first PEX go out."""
    strict = {**STRICT, "wan_input": args.wan, "nat": args.nat}
    homes = [HomeSpec("a"), HomeSpec("b"), HomeSpec("c", **strict), HomeSpec("d", **strict)]
    source, torrent = payload(work, 16)
    settings = {**transports(args.mode), **args.set}
    with Internet(homes=homes) as net:
        h = net.homes
        seed = LtPeer(
            h["a"].hosts[0],
            work,
            torrent,
            source.parent,
            seed=True,
            upload_rate_limit=100_000,
            **settings,
        )
        peers = {n: LtPeer(h[n].hosts[0], work, torrent, work / n, **settings) for n in "bcd"}
        for name in "bc":
            peers[name].connect(h["a"].router.address)
        until(lambda: peers["c"].peer(h["b"].router.address), 30)
        peers["d"].connect(h["a"].router.address)

        def exchanging() -> bool:
            link = peers["c"].peer(h["d"].router.address)
            return bool(link and link["total_download"] + link["total_upload"])

        took = until(exchanging, args.timeout, 0.25)
        link = peers["c"].peer(h["d"].router.address) or {}
        print(
            f"{args.mode} wan_input={args.wan} nat={args.nat} {args.set}: c <-> d exchanging "
            f"{took and round(took, 2)} s after d joined; utp={link.get('utp')} "
            f"holepunched={link.get('holepunched')}; load {load()}"
        )
        for peer in (seed, *peers.values()):
            peer.close()


def transport(args: argparse.Namespace, work: Path) -> None:
    """Throughput over a capped, delayed, lossy uplink, and a1's RTT meanwhile."""
    clients = "bdefg"[: args.clients]
    homes = [HomeSpec("a", hosts=2), *(HomeSpec(n) for n in clients)]
    source, torrent = payload(work, args.size)
    with Internet(homes=homes) as net:
        a, stranger = net.homes["a"], net.public["stranger"]
        net.limit_rate(a, up_mbit=args.mbit, queue_ms=args.queue)
        net.impair(delay_ms=args.delay, loss=args.loss, seed=5)
        print(f"{args.size} MiB to {len(clients)} home(s); a's uplink {args.mbit} Mbit/s,")
        print(f"  buffer {args.queue} ms; {args.delay} ms, loss {args.loss} per cable; {args.set}")
        with server(stranger, "udp-echo", "7101"):
            for run, mode in enumerate(args.modes.split(",")):
                settings = {**transports(mode), **args.set}
                seed = LtPeer(a.hosts[0], work, torrent, source.parent, seed=True, **settings)
                hosts = [net.homes[n].hosts[0] for n in clients]
                peers = [
                    LtPeer(h, work, torrent, work / f"{h.name}-{run}", **settings) for h in hosts
                ]
                pinger = Pinger(a.hosts[1], stranger.address)
                pinger.start()
                for peer in peers:
                    peer.connect(a.router.address)
                took = until(all_seeding(peers), 400, 0.25)
                pinger.done.set()
                pinger.join()
                rate = f"{args.size * len(peers) / took:.2f} MiB/s" if took else "unfinished"
                print(
                    f"  {mode}: {took and round(took, 2)} s, {rate}; a1 meanwhile: "
                    f"{pinger.summary()}; load {load()}"
                )
                for peer in (seed, *peers):
                    peer.close()


def recovery(args: argparse.Namespace, work: Path) -> None:
    """A home's WAN cut for `cut` s at 20 % of a download from a's 2 MiB/s seed."""
    homes = [HomeSpec("a"), HomeSpec("b"), HomeSpec("c", **STRICT)]
    source, torrent = payload(work, 32)
    settings = {**transports(args.mode), **args.set}
    with Internet(homes=homes) as net:
        a, victim_home = net.homes["a"], net.homes[args.home]
        if args.delay:
            net.impair(delay_ms=args.delay, seed=3)
        seed = LtPeer(
            a.hosts[0],
            work,
            torrent,
            source.parent,
            seed=True,
            upload_rate_limit=2 << 20,
            **settings,
        )
        victim = LtPeer(victim_home.hosts[0], work, torrent, work / "victim", **settings)
        victim.connect(a.router.address)
        until(lambda: victim.status()["progress"] > 0.2, 60, 0.1)
        net.link_down(victim_home)
        time.sleep(args.cut)  # the outage itself, not a synchronisation
        if args.flush:
            victim_home.router.flush_conntrack()
        net.link_up(victim_home)
        base = victim.status()["total_download"]
        moved = until(lambda: victim.status()["total_download"] > base + 16384, 120, 0.1)
        done = until(lambda: victim.status()["is_seeding"], 180, 0.25)
        finished = moved + done if moved is not None and done is not None else None
        print(
            f"{args.mode} home {args.home} flush={args.flush} delay={args.delay} {args.set}: "
            f"bytes move {moved and round(moved, 2)} s after link-up, complete "
            f"{finished and round(finished, 2)} s after; load {load()}"
        )
        seed.close()
        victim.close()


def lan(args: argparse.Namespace, work: Path) -> None:
    """TCP against uTP between two hosts of one home (the LAN bridge, no impairment)."""
    source, torrent = payload(work, args.size)
    with Internet(homes=[HomeSpec("a", hosts=2)]) as net:
        a = net.homes["a"]
        for run, mode in enumerate(args.modes.split(",")):
            seed = LtPeer(a.hosts[0], work, torrent, source.parent, seed=True, **transports(mode))
            peer = LtPeer(a.hosts[1], work, torrent, work / f"lan-{run}", **transports(mode))
            peer.connect(a.hosts[0].address)
            took = until(all_seeding([peer]), 300, 0.1)
            rate = f"{args.size / took:.1f} MiB/s" if took else "unfinished"
            print(f"LAN {mode}: {args.size} MiB in {took and round(took, 2)} s = {rate}")
            print(f"  load {load()}")
            seed.close()
            peer.close()


def setting(text: str) -> tuple[str, Any]:
    """key=value, the value as an int when it is one."""
    key, _, value = text.partition("=")
    return key, int(value) if value.lstrip("-").isdigit() else value


def main(argv: list[str] | None = None) -> None:
    """Parse the experiment and run it in a fresh lab."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiment", choices=["portmap", "holepunch", "transport", "recovery", "lan"]
    )
    parser.add_argument(
        "--set", type=setting, action="append", default=[], help="settings_pack key=value"
    )
    parser.add_argument("--mode", default="both", choices=["both", "tcp", "utp"])
    parser.add_argument("--modes", default="tcp,utp")
    parser.add_argument("--wan", default="drop", choices=["drop", "reject"])
    parser.add_argument("--nat", default="masquerade", choices=["masquerade", "random"])
    parser.add_argument("--home", default="b", choices=["b", "c"])
    parser.add_argument("--flush", action="store_true", help="flush the victim router's conntrack")
    parser.add_argument("--size", type=int, default=24, help="MiB")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--delay", type=float, default=50.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument(
        "--mbit", type=float, default=16.78, help="the seed home's uplink (2 MiB/s)"
    )
    parser.add_argument("--queue", type=float, default=250.0, help="uplink buffer, ms")
    parser.add_argument("--cut", type=float, default=20.0)
    parser.add_argument("--wait", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    args.set = dict(args.set)
    if args.experiment == "recovery" and "--delay" not in (argv or sys.argv):
        args.delay = 0.0
    with tempfile.TemporaryDirectory(prefix="mm-nat-") as tmp:
        globals()[args.experiment](args, Path(tmp))


if __name__ == "__main__":
    main()
