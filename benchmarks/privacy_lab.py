"""Shared parts of the private-groups experiments (native_notes/privacy.md).

A group CA and member certificates made with `cryptography`; v1 torrents built
from meshmedia's own piece hashes, optionally with the CA in the info dict
(`create_torrent.set_root_cert`) and/or the BEP 27 private flag; bare libtorrent
sessions on 127.0.0.1 with meshmedia's settings plus an SSL listen socket; and
a stranger that speaks raw BitTorrent or raw TLS to a member's ports.

Every session here is in this process; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from meshmedia.config import Config
from meshmedia.engine.certificates import FFDHE2048
from meshmedia.engine.settings import build_settings
from meshmedia.hashing import hash_file

MiB = 1 << 20
KEY_TYPES = ("ed25519", "p256")


# -- certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA (or a member): its certificate and private key as PEM, and the key object."""

    cert_pem: bytes
    key_pem: bytes
    key: Any
    cert: x509.Certificate


def _new_key(kind: str) -> Any:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _sign(builder: x509.CertificateBuilder, key: Any) -> x509.Certificate:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def make_ca(common_name: str = "g", kind: str = "ed25519", days: int = 3650) -> Pki:
    """A self-signed group CA (opaque subject: members see it in the info dict)."""
    key = _new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    )
    cert = _sign(builder, key)
    return Pki(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), key, cert)


def issue(
    ca: Pki,
    member: str = "m",
    kind: str = "ed25519",
    *,
    dns: str | None = "*",
    not_before: dt.datetime | None = None,
    days: float = 30,
) -> Pki:
    """A member certificate signed by `ca`: CN = opaque member id, SAN DNS `dns`.

    libtorrent accepts a peer whose leaf certificate has a SAN DNS (or, failing
    that, a CN) equal to the torrent's name or `*` (torrent.cpp verify_peer_cert).
    """
    key = _new_key(kind)
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if dns is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    cert = _sign(builder, ca.key)
    return Pki(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), key, cert)


# -- torrents -------------------------------------------------------------------------


@dataclass(frozen=True)
class Torrent:
    """`.torrent` bytes, the v1 info hash (hex) and the data file."""

    data: bytes
    info_hash: str
    path: Path


def build(path: Path, root_cert: bytes | None = None, private: bool = False) -> Torrent:
    """A v1 single-file torrent of `path` from meshmedia's own piece hashes (hash_file),
    with the CA in the info dict when `root_cert` is given, private when asked."""
    hashes_ = hash_file(path)
    ct = lt.create_torrent(
        [lt.create_file_entry(path.name, hashes_.size)],
        hashes_.piece_size,
        lt.create_torrent.v1_only,
    )
    for index, digest in enumerate(hashes_.pieces):
        ct.set_hash(index, digest)
    if root_cert is not None:
        ct.set_root_cert(root_cert.decode())
    if private:
        ct.set_priv(True)
    ct.set_creator("meshmedia")
    data = lt.bencode(ct.generate())
    ti = lt.torrent_info(data)
    return Torrent(data, str(ti.info_hashes().v1), path)


# -- sessions -------------------------------------------------------------------------


