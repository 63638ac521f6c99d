"""The anchors' side of the end-to-end benchmark: the same drop, measured on other tools.

Every anchor runs inside a network namespace with only `lo` (common.LoopbackNetns),
so default trackers, DHT routers, discovery and relay servers are never contacted.

- aria2c + opentracker: the drop runs mktorrent (announce URL of a local
  opentracker with a whitelist, reloaded by SIGHUP), an aria2c seeder
  (--seed-ratio=0, no re-check) and an aria2c downloader with the .torrent;
  done when the downloader exits (--seed-time=0: complete and checked).
- webtorrent-cli 4.x: the drop runs `webtorrent seed` until it prints the magnet,
  then `webtorrent download` of that magnet (its public trackers removed, the
  seeder's address added as x.pe); done when the download exits.
- Syncthing: two instances with one shared folder, configured by writing their
  config.xml (API keys set; discovery, relays, NAT, STUN, upgrades, usage and
  crash reports off; watcher delay 1 s, the minimum; low priority off); done
  when the file is at its path in the other instance's folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from benchmarks.common import LoopbackNetns, Processes, drop, free_port, wait_path, wait_until
from benchmarks.e2e import DropSystem, timeout_for

NEEDS = {
    "aria2c + opentracker": ("aria2c", "opentracker", "mktorrent"),
    "webtorrent-cli": ("webtorrent",),
    "syncthing": ("syncthing",),
}
INSTALL = {
    "aria2c + opentracker": "apt-get install aria2 opentracker mktorrent",
    "webtorrent-cli": "npm install -g --ignore-scripts webtorrent-cli@4",
    "syncthing": "apt-get install syncthing",
}


def missing(name: str) -> str:
    """'' when the anchor's programs are installed, else a 'not installed' note."""
    absent = [cmd for cmd in NEEDS[name] if shutil.which(cmd) is None]
    return f"not installed: {', '.join(absent)} ({INSTALL[name]})" if absent else ""


