"""An internet of homes in network namespaces: NAT routers with miniupnpd on an impaired core.

    with Internet() as net:            # homes a, b (UPnP + NAT-PMP) and c (strict), one host each
        a0, b0, c0 = (net.homes[name].hosts[0] for name in "abc")
        dht, stranger = net.public["dht"], net.public["stranger"]
        net.impair(delay_ms=50, loss=0.01)            # every cable into the core (or links=[...])
        net.limit_rate(net.homes["a"], up_mbit=16)    # a home uplink; down_mbit for the downlink
        net.link_down(net.homes["b"]); net.link_up(net.homes["b"])   # the home's WAN cable
        net.homes["a"].router.mappings()              # what the router really forwards (nft)

Layout (20.0.0.0/24 is public-looking but exists only inside the lab: miniupnpd refuses
reserved external addresses, see /work/shared/NETLAB.md):

    public host i   [eth0 20.0.0.(2+i)]        ─┐
    router of home k [wan 20.0.0.(10+k)]       ─┼─ core switch `<owner>-sw`: a kernel bridge,
        [lan 192.168.(50+k).1, a kernel bridge]  │   or impair.py while impaired (netlab.md)
        home host j [eth0 192.168.(50+k).(2+j)]

Each router masquerades what leaves its WAN (nft, the kernel's conntrack) and forwards in
only what miniupnpd mapped; a strict home runs no miniupnpd, so nothing can be mapped.
Namespaces are `<prefix>-<pid>-<n>-<role>` under an OwnerLock (netns.py): closing the
Internet kills everything in them and deletes them; a crashed run's leftovers go with the
next run. Measurements and traps: native_notes/nat.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.system.netlab import IMPAIR_PY, Machine
from tests.system.netns import NetlabError, OwnerLock, delete_netns, in_netns, ip, remove_stale

log = logging.getLogger(__name__)

CORE = "20.0.0"
CORE_PREFIX = 24
ROUTER_BASE = 10
PUBLIC_BASE = 2
LAN_BASE = 50
UPNP_READY_TIMEOUT = 10.0
_counter = itertools.count()


# The programs the lab runs, and the Debian package of each (.ci/run installs them).
TOOLS = {
    "miniupnpd": "miniupnpd",
    "nft": "nftables",
    "conntrack": "conntrack",
    "upnpc": "miniupnpc",
    "natpmpc": "natpmpc",
}


def missing_tools() -> str | None:
    """Why the lab cannot run here (a program missing, with its package), or None."""
    missing = [f"{tool} ({package})" for tool, package in TOOLS.items() if not shutil.which(tool)]
    return f"the internet lab needs {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class HomeSpec:
    """What a home looks like: its name (a lowercase word, part of namespace names), how many
    hosts sit behind its router, which mapping protocols the router offers, and its NAT.

    `nat="masquerade"` keeps a connection's source port where it can (what Linux routers
    do); `nat="random"` gives every connection a new random external port (a symmetric
    NAT, as on many CGNATs). `lan` ("192.168.1") overrides the home's /24.
    `wan_input` is what the router does with unsolicited packets to its own WAN address:
    "drop" (stealth, most home routers) or "reject" (RST / ICMP unreachable, OpenWrt).
    Either way such a packet leaves no conntrack entry; a router that accepted it would
    keep one, and the hole punch of a peer answering later then gets a new source port
    (measured: native_notes/nat.md)."""

    name: str
    hosts: int = 1
    upnp: bool = True
    natpmp: bool = True
    nat: str = "masquerade"
    lan: str | None = None
    wan_input: str = "drop"

    @property
    def strict(self) -> bool:
        """True when the router maps nothing (no UPnP, no NAT-PMP)."""
        return not (self.upnp or self.natpmp)


DEFAULT_HOMES = (HomeSpec("a"), HomeSpec("b"), HomeSpec("c", upnp=False, natpmp=False))


@dataclass(frozen=True)
class Mapping:
    """One port forwarding the router's netfilter really has (read from nft)."""

    protocol: str  # "tcp" or "udp"
    external_port: int
    internal_address: str
    internal_port: int


@dataclass(frozen=True)
class Link:
    """A cable into the core switch: port `p<index>` there, `dev` in `netns` at the other end."""

    index: int
    netns: str
    dev: str

    @property
    def port(self) -> str:
        """The switch-side interface."""
        return f"p{self.index}"


