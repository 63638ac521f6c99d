"""Tiny network probes that system tests run inside lab hosts (stdlib only).

    python probe.py echo PORT                  TCP echo server, one connection at a time
    python probe.py rtt HOST PORT N            N TCP round trips; prints min and median RTT in ms
    python probe.py udp-sink PORT SECONDS      counts datagrams until SECONDS of silence; prints it
    python probe.py udp-burst HOST PORT N      sends N numbered datagrams, paced
    python probe.py sink PORT                  accepts one TCP stream, replies with its byte count
    python probe.py send HOST PORT BYTES       sends BYTES; prints "<bytes> <seconds>"
    python probe.py whoami PORT                answers on TCP and UDP PORT with the asker's ip:port
    python probe.py ask HOST PORT tcp|udp [SRC [TIMEOUT]]  asks whoami (from port SRC); prints it
    python probe.py udp-echo PORT              echoes every UDP datagram
    python probe.py ping HOST PORT N GAP       N UDP echoes GAP s apart; prints min median max lost
Servers print "ready" once listening.
"""

from __future__ import annotations

import select
import socket
import statistics
import sys
import time


def ready() -> None:
    """Tell the parent that the server listens."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def listener(port: int) -> socket.socket:
    """A TCP socket listening on every address of the host."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(8)
    return sock


def echo(port: int) -> None:
    """Echo every TCP connection's bytes back, one connection after another."""
    server = listener(port)
    ready()
    while True:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def rtt(host: str, port: int, count: int) -> None:
    """Time `count` one-byte round trips over one TCP connection."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(count):
            start = time.monotonic()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise SystemExit("echo broke")
            times.append((time.monotonic() - start) * 1000.0)
    print(f"{min(times):.2f} {statistics.median(times):.2f}")


def udp_sink(port: int, silence: float) -> None:
    """Count datagrams until `silence` seconds pass without one (after the first)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", port))
    ready()
    seen: set[bytes] = set()
    sock.settimeout(60)
    try:
        while True:
            seen.add(sock.recv(2048)[:8])
            sock.settimeout(silence)
    except TimeoutError:
        pass
    print(len(seen))


def udp_burst(host: str, port: int, count: int) -> None:
    """Send `count` numbered 200-byte datagrams at about 5000 per second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for number in range(count):
        sock.sendto(number.to_bytes(8, "big") + bytes(192), (host, port))
        if number % 50 == 49:
            time.sleep(0.01)


def sink(port: int) -> None:
    """Read one TCP stream to its end and reply with the number of bytes read."""
    server = listener(port)
    ready()
    conn, _ = server.accept()
    with conn:
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        conn.sendall(str(total).encode())


def send(host: str, port: int, size: int) -> None:
    """Send `size` bytes, half-close, wait for the byte count; print it and the time."""
    block = bytes(1 << 20)
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=60) as sock:
        left = size
        while left:
            chunk = min(left, len(block))
            sock.sendall(block[:chunk])
            left -= chunk
        sock.shutdown(socket.SHUT_WR)
        count = int(sock.recv(64))
    print(f"{count} {time.monotonic() - start:.3f}")


def whoami(port: int) -> None:
    """Tell every TCP connection and UDP datagram on `port` the address it came from."""
    server = listener(port)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    ready()
    while True:
        readable, _, _ = select.select([server, udp], [], [])
        if udp in readable:
            _, peer = udp.recvfrom(2048)
            udp.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
        if server in readable:
            conn, peer = server.accept()
            with conn:
                conn.sendall(f"{peer[0]}:{peer[1]}".encode())


def ask(host: str, port: int, protocol: str, source: int = 0, timeout: float = 5.0) -> None:
    """Ask a whoami server (from local port `source`) how we look; print its answer."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(timeout)
        sock.bind(("0.0.0.0", source))
        if protocol == "tcp":
            sock.connect((host, port))
        else:
            sock.sendto(b"?", (host, port))
        print(sock.recv(256).decode())


def udp_echo(port: int) -> None:
    """Send every datagram back where it came from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    ready()
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def ping(host: str, port: int, count: int, gap: float) -> None:
    """`count` UDP echoes `gap` seconds apart (1 s timeout each): min, median, max ms, lost."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    times = []
    for number in range(count):
        start = time.monotonic()
        sock.sendto(number.to_bytes(4, "big"), (host, port))
        try:
            while int.from_bytes(sock.recv(64)[:4], "big") != number:
                pass
            times.append((time.monotonic() - start) * 1000.0)
        except TimeoutError:
            pass
        time.sleep(max(0.0, gap - (time.monotonic() - start)))
    if not times:
        raise SystemExit(f"no answer from {host}:{port}")
    low, mid, high = min(times), statistics.median(times), max(times)
    print(f"{low:.2f} {mid:.2f} {high:.2f} {count - len(times)}")


def main(argv: list[str]) -> None:
    """Dispatch one probe command."""
    name, args = argv[0], argv[1:]
    if name == "echo":
        echo(int(args[0]))
    elif name == "rtt":
        rtt(args[0], int(args[1]), int(args[2]))
    elif name == "udp-sink":
        udp_sink(int(args[0]), float(args[1]))
    elif name == "udp-burst":
        udp_burst(args[0], int(args[1]), int(args[2]))
    elif name == "sink":
        sink(int(args[0]))
    elif name == "send":
        send(args[0], int(args[1]), int(args[2]))
    elif name == "whoami":
        whoami(int(args[0]))
    elif name == "ask":
        ask(args[0], int(args[1]), args[2], *[int(a) for a in args[3:4]], *map(float, args[4:5]))
    elif name == "udp-echo":
        udp_echo(int(args[0]))
    elif name == "ping":
        ping(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        raise SystemExit(f"unknown probe {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
