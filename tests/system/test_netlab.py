"""The lab network itself: reachability, isolation, delay, loss, link faults, teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.netlab import Host, Network
from tests.system.netns import (
    NetlabError,
    OwnerLock,
    ip,
    list_netns,
    remove_stale,
)
from tests.system.probing import PROBE, probe, server

pytestmark = pytest.mark.system

ECHO_PORT = 7007


def rtt_ms(client: Host, target: Host, count: int = 5) -> tuple[float, float]:
    """(min, median) TCP round trip from `client` to the echo server on `target`."""
    low, median = probe(client, "rtt", target.address, str(ECHO_PORT), str(count)).split()
    return float(low), float(median)


def test_every_host_reaches_every_other_over_tcp(network: Network) -> None:
    addresses = [host.address for host in network.hosts]
    assert len(set(addresses)) == len(network.hosts) == 5
    assert len({host.netns for host in network.hosts}) == 5
    for target in network.hosts[:2]:
        with server(target, "echo", str(ECHO_PORT)):
            for client in network.hosts:
                rtt_ms(client, target, count=2)


def test_loopback_services_of_one_host_are_invisible_to_others(network: Network) -> None:
    h0, h1 = network.hosts[:2]
    with server(h1, "echo", str(ECHO_PORT)):
        h1.wait_for_port("127.0.0.1", ECHO_PORT, timeout=5)
        with pytest.raises(NetlabError):
            h0.wait_for_port("127.0.0.1", ECHO_PORT, timeout=1)
    outside = h0.run([sys.executable, PROBE, "rtt", "8.8.8.8", "53", "1"], timeout=30)
    assert "unreachable" in outside.stderr  # no route out of the lab


def test_impair_delays_every_frame_and_clear_restores(network: Network) -> None:
    h0, h1 = network.hosts[:2]
    with server(h1, "echo", str(ECHO_PORT)):
        network.impair(delay_ms=50)
        low, median = rtt_ms(h0, h1)
        assert low >= 100.0, (low, median)  # 50 ms each way through the switch
        network.clear()
        low, _ = rtt_ms(h0, h1)
        assert low < 50.0


def test_impair_loses_about_the_given_share_of_frames(network: Network) -> None:
    h0, h1 = network.hosts[:2]
    with server(h1, "echo", str(ECHO_PORT)):
        rtt_ms(h0, h1, count=1)  # resolve ARP before frames start to vanish
    network.impair(loss=0.01, seed=7)
    sent = 5000
    with server(h1, "udp-sink", "9009", "2") as sink:
        probe(h0, "udp-burst", h1.address, "9009", str(sent))
        received = int(sink.communicate(timeout=30)[0])
    print(f"UDP through the impairing switch at 1% loss: {sent - received} of {sent} lost")
    assert 10 <= sent - received <= 200


@pytest.mark.parametrize("impaired", [False, True], ids=["bridge", "userspace-switch"])
def test_link_down_cuts_a_host_off_and_link_up_restores_it(
    network: Network, impaired: bool
) -> None:
    h0, h1 = network.hosts[:2]
    if impaired:
        network.impair(delay_ms=5)
    with server(h1, "echo", str(ECHO_PORT)):
        h0.wait_for_port(h1.address, ECHO_PORT, timeout=10)
        network.link_down(h1)
        with pytest.raises(NetlabError):
            h0.wait_for_port(h1.address, ECHO_PORT, timeout=1.5)
        network.link_up(h1)
        h0.wait_for_port(h1.address, ECHO_PORT, timeout=30)


def test_limit_rate_slows_what_a_host_sends(network: Network) -> None:
    h0, h1 = network.hosts[:2]
    network.limit_rate(h0, mbit=8)
    with server(h1, "sink", "9010"):
        count, seconds = probe(h0, "send", h1.address, "9010", str(1 << 20)).split()
    assert int(count) == 1 << 20
    assert float(seconds) >= 0.7  # 1 MiB at 8 Mbit/s takes 1 s, less the tbf burst


@pytest.mark.parametrize("impaired", [False, True], ids=["bridge", "50ms-1pct-loss"])
def test_20_mb_tcp_transfer_completes(network: Network, impaired: bool) -> None:
    h0, h1 = network.hosts[:2]
    size = 20 * 1000 * 1000
    if impaired:
        network.impair(delay_ms=50, loss=0.01, seed=3)
    with server(h1, "sink", "9011"):
        count, seconds = probe(h0, "send", h1.address, "9011", str(size), timeout=240).split()
    assert int(count) == size
    print(
        f"20 MB over {'impaired switch' if impaired else 'bridge'}: "
        f"{size / float(seconds) / 1e6:.1f} MB/s"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text()


def test_close_kills_everything_and_leaves_no_namespace(
    network_factory: Callable[..., Network],
) -> None:
    net = network_factory(n_hosts=2)
    net.impair(delay_ms=1)
    assert net.switch is not None
    pids = [net.switch.pid]
    shell = net.hosts[0].popen(["sh", "-c", "sleep 600 & echo $!; wait"], stdout=subprocess.PIPE)
    assert shell.stdout is not None
    pids += [shell.pid, int(shell.stdout.readline())]  # the orphan-to-be grandchild too
    assert all(name in list_netns() for name in net.namespaces)
    net.close()
    assert not [name for name in list_netns() if name.startswith(net.owner)]
    assert not [pid for pid in pids if _alive(pid)]
    net.close()  # twice is harmless


def test_stale_namespaces_of_a_crashed_run_are_removed(netns_support: None) -> None:
    # Owner pids above pid_max (2**22) belong to no process, and differ between runs.
    crashed = f"mmlab-{10**9 + os.getpid()}-0"
    running = f"mmlab-{2 * 10**9 + os.getpid()}-0"
    lock = OwnerLock(running)
    try:
        for name in (f"{crashed}-sw", f"{crashed}-h0", f"{running}-sw"):
            ip("netns", "add", name)
        sleeper = subprocess.Popen(["ip", "netns", "exec", f"{crashed}-h0", "sleep", "600"])
        remove_stale("mmlab")
        assert not [name for name in list_netns() if name.startswith(crashed)]
        assert sleeper.wait(timeout=10) != 0
        assert f"{running}-sw" in list_netns()  # its owner still holds the lock
    finally:
        lock.release()
        remove_stale("mmlab")
    assert f"{running}-sw" not in list_netns()
