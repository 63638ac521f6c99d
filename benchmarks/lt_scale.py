"""Idle cost and restart time of one libtorrent session seeding thousands of small torrents.

Raw libtorrent 2.1, configured as meshmedia configures its engine
(`meshmedia.engine_settings.session_params`, the peer class filter, the malloc
top pad), seeding N torrents of 100 KB files restored from resume data (as an
engine restart does). Each measurement runs in a fresh child process inside a
network namespace that has only `lo` (root; `--no-netns` to skip), so DHT, LSD,
UPnP and NAT-PMP reach nothing outside. Per count and variant it prints: the
seconds to add every torrent, until every one is seeding, and RSS; then the
CPU (% of one core) and RSS over an idle window, with the threads that used it.

    sudo .venv/bin/python benchmarks/lt_scale.py --counts 1000,5000 --variants meshmedia
    sudo .venv/bin/python benchmarks/lt_scale.py --list

The `loop` of a variant is what the process does besides the session:
  meshmedia  what engine_alerts.AlertLoop does: wait_for_alert(100 ms), post_torrent_updates
             every 0.5 s, need_save_resume_data() on every handle every second
  updates    only the 0.5 s post_torrent_updates (and the 100 ms alert wait)
  none       only the 100 ms alert wait
Results: native_notes/engine.md, "Idle cost of 5,000 torrents".
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt

from meshmedia.config import Config
from meshmedia.engine.resume import IF_MODIFIED_BUT_COUNTERS
from meshmedia.engine.settings import peer_class_filter, session_params
from meshmedia.hashing import piece_size_for
from meshmedia.process import tune_malloc

FILE_SIZE = 100_000
CLK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Variant:
    """Settings over meshmedia's, the config's switches, and the process's own loop."""

    about: str
    settings: dict[str, Any] = field(default_factory=dict)
    dht: bool = True
    lsd: bool = True
    loop: str = "meshmedia"
    add: str = "sync"  # sync: add_torrent one by one; async: async_add_torrent, then the alerts
    env: dict[str, str] = field(default_factory=dict)  # the child's environment (malloc)
    trim: bool = False  # malloc_trim(0) once every torrent seeds
    keep_bytes: bool = True  # keep each torrent's resume bytes in Python (as a list)


VARIANTS: dict[str, Variant] = {
    "meshmedia": Variant("meshmedia's engine today (DHT and LSD on, as by default)"),
    "async_add": Variant("as meshmedia, torrents added with async_add_torrent", add="async"),
    "loop_updates": Variant("no need_save_resume_data() sweep; status posts only",
                            loop="updates"),
    "loop_none": Variant("no sweep, no status posts", loop="none"),
    "no_dht": Variant("DHT off", dht=False, loop="none"),
    "no_lsd": Variant("LSD off", lsd=False, loop="none"),
    "no_dht_lsd": Variant("DHT and LSD off", dht=False, lsd=False, loop="none"),
    "tick500": Variant("tick_interval 500 ms (libtorrent's default)",
                       settings={"tick_interval": 500}, loop="none"),
    "lean": Variant("DHT, LSD off; tick 500 ms; no sweep", dht=False, lsd=False,
                    settings={"tick_interval": 500}, loop="updates"),
    # memory (native_notes/memory.md): async adds and status posts as the engine does
    "mem": Variant("as the engine: async adds, DHT/LSD off, status posts", dht=False,
                   lsd=False, add="async", loop="updates"),
    "mem_nobytes": Variant("mem, resume bytes dropped once added", dht=False, lsd=False,
                           add="async", loop="updates", keep_bytes=False),
    "mem_arena1": Variant("mem, MALLOC_ARENA_MAX=1", dht=False, lsd=False, add="async",
                          loop="updates", env={"MALLOC_ARENA_MAX": "1"}),
    "mem_arena2": Variant("mem, MALLOC_ARENA_MAX=2", dht=False, lsd=False, add="async",
                          loop="updates", env={"MALLOC_ARENA_MAX": "2"}),
    "mem_trim": Variant("mem, malloc_trim(0) once seeding", dht=False, lsd=False,
                        add="async", loop="updates", trim=True),
    "mem_aq": Variant("mem, alert_queue_size 1000 (libtorrent's 2.1 default 2000)",
                      dht=False, lsd=False, add="async", loop="updates",
                      settings={"alert_queue_size": 1000}),
    "mem_peerlist": Variant("mem, max_peerlist_size 100 (default 3000)", dht=False,
                            lsd=False, add="async", loop="updates",
                            settings={"max_peerlist_size": 100,
                                      "max_paused_peerlist_size": 100}),
    "mem_ltdefault": Variant("mem, libtorrent's own settings (no meshmedia settings)",
                             dht=False, lsd=False, add="async", loop="updates",
                             settings={"raw": True}),
}  # fmt: skip


