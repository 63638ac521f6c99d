"""Shared parts of the benchmark suite: rows, processes, a loopback-only namespace, files."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20


@dataclass
class Row:
    """One line of the table: a meshmedia number beside one anchor's number.

    `lower_is_better` says how the ratio is taken: anchor/meshmedia for times
    (so > 1 means meshmedia is faster), meshmedia/anchor for rates.
    """

    benchmark: str
    meshmedia: float | None = None
    unit: str = "s"
    anchor: str = "-"
    anchor_value: float | None = None
    note: str = ""
    lower_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """How many times better meshmedia is than the anchor (None without both numbers)."""
        if not self.meshmedia or not self.anchor_value:
            return None
        if self.lower_is_better:
            return self.anchor_value / self.meshmedia
        return self.meshmedia / self.anchor_value


def _below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range: no outgoing connection takes one."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return range(min(20000, low // 2), low)


_FREE_RANGE = _below_ephemeral()  # read once: the kernel's range does not change in a run
_PORTS = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 a moment ago, taken below the ephemeral
    range. A port from bind(0) is an ephemeral one, and any process's next outgoing
    connection can take it as its source port before the daemon binds it (a client whose
    --status-port is taken exits, and a test polling that port waits out its bound: the
    likely cause of the swarm test's 240 s stall in CI, not reproduced here; a daemon
    restarted on its old ports by a benchmark runs the same risk)."""
    ports = _FREE_RANGE
    for _ in range(200):
        port = _PORTS.choice(ports)
        if _binds(port, socket.SOCK_STREAM) and _binds(port, socket.SOCK_DGRAM):
            return port
    raise AssertionError(f"no free port in {ports.start}-{ports.stop - 1} after 200 tries")


def _binds(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def random_file(path: Path, size: int) -> Path:
    """Write `size` random bytes to `path` in 16 MiB blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            block = min(left, 16 * MiB)
            out.write(os.urandom(block))
            left -= block
    return path


def drop(staged: Path, target: Path) -> float:
    """Rename a fully written file into a watched folder; return the monotonic time after."""
    os.rename(staged, target)
    return time.monotonic()


def wait_path(path: Path, size: int, timeout: float, alive: Callable[[], bool]) -> float:
    """Tight stat loop (1 ms) until `path` exists with `size` bytes; the monotonic time then.

    Raises TimeoutError after `timeout` s or RuntimeError when `alive()` turns false.
    """
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        try:
            if path.stat().st_size == size:
                return time.monotonic()
        except FileNotFoundError:
            pass
        checks += 1
        if checks % 500 == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} not complete after {timeout:.0f} s")
            if not alive():
                raise RuntimeError(f"a process died while waiting for {path}")
        time.sleep(0.001)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `predicate` every 50 ms until truthy; TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Processes:
    """Child processes started for one benchmark; all stopped by close(), in reverse order."""

    def __init__(self, netns: LoopbackNetns | None = None) -> None:
        self.netns = netns
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], log: Path | None = None, **kwargs: object) -> subprocess.Popen:
        """Start `argv` (inside the namespace when there is one); stderr to `log`."""
        if self.netns is not None:
            argv = self.netns.wrap(argv)
        err = log.open("a") if log else subprocess.DEVNULL
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        try:
            proc = subprocess.Popen(argv, stderr=err, text=True, **kwargs)  # type: ignore[call-overload]
        finally:
            if log:
                err.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def alive(self) -> bool:
        """True while no started process has exited with an error."""
        return all(p.poll() in (None, 0) for p in self.procs)

    def close(self) -> None:
        """SIGTERM every process still running, then SIGKILL after 20 s."""
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM, wait up to `grace` s, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
    if proc.stdout:
        proc.stdout.close()


class LoopbackNetns:
    """A network namespace with only `lo` up, held by a sleeping child process.

    Processes run through wrap() can reach nothing but 127.0.0.1 inside it, so an
    anchor's default trackers, DHT routers or discovery servers are never contacted.
    Needs root (unshare -n); `available` is False otherwise.
    """

    def __init__(self) -> None:
        self.holder: subprocess.Popen[str] | None = None
        self.available = False
        self.error = ""

    def __enter__(self) -> LoopbackNetns:
        if not (shutil.which("unshare") and shutil.which("nsenter")):
            self.error = "unshare/nsenter not installed"
            return self
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sleep", "3600"], stderr=subprocess.PIPE, text=True
        )
        time.sleep(0.1)
        up = subprocess.run(
            self.wrap(["ip", "link", "set", "lo", "up"]),
            capture_output=True,
            text=True,
            check=False,
        )
        if self.holder.poll() is not None or up.returncode != 0:
            self.error = f"no network namespace: {up.stderr.strip() or 'unshare -n failed'}"
            self.__exit__()
            return self
        self.available = True
        return self

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (nsenter execs it: same pid)."""
        assert self.holder is not None
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *argv]

    def __exit__(self, *exc: object) -> None:
        if self.holder is not None:
            stop(self.holder, grace=5)
            if self.holder.stderr:
                self.holder.stderr.close()
            self.holder = None


