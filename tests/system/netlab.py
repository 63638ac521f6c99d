"""A small real IPv4 network in network namespaces, for system tests.

    with Network(n_hosts=5) as net:
        curator, clients = net.hosts[0], net.hosts[1:]
        proc = curator.popen([sys.executable, "-m", "meshmedia", "serve", ...])
        clients[0].run([...])                        # -> CompletedProcess
        net.impair(delay_ms=50, loss=0.01)           # every link, like netem on each host
        net.link_down(clients[0]); net.link_up(clients[0])

Each host is a namespace `<prefix>-<pid>-<n>-h<i>` with `eth0` at `SUBNET.<i+2>/24`
(IPv6 off on eth0, no default route: nothing can leave the lab). Its veth peer `p<i>`
sits in a switch namespace `...-sw`, joined by a kernel bridge (fast path) or, while
impaired, by the userspace switch in impair.py (this kernel has no netem; see
native_notes/netlab.md). Closing the network kills every process in its namespaces
and deletes them; a crashed run's leftovers are removed by the next run.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.system.netns import (
    NetlabError,
    OwnerLock,
    delete_netns,
    in_netns,
    ip,
    remove_stale,
)

log = logging.getLogger(__name__)

SUBNET = "10.213.47"
IMPAIR_PY = Path(__file__).with_name("impair.py")
_counter = itertools.count()


class Machine:
    """One machine of a lab: its namespace, its address, the processes started in it.

    `index` is unique within its lab (tests name per-host folders by it)."""

    def __init__(self, netns: str, name: str, address: str, index: int) -> None:
        self.netns = netns
        self.name = name
        self.address = address
        self.index = index
        self.processes: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.address})"

    def command(self, args: list[str]) -> list[str]:
        """`args` wrapped to run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `args` in this host (subprocess.Popen keywords apply); killed at teardown."""
        proc = subprocess.Popen(self.command(args), **kwargs)
        self.processes.append(proc)
        return proc

    def run(
        self, args: list[str], timeout: float = 60.0, check: bool = False, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` in this host to completion; output is captured as text by default."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(args), timeout=timeout, check=check, **kwargs)

    def wait_for_port(self, address: str, port: int, timeout: float = 30.0) -> None:
        """Block until a TCP connect from this host to address:port succeeds."""
        code = (
            "import socket,sys,time\n"
            "end=time.monotonic()+float(sys.argv[3])\n"
            "while True:\n"
            "    try:\n"
            "        socket.create_connection((sys.argv[1],int(sys.argv[2])),1).close(); break\n"
            "    except OSError:\n"
            "        if time.monotonic()>end: sys.exit(1)\n"
            "        time.sleep(0.05)\n"
        )
        args = [sys.executable, "-c", code, address, str(port), str(timeout)]
        if self.run(args, timeout=timeout + 10).returncode != 0:
            raise NetlabError(f"{self.name}: {address}:{port} not reachable in {timeout}s")

    def stop_processes(self, grace: float = 3.0) -> None:
        """SIGTERM what popen() started, SIGKILL it after `grace` seconds."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self.processes:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()


class Host(Machine):
    """A host of the flat network: `h<i>` at SUBNET.<i+2>, on switch port `p<i>`."""

    def __init__(self, network: Network, index: int) -> None:
        super().__init__(f"{network.owner}-h{index}", f"h{index}", f"{SUBNET}.{index + 2}", index)
        self.network = network
        self.port = f"p{index}"


