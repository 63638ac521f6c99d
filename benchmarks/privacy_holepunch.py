"""Can two homes behind NAT reach each other inside an SSL swarm? (BEP 55 hole punching)

    .venv/bin/python -m benchmarks.privacy_holepunch [--kinds ssl,plain,private] [--seconds 60]

Needs root. A lab of network namespaces `mmhp-<pid>-0-*` (removed at the end; a
crashed run's are removed by the next): `inet` (a bridge at 20.0.0.1 where the
curator runs; miniupnpd-free, nothing reaches the machine's own interfaces), and two
homes, each a router (`r1`, `r2`: WAN 20.0.0.11/.12, nftables masquerade, forward
policy drop except replies and LAN->WAN, like a home router without UPnP) and a
host behind it (`h1` 192.168.51.2, `h2` 192.168.52.2). The routers also drop unsolicited
packets to themselves (as home routers do): without that, a home's first packet that
reached the other router before that router's own outgoing packet became a confirmed
conntrack entry, the masquerade then picked another port, and no hole ever opened
(measured with plain UDP: 0 of 2 homes received anything).

The curator seeds one torrent (upload capped so the homes have reason to trade);
each home is told only the curator's address. All sessions run uTP only (BEP 55 is
uTP only, and the introducer must see the peer's listen port as its source port).
The homes can reach each other only if the curator, as introducer, tells them
about each other by PEX and then relays a hole-punch rendezvous. Each session is a
worker process in its namespace printing its peers as JSON lines.

Prints per kind: whether h1 and h2 connected to each other, with libtorrent's
`holepunched` flag, and the bytes each home uploaded.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libtorrent as lt

from benchmarks.common import random_file
from benchmarks.privacy_lab import (
    MiB,
    Peer,
    Pki,
    build,
    issue,
    load_average,
    make_ca,
)
from tests.system.netns import OwnerLock, delete_netns, in_netns, ip, remove_stale

PREFIX = "mmhp"
CURATOR = "20.0.0.1"
PLAIN_PORT, SSL_PORT = 6881, 6882
LOG_LINES = int(os.environ.get("MMHP_LOG_LINES", "5"))
ONE_SIDED = False  # set by main from --one-sided
ROUTER_RULES = """
flush ruleset
table ip nat {
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    oifname "wan" masquerade
  }
}
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan" accept
  }
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname { "lan", "lo" } accept
  }
}
"""


# -- the lab ---------------------------------------------------------------------------------


class Lab:
    """The namespaces, links and router rules; close() removes them."""

    def __init__(self) -> None:
        remove_stale(PREFIX)
        self.owner = f"{PREFIX}-{os.getpid()}-0"
        self.lock = OwnerLock(self.owner)
        self.names = {role: f"{self.owner}-{role}" for role in ("inet", "r1", "r2", "h1", "h2")}
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self) -> None:
        n = self.names
        for name in n.values():
            ip("netns", "add", name)
            ip("link", "set", "lo", "up", netns=name)
        ip("link", "add", "br0", "type", "bridge", netns=n["inet"])
        ip("addr", "add", f"{CURATOR}/24", "dev", "br0", netns=n["inet"])
        ip("link", "set", "br0", "up", netns=n["inet"])
        for k in (1, 2):
            router, host = n[f"r{k}"], n[f"h{k}"]
            ip("link", "add", f"i-r{k}", "netns", n["inet"], "type", "veth",
               "peer", "name", "wan", "netns", router)  # fmt: skip
            ip("link", "set", f"i-r{k}", "master", "br0", "up", netns=n["inet"])
            ip("addr", "add", f"20.0.0.1{k}/24", "dev", "wan", netns=router)
            ip("link", "set", "wan", "up", netns=router)
            ip("link", "add", "lan", "netns", router, "type", "veth",
               "peer", "name", "eth0", "netns", host)  # fmt: skip
            ip("addr", "add", f"192.168.5{k}.1/24", "dev", "lan", netns=router)
            ip("link", "set", "lan", "up", netns=router)
            ip("addr", "add", f"192.168.5{k}.2/24", "dev", "eth0", netns=host)
            ip("link", "set", "eth0", "up", netns=host)
            ip("route", "add", "default", "via", f"192.168.5{k}.1", netns=host)
            in_netns(router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            rules = Path(tempfile.mkstemp(prefix="mmhp-nft-")[1])
            rules.write_text(ROUTER_RULES)
            in_netns(router, "nft", "-f", str(rules))
            rules.unlink()

    def close(self) -> None:
        """Kill everything in the namespaces and delete them."""
        for name in self.names.values():
            delete_netns(name)
        self.lock.release()


# -- the worker (one session in one namespace) -----------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Run one session: seed or download, connect to the curator, print peers as JSON."""
    folder = Path(args.folder)
    cert = Pki(
        (folder / f"{args.role}.crt").read_bytes(),
        (folder / f"{args.role}.key").read_bytes(),
        None,
        None,  # type: ignore[arg-type]
    )
    extra = {
        "listen_interfaces": f"0.0.0.0:{PLAIN_PORT},0.0.0.0:{SSL_PORT}s",
        "alert_mask": int(lt.alert.category_t.all_categories)
        & ~int(lt.alert.category_t.dht_log_notification),
    }
    peer = Peer(args.role, cert=cert, utp=True, extra=extra)
    torrent_data = (folder / "t.torrent").read_bytes()
    atp = lt.load_torrent_buffer(torrent_data)
    atp.save_path = str(folder / "seed" if args.role == "curator" else folder / args.role)
    if args.role == "curator":
        atp.flags |= lt.torrent_flags.seed_mode
    if args.role == "h1" and args.one_sided:
        atp.flags |= lt.torrent_flags.disable_pex  # h1 never learns h2: only h2 dials
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = peer.session.add_torrent(atp)
    if args.role == "curator":
        handle.set_upload_limit(args.cap)
    else:
        port = SSL_PORT if args.ssl else PLAIN_PORT
        handle.connect_peer((CURATOR, port), 0, 1)
    holepunch_lines: list[str] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        peer.pump()
        holepunch_lines += [
            line
            for line in peer.log
            if "holepunch" in line.lower()
            or (("20.0.0.11" in line or "20.0.0.12" in line) and _is_connection_event(line))
        ]
        peer.log.clear()
        status = handle.status()
        peers = [
            {
                "ip": f"{i.ip[0]}:{i.ip[1]}",
                "source": int(i.source),
                "holepunched": bool(int(i.flags) & int(lt.peer_info.holepunched)),
                "up": int(i.total_upload),
            }
            for i in handle.get_peer_info()
        ]
        line = {
            "role": args.role,
            "progress": status.progress,
            "uploaded": status.total_payload_upload,
            "peers": peers,
            "holepunch_log": holepunch_lines[-args.log_lines :],
        }
        print(json.dumps(line), flush=True)
        time.sleep(0.5)


