"""Loopback transfer benchmark: meshmedia Engine to Engine, against aria2c.

Seeder and downloader run in separate processes. Prints seconds, MB/s and the
downloader's peak RSS for meshmedia and, when `aria2c` and `opentracker` are
installed (apt-get install aria2 opentracker), for two aria2c processes that
find each other through a local opentracker, and this machine's floor with no
BitTorrent at all (rawpipe.py); then medians, best runs and ratios.

    .venv/bin/python benchmarks/transfer.py --size 1G
    .venv/bin/python benchmarks/transfer.py --size 256M --transport utp --no-aria2
    .venv/bin/python benchmarks/transfer.py --size 256M --set recv_socket_buffer_size=0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libtorrent as lt

from benchmarks.rawpipe import raw_pipe
from meshmedia.config import Config, parse_size
from meshmedia.engine import Engine, TorrentState
from meshmedia.process import install_signal_handlers, tune_malloc
from meshmedia.store import Store
from tests.helpers import free_port, random_file

PIECE = 1 << 20


def make_torrent(path: Path, tracker: str | None = None) -> bytes:
    """A v1 torrent of one file (libtorrent's own hasher; fine in a benchmark)."""
    fs = lt.file_storage()
    fs.add_file(path.name, path.stat().st_size)
    ct = lt.create_torrent(fs, PIECE, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, str(path.parent))
    if tracker:
        ct.add_tracker(tracker)
    return lt.bencode(ct.generate())


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings into a settings dict (ints and booleans recognised)."""
    result: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif raw.lstrip("-").isdigit():
            value = int(raw)
        result[key] = value
    return result


def node_config(base: Path, transport: str) -> Config:
    """A loopback-only config with its own state dir."""
    return Config(
        state_dir=base / "state",
        download_dir=base / "media",
        listen_host="127.0.0.1",
        listen_port=0,
        dht=False,
        lsd=False,
        upnp=False,
        natpmp=False,
        transport=transport,
    )


# -- worker processes ---------------------------------------------------------------
def run_seeder(args: argparse.Namespace) -> None:
    """Seed until SIGTERM; print the port first."""
    stop = threading.Event()
    install_signal_handlers(stop)
    tune_malloc()  # as the daemons do at start-up (the figures in engine.md had it)
    config = node_config(Path(args.state), args.transport)
    with (
        Store.in_state_dir(config.state_dir) as store,
        Engine(config, store, settings=parse_overrides(args.set)) as engine,
    ):
        verified = not args.seed_mode  # make_torrent just hashed this very file
        engine.add_seed(Path(args.torrent).read_bytes(), Path(args.data), verified=verified)
        print(f"PORT {engine.listen_port}", flush=True)
        stop.wait()


def run_downloader(args: argparse.Namespace) -> None:
    """Download from the seeder on 127.0.0.1; print a JSON result line."""
    tune_malloc()
    config = node_config(Path(args.state), args.transport)
    torrent = Path(args.torrent).read_bytes()
    with (
        Store.in_state_dir(config.state_dir) as store,
        Engine(config, store, settings=parse_overrides(args.set)) as engine,
    ):
        started = time.monotonic()
        ih = engine.add_download(torrent, Path(args.data), peers=[("127.0.0.1", args.port)])
        trace: list[tuple[float, float]] = []
        deadline = started + args.timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = engine.wait_until(ih, TorrentState.SEEDING, 1.0)
                break
            except TimeoutError:
                current = engine.status(ih)
                trace.append((round(time.monotonic() - started, 1), current.progress))
                if args.trace:
                    print(f"  t={trace[-1][0]}s {current.progress:.2%}", file=sys.stderr)
        elapsed = time.monotonic() - started
    result = {
        "ok": status is not None,
        "seconds": elapsed,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "trace": trace[-5:],
    }
    print(json.dumps(result), flush=True)


# -- orchestration -------------------------------------------------------------------
def child(role: str, args: argparse.Namespace, **extra: Any) -> list[str]:
    """argv for a worker process of this script."""
    argv = [sys.executable, __file__, "--role", role, "--transport", args.transport]
    if args.seed_mode:
        argv.append("--seed-mode")
    for item in args.set:
        argv += ["--set", item]
    for key, value in extra.items():
        argv += [f"--{key}", str(value)]
    return argv


def bench_meshmedia(args: argparse.Namespace, work: Path, src: Path, torrent: Path) -> dict:
    """One Engine-to-Engine run in two processes."""
    dst = work / "mm-dst"
    shutil.rmtree(dst, ignore_errors=True)
    seeder = subprocess.Popen(
        child("seed", args, state=work / "mm-seed", torrent=torrent, data=src.parent),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(seeder.stdout.readline().split()[1])
        argv = (
            child("download", args, state=dst / "state", torrent=torrent, data=dst, port=port)
            + ["--timeout", str(args.timeout)]
            + (["--trace"] if args.trace else [])
        )
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        seeder.send_signal(signal.SIGTERM)
        seeder.wait(30)
    result["identical"] = files_identical(src, dst / src.name) if args.verify else None
    return result


def bench_aria2(args: argparse.Namespace, work: Path, src: Path, torrent_bytes: bytes) -> dict:
    """aria2c seeder and downloader meeting through a local opentracker."""
    port = free_port()
    announce = f"http://127.0.0.1:{port}/announce"
    torrent = work / "aria2.torrent"
    torrent.write_bytes(add_announce(torrent_bytes, announce))
    info_hash = str(lt.torrent_info(str(torrent)).info_hashes().v1)
    # opentracker chroots into -d and drops to "nobody": the whitelist lives there
    chroot = work / "tracker"
    chroot.mkdir(mode=0o755, exist_ok=True)
    (chroot / "whitelist").write_text(info_hash + "\n")
    (chroot / "whitelist").chmod(0o644)
    dst = work / "aria2-dst"
    shutil.rmtree(dst, ignore_errors=True)
    common = [
        "aria2c", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
        "--enable-peer-exchange=false", "--console-log-level=warn", "--summary-interval=0",
        "--bt-tracker-interval=1", "--file-allocation=none",
    ]  # fmt: skip
    tracker = subprocess.Popen(
        ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port),
         "-d", str(chroot), "-w", "/whitelist"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seeder = subprocess.Popen(
        [*common, f"--listen-port={free_port()}", f"--dir={src.parent}", "--seed-ratio=0.0",
         "--bt-seed-unverified=true", "--check-integrity=false", str(torrent)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2)  # let the seeder announce first
        started = time.monotonic()
        down = subprocess.Popen(
            [*common, f"--listen-port={free_port()}", f"--dir={dst}", "--seed-time=0",
             str(torrent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        killer = threading.Timer(args.timeout, down.kill)
        killer.start()
        _, status, usage = os.wait4(down.pid, 0)
        killer.cancel()
        down.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
    finally:
        for proc in (seeder, tracker):
            proc.terminate()
            proc.wait(30)
        if tracker.returncode not in (0, -signal.SIGTERM):
            print(f"opentracker exited with {tracker.returncode}", file=sys.stderr)
    return {
        "ok": down.returncode == 0,
        "seconds": elapsed,
        "peak_rss_kib": usage.ru_maxrss,
        "identical": files_identical(src, dst / src.name) if args.verify else None,
    }


def add_announce(torrent: bytes, announce: str) -> bytes:
    """The same torrent (same info hash) with an announce URL."""
    data = lt.bdecode(torrent)
    data[b"announce"] = announce.encode()
    return lt.bencode(data)


def files_identical(a: Path, b: Path) -> bool:
    """Byte comparison in 8 MiB blocks."""
    if not b.exists() or a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(8 << 20), fb.read(8 << 20)
            if x != y:
                return False
            if not x:
                return True


def report(name: str, size: int, result: dict) -> None:
    """One line per run."""
    mbps = size / result["seconds"] / 1e6
    print(
        f"{name:<22} {result['seconds']:7.2f} s  {mbps:8.1f} MB/s  "
        f"peak RSS {result['peak_rss_kib'] / 1024:6.0f} MiB  ok={result['ok']} "
        f"identical={result['identical']}"
        + (f" trace={result['trace']}" if not result["ok"] else "")
    )


def main() -> None:
    """Parse options and run the benchmark (or one worker role)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="file size, e.g. 1G, 256M")
    parser.add_argument("--transport", default="both", choices=("both", "tcp", "utp"))
    parser.add_argument("--set", action="append", default=[], help="libtorrent key=value")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-aria2", action="store_true")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the raw-pipe floor"
    )
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--trace", action="store_true", help="print progress each second")
    parser.add_argument(
        "--seed-mode", action="store_true", help="seeder hashes each piece on first request"
    )
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--role", choices=("seed", "download"), help=argparse.SUPPRESS)
    for hidden in ("state", "torrent", "data"):
        parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "seed":
        run_seeder(args)
        return
    if args.role == "download":
        run_downloader(args)
        return
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="mm-bench-") as tmp:
        work = Path(tmp)
        src = random_file(work / "src" / "payload.bin", size)
        torrent_bytes = make_torrent(src)
        torrent = work / "payload.torrent"
        torrent.write_bytes(torrent_bytes)
        print(f"{size} bytes over 127.0.0.1, transport={args.transport}, set={args.set}")
        times: dict[str, list[float]] = {}
        for run in range(args.runs):
            os.sync()  # else run 1 races the writeback of the file just created
            result = bench_meshmedia(args, work, src, torrent)
            report(f"meshmedia run {run + 1}", size, result)
            if result["ok"]:
                times.setdefault("meshmedia", []).append(result["seconds"])
        if not args.no_aria2 and shutil.which("aria2c") and shutil.which("opentracker"):
            for run in range(args.runs):
                os.sync()
                result = bench_aria2(args, work, src, torrent_bytes)
                report(f"aria2c run {run + 1}", size, result)
                if result["ok"]:
                    times.setdefault("aria2c", []).append(result["seconds"])
        if args.floor:
            for run in range(args.runs):
                os.sync()
                seconds = raw_pipe(src, work / "rawpipe.bin")
                (work / "rawpipe.bin").unlink()
                mbps = size / seconds / 1e6
                print(f"raw pipe run {run + 1:<9} {seconds:7.2f} s  {mbps:8.1f} MB/s"
                      "  (sendfile -> recv, write, SHA-1; no BitTorrent)")  # fmt: skip
                times.setdefault("raw pipe", []).append(seconds)
        summarize(times)


def summarize(times: dict[str, list[float]]) -> None:
    """Medians and best runs, and meshmedia's ratio to each of the others."""
    ours = times.get("meshmedia")
    for name, values in times.items():
        median = statistics.median(values)
        line = f"{name + ' median':<22} {median:7.2f} s  best {min(values):.2f} s"
        if ours and name != "meshmedia":
            ratio = median / statistics.median(ours)
            line += f"  {name}/meshmedia: median {ratio:.2f}x, best {min(values) / min(ours):.2f}x"
        print(line)


if __name__ == "__main__":
    main()
