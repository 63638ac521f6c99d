"""Drop -> placed in three homes over the lab internet: meshmedia against Syncthing.

    python -m benchmarks.homes [--size 40] [--runs 1] [--only meshmedia|syncthing]

The internet lab (tests/system/internet.py): the origin in home a behind a UPnP+NAT-PMP
router whose uplink is capped at 2 MiB/s (tbf, 250 ms buffer), 50 ms on every cable;
receivers in homes b and d (UPnP+NAT-PMP) and c (strict router). Timed: from the rename
of a random file into the origin's folder until it is complete at its path in all three.

- meshmedia: `serve` in a0, `sync` in b0, c0, d0 following the manifest at router a's
  address (as tests/system/test_across_homes.py); nothing forwarded by hand.
- Syncthing (apt-get install syncthing): four instances sharing one folder, global and
  local discovery, relays and its own NAT traversal off (direct connections only, as
  issue 19 asks). Without discovery a Syncthing device cannot learn the port a router
  mapped for a peer, so before the timing starts this script forwards TCP 22000 on the
  routers of a, b and d with upnpc (what a user would do by hand) and gives every
  device the others' router addresses; c's router maps nothing, so c dials out.

Needs root and the lab's Debian packages. Prints each run, the medians and their ratio
(Syncthing / meshmedia) with the load average; results in native_notes/nat.md.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.anchors import OPTIONS
from tests.helpers import random_file
from tests.system.internet import HomeSpec, Internet, Mapping
from tests.system.netlab import Machine
from tests.system.nodes import HTTP_PORT, PEER_PORT, ClientNode, CuratorNode, Node

MIB = 1 << 20
UPLINK_MBIT = 16.78  # 2 MiB/s
RECEIVERS = ("b", "c", "d")
ST_PORT = 22000


def load() -> str:
    """The load average now."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def until(predicate: object, timeout: float, what: str, step: float = 0.5) -> None:
    """Wait for `predicate()` (a callable) to hold; RuntimeError naming `what` after timeout."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        time.sleep(step)


def lab() -> Internet:
    """Homes a, b, c (strict), d; a's uplink capped, 50 ms per cable (not yet entered)."""
    homes = [HomeSpec("a"), HomeSpec("b"), HomeSpec("c", upnp=False, natpmp=False), HomeSpec("d")]
    return Internet(homes=homes, public=("dht",), prefix="mmhomes")


def impaired(net: Internet) -> None:
    """The benchmark's internet: 2 MiB/s uplink at the origin, 50 ms on every cable."""
    net.impair(delay_ms=50, seed=19)
    net.limit_rate(net.homes["a"], up_mbit=UPLINK_MBIT)


def staged_file(work: Path, size: int, seed: int) -> Path:
    """A random file outside every watched folder."""
    return random_file(work / "staged" / f"film-{seed}.mkv", size, seed=seed)


def complete(path: Path, size: int) -> bool:
    """True when `path` is a file of `size` bytes."""
    return path.is_file() and path.stat().st_size == size


def run_meshmedia(net: Internet, work: Path, size: int, seed: int) -> float:
    """meshmedia: seconds from the drop until the file is placed in b, c and d."""
    everywhere = ("--listen-host", "0.0.0.0", "--no-lsd")
    a0 = net.homes["a"].hosts[0]
    router = net.homes["a"].router.address
    nodes: list[Node] = []
    try:
        curator = CuratorNode(a0, work / "curator", *everywhere)
        nodes.append(curator)
        curator.start()
        wanted = {Mapping("tcp", PEER_PORT, a0.address, PEER_PORT),
                  Mapping("tcp", HTTP_PORT, a0.address, HTTP_PORT)}  # fmt: skip
        until(lambda: wanted <= set(net.homes["a"].router.mappings()), 30, "mappings")
        url = f"http://{router}:{HTTP_PORT}/manifest/default.json"
        bootstrap = ("--dht-bootstrap", f"{router}:{PEER_PORT}")
        clients = []
        for home in RECEIVERS:
            host = net.homes[home].hosts[0]
            client = ClientNode(host, work / f"client-{home}", url, *bootstrap, *everywhere)
            nodes.append(client)
            client.start()
            clients.append(client)
        until(lambda: all(c.status() for c in clients), 60, "clients' status ports")
        staged = staged_file(work, size, seed)
        started = time.monotonic()
        staged.rename(curator.share / staged.name)
        until(lambda: all(c.placed(staged.name) for c in clients), 600, "placed everywhere")
        return time.monotonic() - started
    finally:
        for node in nodes:
            node.stop()