@dataclass
class Peer:
    """One libtorrent session on 127.0.0.1 (plain and SSL listen sockets) and its torrents.

    `pump()` pops alerts: on `torrent_need_cert_alert` it sets `cert` (if any) on
    the torrent, and it keeps the alert messages a caller may want to print.
    """

    name: str
    cert: Pki | None = None
    utp: bool = False
    dht: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    session: Any = None
    handles: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    need_cert: int = 0
    dh: str = FFDHE2048

    def __post_init__(self) -> None:
        config = Config(
            listen_host="127.0.0.1",
            listen_port=0,
            dht=self.dht,
            lsd=False,
            upnp=False,
            natpmp=False,
            transport="utp" if self.utp else "tcp",
        )
        settings = build_settings(config)
        settings["listen_interfaces"] = "127.0.0.1:0,127.0.0.1:0s"
        settings["ssl_listen"] = 0  # the `s` interface above is the SSL socket
        settings["alert_mask"] = int(settings["alert_mask"]) | int(
            lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification
        )
        settings.update(self.extra)
        params = lt.session_params()
        params.settings = settings
        params.disk_io_constructor = "pread_disk_io_constructor"
        self.session = lt.session(params)

    @property
    def port(self) -> int:
        """The plain listen port."""
        return int(self.session.listen_port())

    @property
    def ssl_port(self) -> int:
        """The SSL listen port."""
        return int(self.session.ssl_listen_port())

    def add(
        self,
        torrent: Torrent | None,
        save: Path,
        *,
        seed: bool = False,
        magnet_ih: str | None = None,
        root_certificate: bytes | None = None,
        flags: int = 0,
        resume: bytes | None = None,
    ) -> str:
        """Add a torrent (bytes, a bare info hash, or resume data); returns the info hash."""
        if resume is not None:
            atp = lt.read_resume_data(resume)
        elif torrent is not None:
            atp = lt.load_torrent_buffer(torrent.data)
        else:
            atp = lt.parse_magnet_uri(f"magnet:?xt=urn:btih:{magnet_ih}")
        atp.save_path = str(save)
        if seed:
            atp.flags |= lt.torrent_flags.seed_mode
        if root_certificate is not None:
            atp.root_certificate = root_certificate.decode()
        atp.flags |= flags
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        handle = self.session.add_torrent(atp)
        ih = str(handle.info_hashes().v1)
        self.handles[ih] = handle
        return ih

    def connect(self, ih: str, port: int, host: str = "127.0.0.1") -> None:
        """Tell torrent `ih` about a peer."""
        self.handles[ih].connect_peer((host, port), 0, 1)

    def pump(self) -> None:
        """Handle pending alerts (certificates) and keep their messages."""
        for alert in self.session.pop_alerts():
            if isinstance(alert, lt.torrent_need_cert_alert):
                self.need_cert += 1
                if self.cert is not None:
                    alert.handle.set_ssl_certificate_buffer(
                        self.cert.cert_pem.decode(), self.cert.key_pem.decode(), self.dh
                    )
            elif isinstance(alert, lt.dht_put_alert):
                self.log.append(f"dht_put_alert num_success={alert.num_success} seq={alert.seq}")
                continue
            elif isinstance(alert, lt.session_stats_alert):
                self._stats = {k: int(v) for k, v in dict(alert.values).items()}
                continue
            elif isinstance(alert, lt.save_resume_data_alert):
                self.log.append("resume:" + str(alert.handle.info_hashes().v1))
                self._resume = bytes(lt.write_resume_data_buf(alert.params))
                continue
            try:
                self.log.append(f"{type(alert).__name__}: {alert.message()}")
            except UnicodeDecodeError:  # DHT packet logs carry raw bytes
                self.log.append(type(alert).__name__)

    def status(self, ih: str) -> Any:
        """The torrent's status now."""
        return self.handles[ih].status()

    def save_resume(self, ih: str, timeout: float = 10.0) -> bytes:
        """Resume data of `ih` (with the info dict), as written to disk by meshmedia."""
        self._resume = b""
        self.handles[ih].save_resume_data(lt.torrent_handle.save_info_dict)
        wait(lambda: bool(self._resume), [self], timeout, "resume data")
        return self._resume

    def counters(self) -> dict[str, int]:
        """libtorrent's session counters by name."""
        self._stats: dict[str, int] | None = None
        self.session.post_session_stats()
        wait(lambda: self._stats is not None, [self], 10, "session stats")
        assert self._stats is not None
        return self._stats

    def close(self) -> None:
        """Drop the session."""
        self.session.pause()
        self.session = None


def wait(
    condition: Callable[[], bool],
    peers: Iterable[Peer],
    timeout: float,
    what: str = "condition",
    raise_on_timeout: bool = True,
) -> bool:
    """Pump every peer's alerts until `condition()` holds; TimeoutError after `timeout` s."""
    peers = list(peers)
    deadline = time.monotonic() + timeout
    while True:
        for peer in peers:
            if peer.session is not None:
                peer.pump()
        if condition():
            return True
        if time.monotonic() >= deadline:
            if raise_on_timeout:
                raise TimeoutError(f"{what} not reached in {timeout} s")
            return False
        time.sleep(0.02)


def seeding(peer: Peer, ih: str) -> Callable[[], bool]:
    """A condition: the torrent is complete."""
    return lambda: bool(peer.status(ih).is_seeding)


# -- a stranger that speaks raw BitTorrent or raw TLS ---------------------------------


@dataclass
class RawResult:
    """What a raw peer got from one connection."""

    handshake: bool = False  # the remote answered the BitTorrent handshake
    extensions: dict[str, int] = field(default_factory=dict)  # its extension handshake "m"
    metadata_size: int = 0
    metadata_bytes: int = 0
    unchoked: bool = False
    have_pieces: int = 0  # pieces it said it has (bitfield or have-all)
    block_bytes: int = 0  # piece payload bytes it sent us
    received: int = 0  # every byte read from the socket
    server_cert: bytes = b""  # DER of the certificate a TLS server showed us
    tls_version: str = ""
    closed: str = ""  # how the connection ended

    def summary(self) -> str:
        """One line for the tables."""
        return (
            f"handshake={'yes' if self.handshake else 'no'} "
            f"ut_metadata={'yes' if 'ut_metadata' in self.extensions else 'no'} "
            f"metadata={self.metadata_bytes}B pieces_advertised={self.have_pieces} "
            f"unchoked={'yes' if self.unchoked else 'no'} blocks={self.block_bytes}B "
            f"cert={'yes' if self.server_cert else 'no'} {self.tls_version} rx={self.received}B "
            f"({self.closed})"
        )