# -- the library of small files, built once --------------------------------------------
def prepare(folder: Path, count: int) -> Path:
    """`count` files of 100 KB and their resume data (a complete seed); returns the list file."""
    listing = folder / f"resume-{count}.list"
    if listing.exists():
        return listing
    files, resume = folder / "files", folder / "resume"
    files.mkdir(parents=True, exist_ok=True)
    resume.mkdir(exist_ok=True)
    names = []
    for index in range(count):
        name = resume / f"{index}.resume"
        if not name.exists():
            data = os.urandom(FILE_SIZE)
            (files / f"item{index}.bin").write_bytes(data)
            name.write_bytes(_resume_for(f"item{index}.bin", data, files))
        names.append(str(name))
    listing.write_text("\n".join(names))
    return listing


def _resume_for(name: str, data: bytes, save_path: Path) -> bytes:
    piece = piece_size_for(len(data))
    ct = lt.create_torrent(
        [lt.create_file_entry(name, len(data))], piece, lt.create_torrent.v1_only
    )
    for index in range(ct.num_pieces()):
        ct.set_hash(index, hashlib.sha1(data[index * piece : (index + 1) * piece]).digest())
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(lt.bdecode(lt.bencode(ct.generate())))
    atp.save_path = str(save_path)
    atp.have_pieces = [True] * atp.ti.num_pieces()
    return bytes(lt.write_resume_data_buf(atp))


