"""Experimental changes to the daemons, applied in the benchmark's processes only (issue 15).

`benchmarks/e2e_breakdown.py --patch NAME,...` starts `meshmedia serve` and
`meshmedia sync` through `run()` below, with MM_PATCHES naming the changes, so
that the saving of each proposed change is measured end to end before anyone
writes it into the package. Nothing here is imported by meshmedia itself.

  nodelay     curator: TCP_NODELAY on HTTP connections (its answer is written as two
              sends, headers then body; with Nagle the body waits for the client's
              delayed ACK)
  sha1only    curator: a file that arrived complete is hashed for SHA-1 pieces only, on
              two threads; the item then has no sha256/xxh3 (optional in the contract),
              so the client verifies by libtorrent's piece hashes alone
  xxh3verify  client: verify the placed file's XXH3-128 instead of its SHA-256
  noverify    client: no whole-file hash after the download (size check only)
  atppeers    client: a magnet's x.pe peers stay in add_torrent_params.peers (libtorrent
              dials them as the torrent starts) instead of connect_peer() after the add
              (dialled at the torrent's next one-second tick: 0 to 1 s later)
  nodigest    curator: no background SHA-256 pass after a first-pass publish (what the
              pass costs the download that runs beside it)
  torrentfile client: fetch `/torrents/<ih>.torrent` from the curator instead of adding
              the magnet (no metadata exchange); MM_TORRENT_BASE is the curator's URL
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

CHUNK = 8 << 20


def _nodelay() -> None:
    from meshmedia import server  # noqa: PLC0415

    server.RequestHandler.disable_nagle_algorithm = True


def _sha1_pieces(path: Path, size: int, piece: int) -> tuple[bytes, ...]:
    span = max(piece, CHUNK // piece * piece)

    def run(start: int) -> list[bytes]:
        out, view = [], memoryview(bytearray(piece))
        for offset in range(start, min(size, start + span), piece):
            got = os.preadv(fd, [view[: min(piece, size - offset)]], offset)
            out.append(hashlib.sha1(view[:got]).digest())
        return out

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with ThreadPoolExecutor(2) as pool:
            return tuple(h for part in pool.map(run, range(0, size, span)) for h in part)
    finally:
        os.close(fd)


def _sha1only() -> None:
    from meshmedia import hashing, sources, store  # noqa: PLC0415

    class PiecesFirst(hashing.IncrementalHasher):
        def finish(self) -> hashing.FileHashes:
            if self.bytes_read:  # followed while it was written: keep the normal path
                return super().finish()
            self.final_stat = os.stat(self.path)
            size = self.final_stat.st_size
            piece = self._fixed or hashing.piece_size_for(size)
            pieces = _sha1_pieces(self.path, size, piece)
            self.bytes_read = size
            return hashing.FileHashes(size, piece, pieces, None, None)  # type: ignore[arg-type]

    sources.IncrementalHasher = PiecesFirst  # type: ignore[misc]
    store.Store.save_hashes = lambda self, record: None  # type: ignore[method-assign]


def _verify_with(kind: str) -> None:
    from meshmedia import client_place, hashing  # noqa: PLC0415

    original = client_place.Placer._verify

    def verify(self: Any, item: Any, ih: str, staging: Path, files: list) -> str | None:
        if kind == "xxh3" and item.xxh3 and len(files) == 1:
            if hashing.xxh3_of(staging / files[0][0]) != item.xxh3:
                return "XXH3 mismatch"
            item = replace(item, sha256=None)
        elif kind == "none":
            item = replace(item, sha256=None)
        return original(self, item, ih, staging, files)

    client_place.Placer._verify = verify  # type: ignore[method-assign]


def _torrentfile() -> None:
    from urllib.parse import parse_qsl  # noqa: PLC0415

    from meshmedia import client, engine  # noqa: PLC0415

    base = os.environ["MM_TORRENT_BASE"]
    original_source, original_add = client.SyncClient._source, engine.Engine.add_download
    peers: dict[str, list[tuple[str, int]]] = {}

    def source(self: Any, item: Any) -> tuple[Any, str, str | None]:
        data, ih, name = original_source(self, item)
        if isinstance(data, str) and data.startswith("magnet:"):
            query = parse_qsl(data[len("magnet:?") :])
            found = [v.rpartition(":") for k, v in query if k == "x.pe"]
            peers[ih] = [(host.strip("[]"), int(port)) for host, _, port in found]
            data = client.fetch_torrent(self._http, f"{base}/torrents/{ih}.torrent")
        return data, ih, name

    def add_download(self: Any, source: Any, save_path: Path, extra: Any = ()) -> str:
        if isinstance(source, bytes):  # the magnet's x.pe peers, which the .torrent lacks
            import libtorrent as lt  # noqa: PLC0415

            ih = str(lt.load_torrent_buffer(source).ti.info_hashes().v1)
            extra = [*extra, *peers.pop(ih, [])]
        return original_add(self, source, save_path, extra)

    client.SyncClient._source = source  # type: ignore[method-assign]
    engine.Engine.add_download = add_download  # type: ignore[method-assign]


def _atppeers() -> None:
    from meshmedia import engine, engine_sources  # noqa: PLC0415

    def add_download(self: Any, source: Any, save_path: Path, peers: Any = ()) -> str:
        atp = engine_sources.params_for(source)
        atp.save_path = str(save_path)
        atp.peers = [*atp.peers, *peers]  # dialled at once; connect_peer waits for a tick
        return self._add(atp, "download", ())

    engine.Engine.add_download = add_download  # type: ignore[method-assign]


PATCHES = {
    "nodelay": _nodelay,
    "sha1only": _sha1only,
    "xxh3verify": lambda: _verify_with("xxh3"),
    "noverify": lambda: _verify_with("none"),
    "torrentfile": _torrentfile,
    "atppeers": _atppeers,
}


def _nodigest() -> None:
    from meshmedia.curator import digests  # noqa: PLC0415

    digests.Digests.add = lambda self, pending: None  # type: ignore[method-assign]


PATCHES["nodigest"] = _nodigest


def apply(names: str) -> None:
    """Apply the comma-separated patches (unknown names are an error)."""
    for name in filter(None, names.split(",")):
        PATCHES[name]()


BOOT = (
    "import os, sys; sys.path.insert(0, os.environ['MM_REPO']); "
    "import benchmarks.e2e_patches as p; p.apply(os.environ.get('MM_PATCHES', '')); "
    "sys.argv[0] = 'meshmedia'; from meshmedia.cli import main; main()"
)