_DNAT = re.compile(r"@nh,72,8 (0x6|0x11) th dport (\d+) dnat ip to ([\d.]+):(\d+)")


class Router(Machine):
    """A home router: masquerade to its WAN, miniupnpd (unless strict) on its LAN."""

    def __init__(
        self, netns: str, spec: HomeSpec, wan: str, lan: str, index: int, workdir: Path
    ) -> None:
        super().__init__(netns, f"router-{spec.name}", wan, index)
        self.spec = spec
        self.lan_prefix = lan
        self.lan_address = f"{lan}.1"
        self.workdir = workdir
        self.miniupnpd: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """miniupnpd's log (all its runs, appended)."""
        return self.workdir / f"{self.name}.miniupnpd.log"

    @property
    def lease_path(self) -> Path:
        """miniupnpd's lease file: mappings survive a daemon restart, not a reboot()."""
        return self.workdir / f"{self.name}.leases"

    def ruleset(self) -> str:
        """The router's nft ruleset: stateful forward filter, masquerade, miniupnpd chains."""
        flags = " fully-random" if self.spec.nat == "random" else ""
        return f"""flush ruleset
table inet filter {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "wan" ct state established,related accept
    iifname "wan" {self.spec.wan_input}
  }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan" accept
    jump miniupnpd
  }}
  chain miniupnpd {{ }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }}
  chain prerouting_miniupnpd {{ }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan" masquerade{flags}
  }}
  chain postrouting_miniupnpd {{ }}
}}
"""

    def miniupnpd_conf(self) -> str:
        """miniupnpd's configuration (NETLAB.md's, plus a lease file and a fixed uuid)."""
        yes = {True: "yes", False: "no"}
        return "\n".join(
            [
                "ext_ifname=wan",
                "listening_ip=lan",
                f"enable_upnp={yes[self.spec.upnp]}",
                f"enable_natpmp={yes[self.spec.natpmp]}",
                "secure_mode=no",
                "system_uptime=yes",
                f"lease_file={self.lease_path}",
                f"uuid=6d6d6e65-7400-4000-8000-{self.index:012x}",
                f"friendly_name=meshmedia lab router {self.spec.name}",
                f"allow 1024-65535 {self.lan_prefix}.0/24 1024-65535",
                "deny 0-65535 0.0.0.0/0 0-65535",
                "upnp_table_name=filter",
                "upnp_nat_table_name=filter",
                "upnp_forward_chain=miniupnpd",
                "upnp_nat_chain=prerouting_miniupnpd",
                "upnp_nat_postrouting_chain=postrouting_miniupnpd",
                "",
            ]
        )

    def start_upnp(self) -> None:
        """Start miniupnpd and wait until it listens (UPnP HTTP and/or NAT-PMP)."""
        if self.spec.strict or self.miniupnpd is not None:
            return
        conf = self.workdir / f"{self.name}.miniupnpd.conf"
        conf.write_text(self.miniupnpd_conf())
        pidfile = self.workdir / f"{self.name}.miniupnpd.pid"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as err:
            self.miniupnpd = self.popen(
                ["miniupnpd", "-f", str(conf), "-d", "-P", str(pidfile)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wanted = [
            *(["HTTP listening on port"] if self.spec.upnp else []),
            *(["Listening for NAT-PMP"] if self.spec.natpmp else []),
        ]
        deadline = time.monotonic() + UPNP_READY_TIMEOUT
        while not all(line in self.upnp_log(offset) for line in wanted):
            if self.miniupnpd.poll() is not None or time.monotonic() > deadline:
                raise NetlabError(f"miniupnpd in {self.netns} did not start:\n{self.upnp_log()}")
            time.sleep(0.02)

    def stop_upnp(self, kill: bool = False) -> None:
        """Stop miniupnpd (SIGTERM, or SIGKILL as a crash). Its forwardings stay in nft
        either way (miniupnpd 2.3.1, measured): the router keeps forwarding them."""
        proc, self.miniupnpd = self.miniupnpd, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.processes.remove(proc)

    def restart_upnp(self) -> None:
        """Restart miniupnpd (it reloads its lease file)."""
        self.stop_upnp()
        self.start_upnp()

    def reboot(self) -> None:
        """Forget everything a reboot forgets: mappings, lease file, connection tracking."""
        self.stop_upnp(kill=True)
        self.lease_path.unlink(missing_ok=True)
        for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
            in_netns(self.netns, "nft", "flush", "chain", "inet", "filter", chain)
        self.flush_conntrack()
        self.start_upnp()

    def upnp_log(self, offset: int = 0) -> str:
        """miniupnpd's log from byte `offset`."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def mappings(self) -> list[Mapping]:
        """The port forwardings in the router's netfilter (what miniupnpd installed)."""
        text = in_netns(
            self.netns, "nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd"
        )
        return [
            Mapping({"0x6": "tcp", "0x11": "udp"}[proto], int(ext), address, int(port))
            for proto, ext, address, port in _DNAT.findall(text)
        ]

    def conntrack(self, *args: str) -> list[str]:
        """The router's connection-tracking entries (`conntrack -L args`), one per line."""
        done = self.run(["conntrack", "-L", *args], timeout=30)
        return [line for line in done.stdout.splitlines() if line.strip()]

    def flush_conntrack(self) -> None:
        """Forget every tracked connection (established ones then need a new mapping)."""
        self.run(["conntrack", "-F"], timeout=30)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a sysctl in the router's namespace (e.g. net.netfilter.nf_conntrack_udp_timeout)."""
        in_netns(self.netns, "sysctl", "-q", "-w", f"{key}={value}")


class Home:
    """A router and the hosts on its LAN; `link` is its WAN cable into the core."""

    def __init__(self, spec: HomeSpec, router: Router, hosts: list[Machine], link: Link) -> None:
        self.spec = spec
        self.name = spec.name
        self.router = router
        self.hosts = hosts
        self.link = link

    def __repr__(self) -> str:
        return f"Home({self.name}, {self.router.address}, {[h.address for h in self.hosts]})"


Attachment = Home | Machine


class Internet:
    """Homes behind NAT routers and public hosts on one core switch; a context manager."""

    def __init__(
        self,
        homes: Sequence[HomeSpec] = DEFAULT_HOMES,
        public: Sequence[str] = ("dht", "stranger"),
        prefix: str = "mminet",
    ) -> None:
        names = [spec.name for spec in homes]
        if len(set(names)) != len(names) or not all(re.fullmatch(r"[a-z]+", n) for n in names):
            raise ValueError(f"home names must be distinct lowercase words: {names}")
        if not 1 <= len(homes) <= 40 or not all(1 <= spec.hosts <= 200 for spec in homes):
            raise ValueError("1..40 homes of 1..200 hosts")
        self.prefix = prefix
        self.owner = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self.switch_netns = f"{self.owner}-sw"
        self.specs = list(homes)
        self.public_names = list(public)
        self.public: dict[str, Machine] = {}
        self.homes: dict[str, Home] = {}
        self.links: dict[int, Link] = {}
        self.impairment: dict[int, tuple[float, float]] = {}
        self.switch: subprocess.Popen[str] | None = None
        self.lock: OwnerLock | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.owner}-"))
        self._index = itertools.count()

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this internet owns."""
        return [self.switch_netns, *(machine.netns for machine in self.machines)]

    @property
    def machines(self) -> list[Machine]:
        """Public hosts, routers and home hosts."""
        homes = [[home.router, *home.hosts] for home in self.homes.values()]
        return [*self.public.values(), *itertools.chain.from_iterable(homes)]

    def __enter__(self) -> Internet:
        remove_stale(self.prefix)
        self.lock = OwnerLock(self.owner)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _build(self) -> None:
        sw = self.switch_netns
        _add_netns(sw)
        bridge = ("type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        ip("link", "add", "br0", *bridge, netns=sw)
        ip("link", "set", "br0", "up", netns=sw)
        for number, name in enumerate(self.public_names):
            index = next(self._index)
            machine = Machine(
                f"{self.owner}-i{number}", name, f"{CORE}.{PUBLIC_BASE + number}", index
            )
            self.public[name] = machine
            _add_netns(machine.netns)
            self._cable(Link(index, machine.netns, "eth0"), machine.address)
        for number, spec in enumerate(self.specs):
            self.homes[spec.name] = self._add_home(number, spec)
        log.info("internet %s up: %s", self.owner, list(self.homes.values()))

    def _cable(self, link: Link, address: str) -> None:
        """Plug `link` into the core switch with `address` on its far end."""
        ip("link", "add", link.port, "type", "veth", "peer", "name", link.dev,
           "netns", link.netns, netns=self.switch_netns)  # fmt: skip
        _configure(link.netns, link.dev, f"{address}/{CORE_PREFIX}")
        ip("link", "set", link.port, "master", "br0", "up", netns=self.switch_netns)
        self.links[link.index] = link

    def _add_home(self, number: int, spec: HomeSpec) -> Home:
        lan = spec.lan or f"192.168.{LAN_BASE + number}"
        rns = f"{self.owner}-r{spec.name}"
        index = next(self._index)
        router = Router(rns, spec, f"{CORE}.{ROUTER_BASE + number}", lan, index, self.workdir)
        _add_netns(rns)
        link = Link(index, rns, "wan")
        self._cable(link, router.address)
        ip(
            "link",
            "add",
            "lan",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
            netns=rns,
        )
        ip("addr", "add", f"{router.lan_address}/24", "dev", "lan", netns=rns)
        ip("link", "set", "lan", "up", netns=rns)
        in_netns(rns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        rules = self.workdir / f"{router.name}.nft"
        rules.write_text(router.ruleset())
        in_netns(rns, "nft", "-f", str(rules))
        hosts = []
        for j in range(spec.hosts):
            name = f"{spec.name}{j}"
            host = Machine(f"{self.owner}-{name}", name, f"{lan}.{2 + j}", next(self._index))
            _add_netns(host.netns)
            ip("link", "add", f"l{j}", "type", "veth", "peer", "name", "eth0",
               "netns", host.netns, netns=rns)  # fmt: skip
            _configure(host.netns, "eth0", f"{host.address}/24")
            ip("route", "add", "default", "via", router.lan_address, netns=host.netns)
            ip("route", "add", "224.0.0.0/4", "dev", "eth0", netns=host.netns)  # LSD, SSDP
            ip("link", "set", f"l{j}", "master", "lan", "up", netns=rns)
            hosts.append(host)
        router.start_upnp()
        return Home(spec, router, hosts, link)

    def _link_of(self, target: Attachment) -> Link:
        if isinstance(target, Home):
            return target.link
        for link in self.links.values():
            if link.netns == target.netns:
                return link
        raise ValueError(f"{target} has no cable into the core (a home host? use its Home)")

    def impair(
        self,
        delay_ms: float = 0.0,
        loss: float = 0.0,
        links: Sequence[Attachment] | None = None,
        seed: int | None = None,
    ) -> None:
        """Delay by `delay_ms` and drop with probability `loss` what each of `links` (homes
        or public hosts; default all) sends into the core, as netem on its cable would;
        0, 0 clears them. The switch restarts on each call (frames in flight are lost)."""
        if delay_ms < 0 or not 0.0 <= loss < 1.0:
            raise ValueError("delay_ms must be >= 0 and loss in [0, 1)")
        chosen = [self._link_of(t) for t in links] if links is not None else self.links.values()
        for link in chosen:
            self.impairment[link.index] = (delay_ms, loss)
        self.impairment = {i: value for i, value in self.impairment.items() if any(value)}
        self._stop_switch()
        if self.impairment:
            self._start_switch(seed)
        else:
            for link in self.links.values():
                ip("link", "set", link.port, "master", "br0", netns=self.switch_netns)

    def clear(self) -> None:
        """Remove every impairment: back to the kernel bridge."""
        self.impair(0.0, 0.0)

    def _start_switch(self, seed: int | None) -> None:
        ports = []
        for link in self.links.values():
            ip("link", "set", link.port, "nomaster", netns=self.switch_netns)
            delay_ms, loss = self.impairment.get(link.index, (0.0, 0.0))
            ports.append(f"{link.port}:{delay_ms}:{loss}")
        seed_args = ["--seed", str(seed)] if seed is not None else []
        command = [sys.executable, str(IMPAIR_PY), *seed_args, *ports]
        self.switch = subprocess.Popen(
            ["ip", "netns", "exec", self.switch_netns, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.switch.stdout is not None
        ready, _, _ = select.select([self.switch.stdout], [], [], 30.0)
        line = self.switch.stdout.readline() if ready else ""
        if line.strip() != "ready":
            err = self._stop_switch()
            raise NetlabError(f"impairing switch did not start: {err.strip()}")
        log.info("impairing switch up in %s: %s", self.switch_netns, " ".join(ports))

    def _stop_switch(self) -> str:
        if self.switch is None:
            return ""
        switch, self.switch = self.switch, None
        switch.terminate()
        try:
            _, err = switch.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            switch.kill()
            _, err = switch.communicate()
        log.info("impairing switch stopped: %s", err.strip().splitlines()[-1:])
        return err

    def _port_of(self, target: Attachment) -> tuple[str, str]:
        """(namespace, interface) of the switch-side end of `target`'s cable."""
        for home in self.homes.values():
            if isinstance(target, Machine) and target in home.hosts:
                return home.router.netns, f"l{home.hosts.index(target)}"
        return self.switch_netns, self._link_of(target).port

    def link_down(self, target: Attachment) -> None:
        """Unplug a cable: a Home's WAN (the whole home drops off the internet), a public
        host's, or one home host's LAN cable at its router. The far end loses carrier;
        frames both ways are dropped, routes and conntrack stay, like a pulled cable."""
        netns, port = self._port_of(target)
        ip("link", "set", port, "down", netns=netns)

    def link_up(self, target: Attachment) -> None:
        """Plug the cable back in."""
        netns, port = self._port_of(target)
        ip("link", "set", port, "up", netns=netns)

    def limit_rate(
        self,
        target: Attachment,
        up_mbit: float | None = None,
        down_mbit: float | None = None,
        queue_ms: float = 250.0,
    ) -> None:
        """Cap what `target` (a Home or a public host) sends into the core to `up_mbit` and
        what it receives to `down_mbit` Mbit/s (kernel tbf; None lifts a cap). `queue_ms`
        is the buffer in front of the cap, as in a home router's modem: a full buffer
        adds that much delay (what LEDBAT avoids)."""
        link = self._link_of(target)
        _tbf(link.netns, link.dev, up_mbit, queue_ms)
        _tbf(self.switch_netns, link.port, down_mbit, queue_ms)

    def queue(self, target: Attachment, direction: str = "up") -> dict[str, int]:
        """The rate cap's queue on `target`'s cable ("up" or "down"): bytes sent, drops,
        backlog (bytes waiting now); zeros when no cap is set."""
        link = self._link_of(target)
        netns, dev = (link.netns, link.dev) if direction == "up" else (self.switch_netns, link.port)
        shown = json.loads(in_netns(netns, "tc", "-s", "-j", "qdisc", "show", "dev", dev))
        tbf = [qdisc for qdisc in shown if qdisc.get("kind") == "tbf"]
        return {key: int(tbf[0][key]) if tbf else 0 for key in ("bytes", "drops", "backlog")}

    def close(self) -> None:
        """Kill every process of the lab and delete its namespaces; safe to call twice."""
        errors: list[str] = []
        for machine in self.machines:
            machine.stop_processes()
        self._stop_switch()
        for netns in reversed(self.namespaces):
            try:
                delete_netns(netns)
            except NetlabError as exc:
                errors.append(str(exc))
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.lock is not None:
            if not errors:
                self.lock.release()
            self.lock = None
        if errors:
            raise NetlabError("; ".join(errors))


def _add_netns(netns: str) -> None:
    """A new namespace with IPv6 off and loopback up."""
    ip("netns", "add", netns)
    in_netns(netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
             "net.ipv6.conf.default.disable_ipv6=1")  # fmt: skip
    ip("link", "set", "lo", "up", netns=netns)


def _configure(netns: str, dev: str, cidr: str) -> None:
    """Address `dev` and bring it up; one packet per frame (no GSO), as netlab.py does."""
    ip("link", "set", dev, "gso_max_segs", "1", netns=netns)
    ip("addr", "add", cidr, "dev", dev, netns=netns)
    ip("link", "set", dev, "up", netns=netns)


def _tbf(netns: str, dev: str, mbit: float | None, queue_ms: float) -> None:
    """A token-bucket cap on `dev`'s egress, or none."""
    if mbit is None:
        subprocess.run(["ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", dev, "root"],
                       capture_output=True, check=False)  # fmt: skip
        return
    burst = max(16 * 1024, int(mbit * 1e6 / 8 / 250))
    in_netns(
        netns,
        *("tc", "qdisc", "replace", "dev", dev, "root", "tbf"),
        *("rate", f"{mbit}mbit", "burst", str(burst), "latency", f"{queue_ms}ms"),
    )
