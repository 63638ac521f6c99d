"""A userspace Ethernet switch that delays and drops frames, like `tc netem` on each link.

The kernel on our test machines has no netem, so `Network.impair()` takes the switch
namespace's ports out of the kernel bridge and runs this program there instead. It
opens one AF_PACKET socket per port, learns MAC addresses, and forwards every frame
that arrives on port P after P's delay, or drops it with P's loss probability: the
impairment of a link applies to what its host sends, as netem on the host's
interface would. Frames are read and written with a virtio-net header
(PACKET_VNET_HDR) so that GSO super-frames and partial checksums pass through intact.

Run inside the switch namespace:
    python impair.py --seed 1 p0:50:0.01 p1:50:0.01 ...   (port:delay_ms:loss)
It prints "ready" on stdout once every port is bound, and runs until killed.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
VNET_HDR_LEN = 10
BUFFER_BYTES = 8 << 20
MAX_QUEUED_BYTES = 64 << 20
READ_BURST = 64
RECV_SIZE = 65536 + VNET_HDR_LEN + 64
# Errors on send that mean "this frame is lost" (port down, buffers full), not a bug.
SEND_LOSSES = {errno.ENETDOWN, errno.ENXIO, errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE}


@dataclass(frozen=True)
class Port:
    """One switch port: an interface name and the impairment of what arrives on it."""

    name: str
    delay: float
    loss: float


def parse_port(text: str) -> Port:
    """Parse "name:delay_ms:loss" into a Port."""
    name, delay_ms, loss = text.split(":")
    return Port(name, float(delay_ms) / 1000.0, float(loss))


def open_port(name: str) -> socket.socket:
    """A non-blocking AF_PACKET socket bound to interface `name`, with vnet headers."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, BUFFER_BYTES)
    sock.bind((name, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class Switch:
    """A learning switch with a per-port delay line and loss."""

    def __init__(self, ports: list[Port], seed: int | None) -> None:
        self.ports = ports
        self.socks = [open_port(port.name) for port in ports]
        self.macs: dict[bytes, int] = {}
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.queued_bytes = 0
        self.seq = 0
        self.rng = random.Random(seed)
        self.by_fd = {sock.fileno(): index for index, sock in enumerate(self.socks)}
        self.stats = {"frames": 0, "bytes": 0, "lost": 0, "overflow": 0, "largest": 0}

    def run(self) -> None:
        """Forward frames until killed."""
        poller = select.poll()
        for fd in self.by_fd:
            poller.register(fd, select.POLLIN)
        while True:
            timeout_ms = None
            if self.queue:
                timeout_ms = max(0.0, (self.queue[0][0] - time.monotonic()) * 1000.0)
            for fd, _ in poller.poll(timeout_ms):
                self.receive(self.by_fd[fd])
            self.send_due()

    def receive(self, index: int) -> None:
        """Read a burst of frames from port `index` and queue or send them."""
        sock, port = self.socks[index], self.ports[index]
        for _ in range(READ_BURST):
            try:
                frame = sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:  # ENETDOWN after the port went down: nothing to read
                return
            if len(frame) < VNET_HDR_LEN + 14:
                continue
            self.count(len(frame) - VNET_HDR_LEN)
            source = frame[VNET_HDR_LEN + 6 : VNET_HDR_LEN + 12]
            if not source[0] & 1:
                self.macs[source] = index
            if port.loss and self.rng.random() < port.loss:
                self.stats["lost"] += 1
                continue
            out = self.macs.get(frame[VNET_HDR_LEN : VNET_HDR_LEN + 6], -1)
            if out == index:
                continue
            if not port.delay:
                self.transmit(index, out, frame)
            elif self.queued_bytes + len(frame) <= MAX_QUEUED_BYTES:
                self.seq += 1
                self.queued_bytes += len(frame)
                due = time.monotonic() + port.delay
                heapq.heappush(self.queue, (due, self.seq, index * 1024 + out + 1, frame))
            else:
                self.stats["overflow"] += 1

    def count(self, size: int) -> None:
        """Account one received frame of `size` bytes (Ethernet header included)."""
        self.stats["frames"] += 1
        self.stats["bytes"] += size
        self.stats["largest"] = max(self.stats["largest"], size)

    def send_due(self) -> None:
        """Send every queued frame whose time has come."""
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            _, _, route, frame = heapq.heappop(self.queue)
            self.queued_bytes -= len(frame)
            self.transmit(route // 1024, route % 1024 - 1, frame)

    def transmit(self, source: int, out: int, frame: bytes) -> None:
        """Send `frame` to port `out`, or flood it to every port but `source` (out == -1)."""
        targets = [out] if out >= 0 else [i for i in range(len(self.socks)) if i != source]
        for target in targets:
            try:
                self.socks[target].send(frame)
            except OSError as exc:
                if exc.errno not in SEND_LOSSES:
                    raise


def main(argv: list[str] | None = None) -> None:
    """Parse the ports, bind them, say "ready", forward forever."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("ports", nargs="+", type=parse_port, help="name:delay_ms:loss")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    switch = Switch(args.ports, args.seed)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        switch.run()
    except KeyboardInterrupt:
        pass
    finally:
        sys.stderr.write(" ".join(f"{k}={v}" for k, v in switch.stats.items()) + "\n")


if __name__ == "__main__":
    main()