def syncthing_id(home: Path) -> str:
    """Generate a Syncthing home; its device ID."""
    out = subprocess.run(
        ["syncthing", "generate", f"--home={home}", "--no-default-folder"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    found = re.search(r"Device ID: (\S+)", out.stdout + out.stderr)
    if found is None:
        raise RuntimeError(f"no device ID from syncthing generate: {out.stderr[-300:]}")
    return found.group(1)


def write_st_config(home: Path, folder: Path, me: int, ids: list[str], addrs: list[str]) -> None:
    """config.xml: listen on 22000 everywhere, every other device at its router's address,
    one folder shared by all; discovery, relays and NAT traversal off."""
    path = home / "config.xml"
    tree = ET.parse(path)
    root = tree.getroot()
    root.find("gui/address").text = f"127.0.0.1:{8384 + me}"  # type: ignore[union-attr]
    root.find("gui/apikey").text = secrets.token_hex(16)  # type: ignore[union-attr]
    options = root.find("options")
    assert options is not None
    options.find("listenAddress").text = f"tcp://0.0.0.0:{ST_PORT}"  # type: ignore[union-attr]
    for key, value in OPTIONS.items():
        element = options.find(key)
        if element is None:
            element = ET.SubElement(options, key)
        element.text = value
    template = root.find("defaults/device")
    assert template is not None
    index = list(root).index(root.find("device"))  # type: ignore[arg-type]
    shared = ET.fromstring(ET.tostring(root.find("defaults/folder")))  # type: ignore[arg-type]
    shared.attrib.update(id="homes", label="homes", path=str(folder), fsWatcherDelayS="1")
    for device in shared.findall("device"):
        shared.remove(device)
    for device_id in ids:
        ET.SubElement(shared, "device", id=device_id, introducedBy="")
    root.insert(index, shared)
    for n, device_id in enumerate(ids):
        if n == me:
            continue
        peer = ET.fromstring(ET.tostring(template))
        peer.set("id", device_id)
        peer.find("address").text = addrs[n]  # type: ignore[union-attr]
        root.insert(index + 1, peer)
    tree.write(path)


def forward(host: Machine) -> None:
    """Forward TCP 22000 on the host's router to it (upnpc), as a user would by hand."""
    done = host.run(["upnpc", "-e", "syncthing", "-a", host.address, str(ST_PORT),
                     str(ST_PORT), "TCP"], timeout=60)  # fmt: skip
    if "is redirected to internal" not in done.stdout:
        raise RuntimeError(f"upnpc on {host.name}: {done.stdout[-300:]} {done.stderr[-300:]}")


def run_syncthing(net: Internet, work: Path, size: int, seed: int) -> float:
    """Syncthing: seconds from the drop until the file is complete in b, c and d."""
    names = ("a", *RECEIVERS)
    hosts = [net.homes[name].hosts[0] for name in names]
    homes = [work / f"st-{name}" for name in names]
    folders = [work / f"st-folder-{name}" for name in names]
    ids = [syncthing_id(home) for home in homes]
    addrs = [f"tcp://{net.homes[name].router.address}:{ST_PORT}" for name in names]
    for name, host in zip(names, hosts, strict=True):
        if not net.homes[name].spec.strict:
            forward(host)
    procs = []
    try:
        for n, (host, home, folder) in enumerate(zip(hosts, homes, folders, strict=True)):
            folder.mkdir(parents=True)
            write_st_config(home, folder, n, ids, addrs)
            log = (home / "syncthing.log").open("ab")
            command = ["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart",
                       "--no-upgrade"]  # fmt: skip
            env = {**os.environ, "STNOUPGRADE": "1", "STTRACE": os.environ.get("STTRACE", "")}
            procs.append(host.popen(command, stdout=log, stderr=log, env=env))
        until(lambda: all((f / ".stfolder").exists() for f in folders), 120, "folder markers")
        staged = staged_file(work, size, seed)
        started = time.monotonic()
        staged.rename(folders[0] / staged.name)
        timeout = float(os.environ.get("HOMES_TIMEOUT", "900"))
        until(lambda: all(complete(f / staged.name, size) for f in folders[1:]), timeout, "synced")
        return time.monotonic() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    """Run the benchmark and print the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=40, help="MiB (default 40)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", choices=("meshmedia", "syncthing"))
    args = parser.parse_args()
    size = args.size * MIB
    systems = {"meshmedia": run_meshmedia, "syncthing": run_syncthing}
    if shutil.which("syncthing") is None:
        print("syncthing: not installed (apt-get install syncthing)")
        systems.pop("syncthing")
    if args.only:
        systems = {args.only: systems[args.only]} if args.only in systems else {}
    times: dict[str, list[float]] = {name: [] for name in systems}
    for run in range(args.runs):
        for name, deliver in systems.items():
            with lab() as net:
                impaired(net)
                work = Path(tempfile.mkdtemp(prefix=f"homes-{name}-"))
                try:
                    took = deliver(net, work, size, seed=run + 1)
                finally:
                    if not os.environ.get("HOMES_KEEP"):
                        shutil.rmtree(work, ignore_errors=True)
            times[name].append(took)
            print(f"{name}: {args.size} MiB in three homes {took:.1f} s (load {load()})",
                  flush=True)  # fmt: skip
    medians = {name: statistics.median(t) for name, t in times.items() if t}
    for name, median in medians.items():
        print(f"{name}: median {median:.1f} s over {len(times[name])} run(s)")
    if len(medians) == 2:
        ratio = medians["syncthing"] / medians["meshmedia"]
        print(f"ratio syncthing / meshmedia: {ratio:.2f} (load {load()})")


if __name__ == "__main__":
    main()
