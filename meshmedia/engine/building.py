"""Build v1 `.torrent` bytes from our own piece hashes (no second read of the data).

A single file gives a single-file torrent. A folder gives a multi-file torrent
with pad files between the files (libtorrent's `canonical_files_no_tail_padding`),
so every file starts on a piece boundary and its pieces are the ones hashed for
that file alone; only the last piece of a file followed by padding is hashed
again, as its tail plus zeros (less than one piece per file).
"""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import libtorrent as lt

from meshmedia.config import WILDCARDS, Config
from meshmedia.errors import PublishError
from meshmedia.hashing import FileHashes
from meshmedia.torrentinfo import torrent_files

CREATOR = "meshmedia"


@dataclass(frozen=True)
class SourceFile:
    """One file of a torrent: its path inside the torrent, where it is, its hashes."""

    name: str  # "file.mkv" for a single file, "folder/sub/file.mkv" in a folder torrent
    path: Path
    hashes: FileHashes
    fresh: bool = False  # hashed just now from an unchanged file (not from the cache)


@dataclass(frozen=True)
class BuiltTorrent:
    """The `.torrent` bytes and its v1 info hash (40 lowercase hex)."""

    data: bytes
    info_hash: str


def build_torrent(files: Sequence[SourceFile], root_cert: bytes | None = None) -> BuiltTorrent:
    """A v1 torrent of `files` (one file, or the files of one folder, all at one piece size);
    with `root_cert` (a private group's CA, PEM) an SSL torrent: only peers holding a
    certificate that CA signed get its metadata or pieces (privacy.md 3.2)."""
    if not files:
        raise PublishError("nothing to publish: no files")
    piece_size = files[0].hashes.piece_size
    if any(f.hashes.piece_size != piece_size for f in files):
        raise PublishError("the files of one torrent must be hashed at one piece size")
    by_name = {f.name: f for f in files}
    entries = [lt.create_file_entry(f.name, f.hashes.size) for f in files]
    flags = lt.create_torrent.v1_only
    if len(files) > 1:
        flags |= lt.create_torrent.canonical_files_no_tail_padding
    try:
        ct = lt.create_torrent(entries, piece_size, flags)
    except RuntimeError as exc:
        raise PublishError(f"cannot build a torrent: {exc}") from exc
    storage = ct.files()
    total = storage.total_size()
    for index in range(storage.num_files()):
        if storage.file_flags(index) & lt.file_storage.flag_pad_file:
            continue
        source = by_name[storage.file_path(index).replace(os.sep, "/")]
        first = storage.file_offset(index) // piece_size
        pieces = list(source.hashes.pieces)
        end = storage.file_offset(index) + source.hashes.size
        if end < total and source.hashes.size % piece_size:
            pieces[-1] = _padded_last_piece(source, piece_size)
        for number, digest in enumerate(pieces):
            ct.set_hash(first + number, digest)
    if root_cert is not None:
        ct.set_root_cert(root_cert.decode("ascii"))
    ct.set_creator(CREATOR)
    generated = ct.generate()
    data = lt.bencode(generated)
    if len(files) > 1:
        _refuse_changed_names(data)
    # The info hash is the SHA-1 of the bencoded info dict, which bencodes to the same
    # bytes inside `data` (bencoding is canonical): 1 us, where parsing `data` again
    # (read_torrent) took 32 us of a 5,000-file burst's every file.
    info_hash = hashlib.sha1(lt.bencode(generated[b"info"])).hexdigest()  # noqa: S324
    return BuiltTorrent(data=data, info_hash=info_hash)


def _refuse_changed_names(data: bytes) -> None:
    """PublishError naming a file of a folder whose name libtorrent changes on loading
    (over 240 bytes, bidirectional-text controls): a client would place it under
    libtorrent's name, not the one the manifest lists (review12 finding 4). A seed
    finds its files whatever their names (Engine.add_seed renames them back); a
    single file is placed at the item's path, so only a folder's files matter."""
    with warnings.catch_warnings():  # files(): the names as libtorrent stores them
        warnings.simplefilter("ignore", DeprecationWarning)
        stored = lt.torrent_info(data).files()
    for entry in torrent_files(data):
        theirs = stored.file_path(entry.index).replace(os.sep, "/")
        if entry.pad or theirs.partition("/")[2] == entry.path.partition("/")[2]:
            continue
        raise PublishError(
            f"{entry.path!r:.300} cannot be published in a folder: libtorrent "
            f"would store it as {theirs!r:.300} (names over 240 bytes and "
            "bidirectional-text controls such as U+202E are changed); rename the file"
        )


def _padded_last_piece(source: SourceFile, piece_size: int) -> bytes:
    """SHA-1 of the file's last partial piece followed by the zeros of its pad file."""
    tail = source.hashes.size % piece_size
    fd = os.open(source.path, os.O_RDONLY | os.O_NOFOLLOW)  # never through a link
    with os.fdopen(fd, "rb") as handle:
        handle.seek(source.hashes.size - tail)
        data = handle.read(tail)
    if len(data) != tail:
        raise PublishError(f"{source.path} changed while it was published")
    digest = hashlib.sha1(data)  # noqa: S324 - BitTorrent v1 pieces are SHA-1
    digest.update(bytes(piece_size - tail))
    return digest.digest()


def bare_magnet(info_hash: str) -> str:
    """`magnet:?xt=urn:btih:<ih>`: a private item's magnet names no file and no peer."""
    return f"magnet:?xt=urn:btih:{info_hash}"


def magnet_uri(info_hash: str, name: str, host: str | None, port: int) -> str:
    """`magnet:?xt=urn:btih:<ih>&dn=<name>&x.pe=<host>:<port>` (IPv6 hosts in brackets);
    no `x.pe` when host is None (peers are then found by the DHT or LSD)."""
    uri = f"magnet:?xt=urn:btih:{info_hash}&dn={quote(name, safe='')}"
    if host is None:
        return uri
    peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{uri}&x.pe={quote(peer, safe='[]:')}"


def advertise_host(config: Config) -> str | None:
    """The address peers reach this curator at: advertise_host, a specific listen host,
    else the primary local address (the one a default route would use); None when
    advertise_host is "none" (magnets then carry no peer)."""
    if config.advertise_host and config.advertise_host.lower() == "none":
        return None
    if config.advertise_host:
        return config.advertise_host
    if config.listen_host not in WILDCARDS:
        return config.listen_host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect sends nothing
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