def raw_peer(
    port: int,
    info_hash: str,
    *,
    tls_sni: str | None = None,
    client_cert: Pki | None = None,
    timeout: float = 5.0,
    host: str = "127.0.0.1",
) -> RawResult:
    """Connect as a stranger: BitTorrent handshake (over TLS with `tls_sni`), extension
    handshake asking for ut_metadata piece 0, `interested`, and a request for the first
    16 KiB block of piece 0 once unchoked. Reports what came back within `timeout`."""
    conn = RawConnection(host, port, info_hash, timeout, tls_sni, client_cert)
    try:
        if conn.open():
            conn.run_until_block()
    finally:
        conn.close()
    return conn.result


@dataclass
class Probe:
    """What a stranger measured through request/reject answers alone."""

    piece_size: int = 0
    pieces: int = 0
    size: int = 0
    requests: int = 0
    block_bytes: int = 0


def raw_probe(port: int, info_hash: str, blocks: int = 64, timeout: float = 30.0) -> Probe:
    """A stranger with only the info hash and an address: with the fast extension a
    seed answers an invalid request with reject_request, so 1-byte requests find the
    piece size, the number of pieces and the last piece's size (so the exact file size)
    by bisection; then it downloads `blocks` 16 KiB blocks."""
    probe = Probe()
    conn = RawConnection("127.0.0.1", port, info_hash, timeout)
    try:
        if not conn.open() or not conn.wait_unchoke():
            return probe

        def valid(piece: int, start: int) -> bool:
            probe.requests += 1
            return conn.ask(piece, start, 1) is not None

        probe.piece_size = _bisect(lambda n: valid(0, n), 1 << 26)
        probe.pieces = _bisect(lambda n: valid(n, 0), 1 << 22)
        last = _bisect(lambda n: valid(probe.pieces - 1, n), probe.piece_size)
        probe.size = (probe.pieces - 1) * probe.piece_size + last
        for index in range(blocks):
            offset = index * 16384
            block = conn.ask(offset // probe.piece_size, offset % probe.piece_size, 16384)
            if block is None:
                break
            probe.block_bytes += len(block)
    finally:
        conn.close()
    return probe


def _bisect(ok: Callable[[int], bool], high: int) -> int:
    """The smallest n in [0, high] for which ok(n) is False (ok holds below it)."""
    low = 0
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            low = mid + 1
        else:
            high = mid
    return low


class RawConnection:
    """One hand-made BitTorrent connection (optionally inside TLS)."""

    def __init__(
        self,
        host: str,
        port: int,
        info_hash: str,
        timeout: float,
        tls_sni: str | None = None,
        client_cert: Pki | None = None,
    ) -> None:
        self.result = RawResult()
        self._addr = (host, port)
        self._ih = bytes.fromhex(info_hash)
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._sni = tls_sni
        self._cert = client_cert
        self._sock: socket.socket | None = None

    def open(self) -> bool:
        """Connect and exchange handshakes; False when the remote did not answer one."""
        try:
            sock = socket.create_connection(self._addr, timeout=self._timeout)
        except OSError as exc:
            self.result.closed = f"connect: {exc}"
            return False
        self._sock = sock
        if self._sni is not None:
            self._sock = _tls_wrap(sock, self._sni, self._cert, self.result)
            if self.result.closed:
                return False
        reserved = bytearray(8)
        reserved[5] |= 0x10  # extension protocol
        reserved[7] |= 0x04  # fast extension
        peer_id = b"-XX0001-" + os.urandom(12)
        try:
            self._sock.sendall(b"\x13BitTorrent protocol" + bytes(reserved) + self._ih + peer_id)
            buf = self._read(68)
            if len(buf) < 68 or buf[28:48] != self._ih:
                self.result.closed = self.result.closed or "no handshake"
                return False
            self.result.handshake = True
            self._send(20, b"\x00" + _bencode({"m": {"ut_metadata": 3}}))
            self._send(2)  # interested
        except (OSError, ssl.SSLError) as exc:
            self.result.closed = self.result.closed or f"{type(exc).__name__}: {exc}"[:120]
            return False
        return True

    def run_until_block(self) -> None:
        """Ask for metadata and, once unchoked, the first block; stop at the block."""
        if self.wait_unchoke():
            block = self.ask(0, 0, 16384)
            if block is not None:
                self.result.block_bytes += len(block)
                self.result.closed = "got a block"

    def wait_unchoke(self) -> bool:
        """Read messages until unchoked (or closed / timed out)."""
        while not self.result.unchoked:
            if self._next() is None:
                return False
        return True

    def ask(self, piece: int, start: int, length: int) -> bytes | None:
        """Request one block; its payload, or None when rejected (or closed)."""
        try:
            self._send(6, struct.pack(">III", piece, start, length))
        except (OSError, ssl.SSLError):
            return None
        while True:
            message = self._next()
            if message is None:
                return None
            kind, payload = message
            if kind == 7 and payload[:8] == struct.pack(">II", piece, start):
                return payload[8:]
            if kind == 16 and payload[:8] == struct.pack(">II", piece, start):
                return None

    def _next(self) -> tuple[int, bytes] | None:
        """The next message (handling extension, bitfield, unchoke on the way)."""
        while True:
            head = self._read(4)
            if len(head) < 4:
                return None
            (length,) = struct.unpack(">I", head)
            if not length:
                continue
            body = self._read(length)
            if len(body) < length:
                return None
            kind, payload = body[0], body[1:]
            if kind == 20:
                self._on_extended(payload)
            elif kind == 5:
                self.result.have_pieces = sum(bin(b).count("1") for b in payload)
            elif kind == 14:
                self.result.have_pieces = -1  # have all
            elif kind == 1:
                self.result.unchoked = True
            return kind, payload

    def _on_extended(self, payload: bytes) -> None:
        ext_id, body = payload[0], payload[1:]
        if ext_id == 0:
            handshake = lt.bdecode(body) or {}
            m = handshake.get(b"m", {})
            self.result.extensions = {k.decode(): int(v) for k, v in m.items()}
            self.result.metadata_size = int(handshake.get(b"metadata_size", 0))
            ours = self.result.extensions.get("ut_metadata", 0)
            if ours:
                self._send(20, bytes([ours]) + _bencode({"msg_type": 0, "piece": 0}))
        elif ext_id == 3:  # our ut_metadata id: a data message is a dict, then the bytes
            header_end = body.find(b"ee") + 2
            self.result.metadata_bytes += max(0, len(body) - header_end)

    def _send(self, kind: int, payload: bytes = b"") -> None:
        assert self._sock is not None
        self._sock.sendall(struct.pack(">IB", len(payload) + 1, kind) + payload)

    def _read(self, n: int) -> bytes:
        assert self._sock is not None
        data = b""
        while len(data) < n:
            left = self._deadline - time.monotonic()
            if left <= 0:
                self.result.closed = self.result.closed or "timeout"
                return data
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(n - len(data))
            except TimeoutError:
                self.result.closed = self.result.closed or "timeout"
                return data
            except (OSError, ssl.SSLError) as exc:
                self.result.closed = self.result.closed or f"{type(exc).__name__}: {exc}"[:120]
                return data
            if not chunk:
                self.result.closed = self.result.closed or "closed by peer"
                return data
            data += chunk
            self.result.received += len(chunk)
        return data

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()


def _bencode(value: Any) -> bytes:
    return bytes(lt.bencode(value))


def _tls_wrap(sock: socket.socket, sni: str, cert: Pki | None, result: RawResult) -> socket.socket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"privacy-lab-{os.getpid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        certfile, keyfile = folder / "c.pem", folder / "k.pem"
        certfile.write_bytes(cert.cert_pem)
        keyfile.write_bytes(cert.key_pem)
        try:
            ctx.load_cert_chain(certfile, keyfile)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        wrapped = ctx.wrap_socket(sock, server_hostname=sni)
    except (OSError, ssl.SSLError) as exc:
        result.closed = f"TLS handshake: {exc}"[:160]
        return sock
    result.server_cert = wrapped.getpeercert(binary_form=True) or b""
    result.tls_version = wrapped.version() or ""
    return wrapped


def cert_subject(der: bytes) -> str:
    """The subject and SANs of a DER certificate, for printing what a stranger saw."""
    if not der:
        return "-"
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = ",".join(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ""
    return (
        f"subject={cert.subject.rfc4514_string()} issuer={cert.issuer.rfc4514_string()} san={names}"
    )


def load_average() -> str:
    """`uptime`'s load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_rows(rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (first row is the header)."""
    print("| " + " | ".join(str(c) for c in rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(str(c) for c in row) + " |")