# -- the child: one session, measured ------------------------------------------------
def rss_mib() -> float:
    """This process's resident set size in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_ticks() -> dict[str, int]:
    """CPU clock ticks per thread of this process ("main" is Python's main thread; the
    libtorrent threads carry no names of their own, so they are keyed by thread id)."""
    out: dict[str, int] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "main" if int(task.name) == os.getpid() else f"tid{task.name}"
        out[name] = int(fields[11]) + int(fields[12])
    return out


def child(listing: Path, name: str, idle: float) -> dict[str, Any]:
    """Restore every torrent, wait until all seed, then measure an idle window."""
    variant = VARIANTS[name]
    tune_malloc()
    config = Config(listen_host="127.0.0.1", listen_port=0, dht=variant.dht, lsd=variant.lsd)
    if variant.settings.get("raw"):
        ses = lt.session(
            {
                "listen_interfaces": "127.0.0.1:0",
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
            }
        )
    else:
        ses = lt.session(session_params(config, variant.settings))
    ses.set_peer_class_filter(peer_class_filter())
    buffers = [Path(p).read_bytes() for p in listing.read_text().split("\n")]
    rss_start = rss_mib()
    started = time.monotonic()
    handles = _add_all(ses, buffers, variant.add)
    added = time.monotonic() - started
    if not variant.keep_bytes:
        buffers.clear()
    seeding = _wait_seeding(ses, len(handles), started)
    rss_added = rss_mib()
    if variant.trim:
        ctypes.CDLL(None).malloc_trim(0)
    settle_until = time.monotonic() + 5
    _loop(ses, handles, variant.loop, settle_until)
    before, ticks = os.times(), thread_ticks()
    began = time.monotonic()
    _loop(ses, handles, variant.loop, began + idle)
    after, wall = os.times(), time.monotonic() - began
    cpu = (after.user + after.system - before.user - before.system) / wall * 100
    later = thread_ticks()
    threads = {k: round((later[k] - ticks.get(k, 0)) / CLK / wall * 100, 2) for k in later}
    return {
        "variant": name, "count": len(handles), "add_s": round(added, 3),
        "seeding_s": round(seeding, 3), "rss_start_mib": round(rss_start, 1),
        "rss_added_mib": round(rss_added, 1), "idle_cpu_pct": round(cpu, 2),
        "rss_idle_mib": round(rss_mib(), 1), "threads_n": len(os.listdir("/proc/self/task")),
        "threads": {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v},
    }  # fmt: skip


def _params(buffer: bytes) -> Any:
    atp = lt.read_resume_data(buffer)
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    return atp


def _add_all(ses: Any, buffers: list[bytes], how: str) -> list[Any]:
    if how == "sync":
        return [ses.add_torrent(_params(b)) for b in buffers]
    for buffer in buffers:
        ses.async_add_torrent(_params(buffer))
    handles: list[Any] = []
    deadline = time.monotonic() + 300
    while len(handles) < len(buffers) and time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.add_torrent_alert):
                handles.append(alert.handle)
    return handles


def _wait_seeding(ses: Any, count: int, started: float) -> float:
    """Seconds from `started` until every torrent is seeding (state updates)."""
    states: dict[str, Any] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ses.post_torrent_updates()
        ses.wait_for_alert(100)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.state_update_alert):
                for st in alert.status:
                    states[str(st.info_hashes.v1)] = st.state
        seeding = sum(1 for s in states.values() if s == lt.torrent_status.seeding)
        if seeding == count:
            return time.monotonic() - started
    return float("nan")


def _loop(ses: Any, handles: list[Any], loop: str, until: float) -> None:
    """What the engine's alert thread does, for the variant, until `until`."""
    next_update = next_save = time.monotonic()
    while (now := time.monotonic()) < until:
        ses.wait_for_alert(100)
        ses.pop_alerts()
        if loop in ("meshmedia", "updates") and now >= next_update:
            ses.post_torrent_updates()
            next_update = now + 0.5
        if loop == "meshmedia" and now >= next_save:
            for handle in handles:
                if handle.need_save_resume_data(IF_MODIFIED_BUT_COUNTERS):
                    handle.save_resume_data(lt.torrent_handle.save_info_dict)
            next_save = now + 1.0


# -- the orchestrator ----------------------------------------------------------------
def run_child(listing: Path, name: str, idle: float, netns: bool) -> dict[str, Any]:
    """One measurement in a fresh process (in a loopback-only namespace when `netns`)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(listing), name,
            "--idle", str(idle)]  # fmt: skip
    if netns:
        argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    env = {**os.environ, **VARIANTS[name].env}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, env=env)
    if done.returncode != 0:
        return {"variant": name, "error": (done.stderr or done.stdout).strip()[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    """Prepare the libraries, run each count x variant `--runs` times, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--counts", default="1000,5000")
    parser.add_argument("--variants", default="meshmedia")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="keep the libraries here (default: temp)")
    parser.add_argument("--no-netns", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1], args.idle)))
        return 0
    if args.list:
        for name, variant in VARIANTS.items():
            print(f"{name:14} {variant.about}")
        return 0
    folder = args.dir or Path(tempfile.mkdtemp(prefix="mm-ltscale-"))
    for count in (int(c) for c in args.counts.split(",")):
        listing = prepare(folder, count)
        for name in args.variants.split(","):
            results = []
            for _ in range(args.runs):
                load = os.getloadavg()[0]
                result = run_child(listing, name, args.idle, not args.no_netns)
                result["load"] = round(load, 2)
                results.append(result)
                print(json.dumps(result), flush=True)
            good = [r for r in results if "error" not in r]
            if len(good) > 1:
                cpu = statistics.median(r["idle_cpu_pct"] for r in good)
                rss = statistics.median(r["rss_idle_mib"] for r in good)
                print(f"{count} {name}: median idle {cpu:.2f}% of a core, RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
