"""Private groups' SSL torrents: the member certificate each one needs, set again and again.

A private group's torrents carry the group CA in their info dict (libtorrent's SSL
torrents, native_notes/privacy.md 3.2): only peers with a certificate the CA signed
get metadata or pieces. libtorrent keeps a torrent's own certificate in memory only
and asks for it with a `torrent_need_cert_alert` on every add, also from resume
data after a restart; the answer is `set_ssl_certificate_buffer` with the member
certificate of that torrent's group, found here by the CA. Such a torrent never
uses the DHT or LSD (its info hash would be announced to anyone) and never the
BEP 27 private flag (it would turn PEX off, and with it BEP 55 hole punching).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import libtorrent as lt

from meshmedia.errors import EngineError

from .convert import hex_of

log = logging.getLogger(__name__)

PRIVATE_FLAGS = lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd

# RFC 7919 ffdhe2048 in PKCS#3 PEM (a published constant). set_ssl_certificate_buffer
# wants DH parameters; an empty string posts a "[dh params]" torrent error (TLS 1.3
# uses ECDHE and does not need them; privacy.md 2.9).
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


def ca_key(pem: bytes | str) -> str:
    """A CA certificate's PEM as the one text compared here (line ends and outer
    whitespace do not count)."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    return "\n".join(line.strip() for line in text.strip().splitlines())


def torrent_ca(ti: Any) -> str:
    """The CA inside a torrent's info dict ("" for a plain torrent)."""
    return ca_key(ti.ssl_cert()) if ti is not None else ""


def torrent_ca_of(data: bytes) -> str:
    """The CA inside the info dict of `.torrent` bytes ("" for a plain torrent or bytes
    that are not a torrent)."""
    try:
        return torrent_ca(lt.torrent_info(data))
    except RuntimeError:
        return ""


def make_private(atp: Any, ca: bytes) -> Any:
    """add_torrent_params for a private group's torrent: DHT and LSD off, and either the
    info dict's CA checked to be `ca` (EngineError otherwise: a plain torrent there would
    be served to anyone) or, for a magnet, `ca` as its root certificate."""
    if atp.ti is not None:
        found = torrent_ca(atp.ti)
        if found != ca_key(ca):
            what = "no CA (a plain torrent)" if not found else "another group's CA"
            raise EngineError(f"refused: the torrent of a private item has {what}")
    else:
        # Only for the first add of a magnet: root_certificate is not written into resume
        # data (privacy.md 2.4); once the metadata is in, the CA is in the saved info dict.
        atp.root_certificate = ca.decode("ascii")
    atp.flags |= PRIVATE_FLAGS
    atp.flags &= ~lt.torrent_flags.disable_pex
    return atp


class Certificates:
    """The member certificate of each private group by its CA, and the CA of each
    torrent still without metadata (a magnet); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_ca: dict[str, tuple[str, str]] = {}
        self._magnets: dict[str, str] = {}  # info hash -> CA, until the metadata is in

    def set(self, ca: bytes, cert: bytes, key: bytes, handles: dict[str, Any]) -> int:
        """Use `cert`/`key` (PEM) for the torrents of the group of `ca` from now on, and
        on those of `handles` already there (a renewal); returns how many were set."""
        with self._lock:
            self._by_ca[ca_key(ca)] = (cert.decode("ascii"), key.decode("ascii"))
        count = 0
        for ih, handle in handles.items():
            if self._ca_of(ih, handle) == ca_key(ca):
                count += self._apply(ih, handle)
        return count

    def expect(self, info_hash: str, ca: bytes) -> None:
        """A magnet of the group of `ca` is being added (its CA is not in a torrent yet)."""
        with self._lock:
            self._magnets[info_hash] = ca_key(ca)

    def forget(self, info_hash: str) -> None:
        """The torrent is gone."""
        with self._lock:
            self._magnets.pop(info_hash, None)

    def on_need_cert(self, alert: Any) -> None:
        """torrent_need_cert_alert: set the member certificate of the torrent's group."""
        handle = alert.handle
        ih = hex_of(handle.info_hashes())
        if not self._apply(ih, handle):  # a restore comes before the daemon sets them
            log.info("private torrent %s trades with nobody until its group's certificate", ih)

    def _ca_of(self, ih: str, handle: Any) -> str:
        ti = handle.torrent_file()
        if ti is not None and (found := torrent_ca(ti)):
            return found
        with self._lock:
            return self._magnets.get(ih, "")

    def _apply(self, ih: str, handle: Any) -> bool:
        ca = self._ca_of(ih, handle)
        with self._lock:
            pair = self._by_ca.get(ca) if ca else None
        if pair is None:
            return False
        handle.set_ssl_certificate_buffer(pair[0], pair[1], FFDHE2048)
        log.debug("member certificate set on %s", ih)
        return True