def finish(proc: subprocess.Popen, timeout: float, what: str) -> float:
    """Wait for `proc` to exit 0; the monotonic time then."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} still running after {timeout:.0f} s") from None
    if code != 0:
        raise RuntimeError(f"{what} exited {code}")
    return time.monotonic()


class Aria2(DropSystem):
    """mktorrent + opentracker + two aria2c processes."""

    name = "aria2c + opentracker"
    ARIA2 = (
        "aria2c", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
        "--enable-peer-exchange=false", "--console-log-level=warn", "--summary-interval=0",
        "--bt-tracker-interval=1", "--file-allocation=none", "--check-certificate=false",
    )  # fmt: skip

    def __init__(self, netns: LoopbackNetns) -> None:
        self.procs = Processes(netns)

    def start(self, base: Path) -> None:
        """Start opentracker with an empty whitelist."""
        self.base, self.share, self.media = base, base / "share", base / "media"
        for folder in (self.share, self.media, base / "torrents"):
            folder.mkdir(parents=True)
        self.whitelist = base / "whitelist"
        self.whitelist.write_text("")
        # opentracker chroots into -d and rereads -w on SIGHUP from inside it: the same
        # inode must be found at that absolute path below the chroot too.
        inside = base / self.whitelist.relative_to(self.whitelist.anchor)
        inside.parent.mkdir(parents=True)
        os.link(self.whitelist, inside)
        self.announce = "http://127.0.0.1:6969/announce"
        self.tracker = self.procs.start(
            ["opentracker", "-i", "127.0.0.1", "-p", "6969", "-P", "6969",
             "-w", str(self.whitelist), "-d", str(base), "-u", "nobody"],  # never as root
            log=base / "opentracker.log",
        )  # fmt: skip
        time.sleep(0.3)

    def deliver(self, staged: Path, size: int) -> float:
        """mktorrent, whitelist + SIGHUP, seeder, downloader; time until the downloader exits."""
        import libtorrent as lt  # noqa: PLC0415

        from meshmedia.hashing import piece_size_for  # noqa: PLC0415

        started = drop(staged, self.share / staged.name)
        torrent = self.base / "torrents" / f"{staged.name}.torrent"
        log2 = piece_size_for(size).bit_length() - 1
        subprocess.run(
            ["mktorrent", "-t", "2", "-l", str(log2), "-a", self.announce, "-o", str(torrent),
             str(self.share / staged.name)],
            check=True, capture_output=True, timeout=timeout_for(size),
        )  # fmt: skip
        info_hash = str(lt.torrent_info(str(torrent)).info_hashes().v1)
        with self.whitelist.open("a") as out:
            out.write(info_hash + "\n")
        self.tracker.send_signal(signal.SIGHUP)
        log = self.base / "aria2.log"
        seeder = self.procs.start(
            [*self.ARIA2, f"--listen-port={free_port()}", f"--dir={self.share}",
             "--seed-ratio=0.0", "--bt-seed-unverified=true", "--check-integrity=false",
             str(torrent)],
            log=log,
        )  # fmt: skip
        downloader = self.procs.start(
            [*self.ARIA2, f"--listen-port={free_port()}", f"--dir={self.media}", "--seed-time=0",
             str(torrent)],
            log=log,
        )  # fmt: skip
        try:
            done = finish(downloader, timeout_for(size), "aria2c download")
        finally:
            seeder.terminate()
        return done - started

    def close(self) -> None:
        """Stop aria2c processes and the tracker."""
        self.procs.close()


class WebTorrent(DropSystem):
    """`webtorrent seed` printing the magnet, then `webtorrent download`."""

    name = "webtorrent-cli"

    def __init__(self, netns: LoopbackNetns) -> None:
        self.procs = Processes(netns)

    def start(self, base: Path) -> None:
        """Only folders: webtorrent has no standing process."""
        self.base, self.share, self.media = base, base / "share", base / "media"
        self.share.mkdir(parents=True)
        self.media.mkdir(parents=True)

    def deliver(self, staged: Path, size: int) -> float:
        """Seed until the magnet is printed, then download it; time until the download exits."""
        started = drop(staged, self.share / staged.name)
        port = free_port()
        seeder = self.procs.start(
            ["webtorrent", "seed", str(self.share / staged.name), "--torrent-port", str(port),
             "--port", str(free_port()), "--quiet"],
            log=self.base / "seed.log", stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            magnet = ""
            while not magnet:
                line = seeder.stdout.readline()
                if not line:
                    raise RuntimeError("webtorrent seed exited without a magnet")
                magnet = line.strip() if line.startswith("magnet:") else ""
            down = self.procs.start(
                ["webtorrent", "download", local_magnet(magnet, port), "--out", str(self.media),
                 "--port", str(free_port()), "--quiet"],
                log=self.base / "download.log",
            )  # fmt: skip
            done = finish(down, timeout_for(size), "webtorrent download")
        finally:
            seeder.terminate()
        return done - started

    def close(self) -> None:
        """Stop any webtorrent process left."""
        self.procs.close()


def local_magnet(magnet: str, port: int) -> str:
    """The magnet without its trackers, with the seeder on 127.0.0.1 as x.pe."""
    query = [(k, v) for k, v in parse_qsl(magnet.split("?", 1)[1]) if k != "tr"]
    query.append(("x.pe", f"127.0.0.1:{port}"))
    return "magnet:?" + urlencode(query, safe=":")


class Syncthing(DropSystem):
    """Two Syncthing instances sharing one folder over 127.0.0.1."""

    name = "syncthing"

    def __init__(self, netns: LoopbackNetns) -> None:
        self.procs = Processes(netns)

    def start(self, base: Path) -> None:
        """Generate both homes, write their config.xml, start both."""
        self.share, self.media = base / "a-folder", base / "b-folder"
        homes, ids, ports = [base / "a", base / "b"], [], [free_port(), free_port()]
        for home in homes:
            out = subprocess.run(
                ["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
            ids.append(re.search(r"Device ID: (\S+)", out.stdout + out.stderr).group(1))
        for n, home in enumerate(homes):
            folder = (self.share, self.media)[n]
            folder.mkdir(parents=True)
            write_config(home / "config.xml", folder, ids, ports, n)
        env = {**os.environ, "STNOUPGRADE": "1", "STNORESTART": "1"}
        for home in homes:
            self.procs.start(
                ["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart",
                 "--no-upgrade"],
                log=home / "syncthing.log", env=env,
            )  # fmt: skip
        wait_until((self.share / ".stfolder").exists, 60, "syncthing folder marker")

    def deliver(self, staged: Path, size: int) -> float:
        """Rename into A's folder; wait for the file in B's folder."""
        started = drop(staged, self.share / staged.name)
        done = wait_path(self.media / staged.name, size, timeout_for(size), self.procs.alive)
        return done - started

    def close(self) -> None:
        """Stop both instances."""
        self.procs.close()


OPTIONS = {
    "globalAnnounceEnabled": "false", "localAnnounceEnabled": "false", "relaysEnabled": "false",
    "natEnabled": "false", "urAccepted": "-1", "autoUpgradeIntervalH": "0",
    "crashReportingEnabled": "false", "stunKeepaliveStartS": "0", "stunServer": "",
    "startBrowser": "false", "setLowPriority": "false", "reconnectionIntervalS": "1",
}  # fmt: skip


def write_config(path: Path, folder: Path, ids: list[str], ports: list[int], me: int) -> None:
    """Rewrite a generated config.xml: loopback addresses, the peer, one shared folder."""
    tree = ET.parse(path)
    root = tree.getroot()
    root.find("gui/address").text = f"127.0.0.1:{free_port()}"
    root.find("gui/apikey").text = secrets.token_hex(16)
    options = root.find("options")
    options.find("listenAddress").text = f"tcp://127.0.0.1:{ports[me]}"
    for key, value in OPTIONS.items():
        element = options.find(key)
        if element is None:
            element = ET.SubElement(options, key)
        element.text = value
    peer = ET.fromstring(ET.tostring(root.find("defaults/device")))
    peer.set("id", ids[1 - me])
    peer.find("address").text = f"tcp://127.0.0.1:{ports[1 - me]}"
    shared = ET.fromstring(ET.tostring(root.find("defaults/folder")))
    shared.attrib.update(id="bench", label="bench", path=str(folder), fsWatcherDelayS="1")
    for device in shared.findall("device"):
        shared.remove(device)
    for device_id in ids:
        ET.SubElement(shared, "device", id=device_id, introducedBy="")
    index = list(root).index(root.find("device"))
    root.insert(index, shared)
    root.insert(index + 2, peer)
    tree.write(path)