class Network:
    """Hosts on one switched /24, with link faults and impairment; a context manager."""

    def __init__(self, n_hosts: int = 5, prefix: str = "mmlab", offload: bool = False) -> None:
        """`offload=True` lets GSO super-frames cross the links (much faster kernel path,
        but the impaired switch then loses whole bursts); by default every frame is a
        real packet of at most 1514 bytes."""
        if not 1 <= n_hosts <= 250:
            raise ValueError("n_hosts must be 1..250")
        self.prefix = prefix
        self.offload = offload
        self.owner = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self.switch_netns = f"{self.owner}-sw"
        self.hosts = [Host(self, index) for index in range(n_hosts)]
        self.links: dict[int, tuple[float, float]] = {}
        self.switch: subprocess.Popen[str] | None = None
        self.lock: OwnerLock | None = None

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this network owns."""
        return [self.switch_netns, *(host.netns for host in self.hosts)]

    def __enter__(self) -> Network:
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
        ip("netns", "add", sw)
        in_netns(sw, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
        ip("link", "set", "lo", "up", netns=sw)
        bridge = ("type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        ip("link", "add", "br0", *bridge, netns=sw)
        ip("link", "set", "br0", "up", netns=sw)
        for host in self.hosts:
            self._add_host(host)
        log.info("network %s up: %s", self.owner, ", ".join(h.address for h in self.hosts))

    def _add_host(self, host: Host) -> None:
        sw, ns = self.switch_netns, host.netns
        ip("netns", "add", ns)
        ip("link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", ns, netns=sw)
        in_netns(ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6")
        if not self.offload:
            ip("link", "set", "eth0", "gso_max_segs", "1", netns=ns)
        ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=ns)
        ip("link", "set", "lo", "up", netns=ns)
        ip("link", "set", "eth0", "up", netns=ns)
        ip("route", "add", "224.0.0.0/4", "dev", "eth0", netns=ns)  # LSD multicast
        ip("link", "set", host.port, "master", "br0", "up", netns=sw)

    def impair(
        self,
        delay_ms: float = 0.0,
        loss: float = 0.0,
        hosts: list[Host] | None = None,
        seed: int | None = None,
    ) -> None:
        """Delay by `delay_ms` and drop with probability `loss` every frame that `hosts`
        (default: all) send, as `tc netem` on their eth0 would; 0, 0 clears them.
        Other hosts keep their settings. The switch restarts on each call: frames in
        flight then are lost (TCP recovers). `seed` makes the losses repeatable."""
        if delay_ms < 0 or not 0.0 <= loss < 1.0:
            raise ValueError("delay_ms must be >= 0 and loss in [0, 1)")
        for host in hosts if hosts is not None else self.hosts:
            self.links[host.index] = (delay_ms, loss)
        self.links = {index: value for index, value in self.links.items() if any(value)}
        self._stop_switch()
        if self.links:
            self._start_switch(seed)
        else:
            for host in self.hosts:
                ip("link", "set", host.port, "master", "br0", netns=self.switch_netns)

    def clear(self) -> None:
        """Remove every impairment: back to the kernel bridge."""
        self.impair(0.0, 0.0)

    def _start_switch(self, seed: int | None) -> None:
        for host in self.hosts:
            ip("link", "set", host.port, "nomaster", netns=self.switch_netns)
        ports = []
        for host in self.hosts:
            delay_ms, loss = self.links.get(host.index, (0.0, 0.0))
            ports.append(f"{host.port}:{delay_ms}:{loss}")
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
            _, err = self._stop_switch()
            raise NetlabError(f"impairing switch did not start: {err.strip()}")
        log.info("impairing switch up in %s: %s", self.switch_netns, " ".join(ports))

    def _stop_switch(self) -> tuple[str, str]:
        if self.switch is None:
            return "", ""
        switch, self.switch = self.switch, None
        switch.terminate()
        try:
            out, err = switch.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            switch.kill()
            out, err = switch.communicate()
        log.info("impairing switch stopped: %s", err.strip().splitlines()[-1:] or "")
        return out, err

    def _port(self, machine: Machine) -> str:
        """The switch port of one of this network's hosts."""
        for host in self.hosts:
            if host.netns == machine.netns:
                return host.port
        raise ValueError(f"{machine} is not on {self.owner}")

    def link_down(self, host: Machine) -> None:
        """Unplug `host`'s cable at the switch: its eth0 loses carrier, frames are dropped."""
        ip("link", "set", self._port(host), "down", netns=self.switch_netns)

    def link_up(self, host: Machine) -> None:
        """Plug `host`'s cable back in."""
        ip("link", "set", self._port(host), "up", netns=self.switch_netns)

    def limit_rate(self, host: Host, mbit: float | None) -> None:
        """Limit what `host` sends to `mbit` Mbit/s (kernel tbf on its eth0); None lifts it."""
        if mbit is None:
            in_netns(host.netns, "tc", "qdisc", "del", "dev", "eth0", "root")
            return
        burst = max(32 * 1024, int(mbit * 1e6 / 8 / 100))
        in_netns(
            host.netns,
            *("tc", "qdisc", "replace", "dev", "eth0", "root", "tbf"),
            *("rate", f"{mbit}mbit", "burst", str(burst), "latency", "200ms"),
        )

    def close(self) -> None:
        """Kill every process of the lab and delete its namespaces; safe to call twice."""
        errors: list[str] = []
        for host in self.hosts:
            host.stop_processes()
        self._stop_switch()
        for netns in self.namespaces:
            try:
                delete_netns(netns)
            except NetlabError as exc:
                errors.append(str(exc))
        if self.lock is not None:
            if not errors:
                self.lock.release()
            self.lock = None
        if errors:
            raise NetlabError("; ".join(errors))