# -- the report ----------------------------------------------------------------------
def _run(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def versions() -> dict[str, str]:
    """Versions of libtorrent and of each anchor ('not installed' when absent)."""
    import libtorrent as lt  # noqa: PLC0415

    found = {"libtorrent": lt.__version__}
    commands = {
        "aria2c": (["aria2c", "--version"], r"version (\S+)"),
        "syncthing": (["syncthing", "--version"], r"(v\S+)"),
        "webtorrent": (["webtorrent", "--version"], r"(\S+)"),
        "mktorrent": (["mktorrent", "-h"], r"mktorrent (\S+)"),
        "opentracker": (["dpkg-query", "-W", "-f", "${Version}", "opentracker"], r"(\S+)"),
    }
    for name, (argv, pattern) in commands.items():
        if shutil.which(name) is None:
            found[name] = "not installed"
            continue
        match = re.search(pattern, _run(argv))
        found[name] = match.group(1) if match else "?"
    return found


def machine() -> str:
    """nproc, CPU model, RAM and kernel on one line."""
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    ram = f"{int(mem.group(1)) / (1 << 20):.1f} GiB RAM" if mem else "RAM ?"
    model = cpu.group(1).strip() if cpu else "CPU ?"
    return f"{os.cpu_count()} cores ({model}), {ram}, kernel {os.uname().release}"


def _value(number: float | None, unit: str) -> str:
    if number is None:
        return "-"
    if unit == "s":
        return f"{number:.3f} s" if number < 10 else f"{number:.1f} s"
    if unit == "ms":
        return f"{number:.1f} ms"
    return f"{number:,.0f} {unit}"


def table(rows: list[Row], header: list[str], markdown: bool) -> str:
    """The rows as a plain-text table (or Markdown), the header lines above."""
    titles = ["benchmark", "meshmedia", "anchor", "anchor value", "ratio", "note"]
    cells = [
        [
            row.benchmark,
            _value(row.meshmedia, row.unit),
            row.anchor,
            _value(row.anchor_value, row.unit),
            f"{row.ratio:.2f}x" if row.ratio else "-",
            row.note,
        ]
        for row in rows
    ]
    if markdown:
        lines = [f"- {line}" for line in header] + [""]
        lines.append("| " + " | ".join(titles) + " |")
        lines.append("|" + "|".join("---" for _ in titles) + "|")
        lines += ["| " + " | ".join(c.replace("|", "/") for c in cell) + " |" for cell in cells]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [titles, *cells]) for i in range(len(titles) - 1)]
    lines = [*header, ""]
    for cell in [titles, *cells]:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=False)) + "  " + cell[-1]
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"