def _is_connection_event(line: str) -> bool:
    return any(word in line for word in ("CONNECT", "disconnect", "HANDSHAKE", "error"))


# -- the run ---------------------------------------------------------------------------------


def one_kind(lab: Lab, kind: str, folder: Path, seconds: float, cap: int) -> dict[str, Any]:
    """Start the three workers for one kind of torrent; what each reported last."""
    ca = make_ca()
    data = folder / "seed" / "film.mkv"
    torrent = build(data, ca.cert_pem if kind == "ssl" else None, private=kind == "private")
    (folder / "t.torrent").write_bytes(torrent.data)
    for role in ("curator", "h1", "h2"):
        shutil.rmtree(folder / role, ignore_errors=True)
        cert = issue(ca, role)
        (folder / f"{role}.crt").write_bytes(cert.cert_pem)
        (folder / f"{role}.key").write_bytes(cert.key_pem)
    procs = {}
    for role, netns in (("curator", "inet"), ("h1", "h1"), ("h2", "h2")):
        command = [
            "ip", "netns", "exec", lab.names[netns], sys.executable, "-m",
            "benchmarks.privacy_holepunch", "--worker", role, "--folder", str(folder),
            "--seconds", str(seconds), "--cap", str(cap), *(["--ssl"] if kind == "ssl" else []),
            "--log-lines", str(LOG_LINES), *(["--one-sided"] if ONE_SIDED else []),
        ]  # fmt: skip
        procs[role] = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
        )
        if role == "curator":
            time.sleep(1.0)  # let it listen before the homes dial (a measurement, not a test)
    last: dict[str, Any] = {}
    reached: dict[str, float] = {}
    start = time.monotonic()
    open_pipes = {p.stdout: role for role, p in procs.items() if p.stdout is not None}
    while open_pipes:
        ready, _, _ = select.select(list(open_pipes), [], [], 1.0)
        for pipe in ready:
            line = pipe.readline()
            if not line:
                del open_pipes[pipe]
                continue
            report = json.loads(line)
            last[open_pipes[pipe]] = report
            if any(p["ip"].startswith(("20.0.0.11:", "20.0.0.12:")) for p in report["peers"]):
                reached.setdefault(open_pipes[pipe], time.monotonic() - start)
    for proc in procs.values():
        proc.wait(timeout=30)
    last["reached"] = reached
    return last


def summary(kind: str, last: dict[str, Any]) -> str:
    """One line per kind."""
    parts = [f"{kind}:"]
    for role in ("h1", "h2"):
        report = last.get(role, {})
        homes = [
            p for p in report.get("peers", []) if p["ip"].startswith(("20.0.0.11:", "20.0.0.12:"))
        ]
        when = last["reached"].get(role)
        parts.append(
            f"{role} progress {report.get('progress', 0):.0%}, uploaded"
            f" {report.get('uploaded', 0) // 1024} KiB, other home"
            f" {f'connected after {when:.0f} s' if when is not None else 'never connected'}"
            f" {[(p['ip'], 'holepunched' if p['holepunched'] else 'direct') for p in homes]}"
        )
        if report.get("holepunch_log"):
            lines = "\n    ".join(report["holepunch_log"][-LOG_LINES:])
            parts.append(f"  {role} log (holepunch, the other home):\n    {lines}")
    return "\n".join(parts)


def main() -> None:
    """Parse arguments; a worker, or the whole run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="ssl,plain,private")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--cap", type=int, default=256 * 1024, help="curator upload B/s")
    parser.add_argument("--worker")
    parser.add_argument("--folder")
    parser.add_argument("--ssl", action="store_true")
    parser.add_argument("--log-lines", type=int, default=5)
    parser.add_argument(
        "--one-sided",
        action="store_true",
        help="h1 ignores PEX, so only h2 dials: the connection needs a BEP 55 rendezvous",
    )
    args = parser.parse_args()
    if args.worker:
        args.role = args.worker
        worker(args)
        return
    global ONE_SIDED  # noqa: PLW0603 - read by one_kind when it starts the workers
    ONE_SIDED = args.one_sided
    folder = Path(tempfile.mkdtemp(prefix="privacy-holepunch-", dir="/var/tmp"))
    random_file(folder / "seed" / "film.mkv", args.size_mib * MiB)
    print(f"load {load_average()}; {args.size_mib} MiB, curator capped at {args.cap} B/s")
    lab = Lab()
    try:
        for kind in args.kinds.split(","):
            print(summary(kind, one_kind(lab, kind, folder, args.seconds, args.cap)), flush=True)
    finally:
        lab.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
