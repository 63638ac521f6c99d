"""The BitTorrent engine: one libtorrent session, its alert thread, snapshots, resume data.

Callers get frozen snapshots and plain events, never live handles. Torrents are
keyed by their v1 info hash (40 hex chars). Resume data lives in the Store and
brings every torrent back after a restart without re-hashing complete files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import libtorrent as lt

from meshmedia.config import Config
from meshmedia.errors import EngineError
from meshmedia.store import Store

from .alerts import AlertLoop
from .convert import hex_of, status_from_lt
from .dht import DhtMixin
from .resume import file_paths, file_stats, is_complete, needs_recheck
from .settings import is_local_address, peer_class_filter, session_params
from .snapshots import EngineEvent, EngineSnapshot, TorrentState, TorrentStatus
from .sources import load_torrent, params_for

log = logging.getLogger(__name__)

_PEX_ENCRYPTION = 1  # no pex_utp; libtorrent dials uTP anyway when outgoing uTP is on
_NO_FLAGS: Mapping[int, str] = {}


class Engine(DhtMixin, AlertLoop):
    """One libtorrent session with everything meshmedia seeds and downloads.

    Starts the session and the alert thread and restores the torrents saved in
    the store. `settings` overrides individual libtorrent settings (benchmarks).
    Use as a context manager or call close().
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        settings: dict[str, Any] | None = None,
        resume_interval: float = 1.0,
    ) -> None:
        self._config = config
        self._session = lt.session(session_params(config, settings))
        self._session.set_peer_class_filter(peer_class_filter())
        super().__init__(self._session, store, resume_interval)
        self._restore()
        self.start()
        log.info("engine listening on port %d (%s)", self.listen_port, config.transport)

    @property
    def listen_port(self) -> int:
        """The port the session is bound to (the real one when the config said 0)."""
        return int(self._session.listen_port())

    # -- adding and removing -------------------------------------------------
    def add_seed(self, torrent: bytes, save_path: Path, *, verified: bool = False) -> str:
        """Seed a complete file we have (no initial check); returns the info hash.

        By default each piece is hashed on its first request (seed_mode). Pass
        `verified=True` only when the caller has just hashed these very files
        into this torrent: then every piece is served without hashing it again.
        """
        atp = load_torrent(torrent)
        atp.save_path = str(save_path)
        if verified:
            atp.have_pieces = [True] * atp.ti.num_pieces()
        else:
            atp.flags |= lt.torrent_flags.seed_mode
        return self._add(atp, "seed", ())

    def add_download(
        self, source: str | bytes, save_path: Path, peers: Sequence[tuple[str, int]] = ()
    ) -> str:
        """Download from a magnet URI, an http(s) URL of a .torrent, or .torrent bytes.

        The source's trackers and web seeds are used only with `allow_trackers`.
        """
        atp = params_for(source, allow_trackers=self._config.allow_trackers)
        atp.save_path = str(save_path)
        magnet_peers = [(str(host), int(port)) for host, port in atp.peers]
        atp.peers = []
        return self._add(atp, "download", [*magnet_peers, *peers])

    def _add(self, atp: Any, role: str, peers: Sequence[tuple[str, int]]) -> str:
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        ih = hex_of(atp.ti.info_hashes() if atp.ti is not None else atp.info_hashes)
        with self._cond:
            known = ih in self._handles
        if not known:
            try:
                handle = self._session.add_torrent(atp)
            except RuntimeError as exc:
                raise EngineError(f"libtorrent refused torrent {ih}: {exc}") from exc
            self._track(ih, handle, role, complete=role == "seed")
            log.info("added %s %s in %s", role, ih, atp.save_path)
        for host, port in peers:
            self.connect_peer(ih, host, port)
        return ih

    def _track(self, ih: str, handle: Any, role: str, *, complete: bool) -> None:
        with self._cond:
            self._handles[ih] = handle
            self._roles[ih] = role
            if not complete:
                self._unflushed.add(ih)
            self._statuses[ih] = self._adjusted(status_from_lt(handle.status()))
            self._cond.notify_all()

    def remove(self, info_hash: str, delete_files: bool = False) -> None:
        """Stop seeding or downloading a torrent and forget its resume data."""
        handle = self._handle(info_hash)
        with self._cond:
            del self._handles[info_hash]
            self._roles.pop(info_hash, None)
            self._statuses.pop(info_hash, None)
            self._unflushed.discard(info_hash)
            self._renamed.pop(info_hash, None)
            self._cond.notify_all()
        self._session.remove_torrent(handle, lt.session.delete_files if delete_files else 0)
        self._store.delete_resume(info_hash)
        log.info("removed %s%s", info_hash, " and its files" if delete_files else "")

    def connect_peer(self, info_hash: str, host: str, port: int) -> None:
        """Tell a torrent about a peer (the transport follows `enable_outgoing_utp`)."""
        flags = _PEX_ENCRYPTION if is_local_address(host) else 13
        try:
            self._handle(info_hash).connect_peer((host, int(port)), 0, flags)
        except RuntimeError as exc:
            log.warning("cannot connect %s to %s:%s: %s", info_hash, host, port, exc)

    # -- looking -------------------------------------------------------------
    def status(self, info_hash: str) -> TorrentStatus | None:
        """The latest status of one torrent, None when unknown."""
        with self._cond:
            return self._statuses.get(info_hash)

    def snapshot(self) -> EngineSnapshot:
        """Every torrent's latest status (refreshed about twice a second)."""
        with self._cond:
            torrents = tuple(sorted(self._statuses.values(), key=lambda t: (t.name, t.info_hash)))
        return EngineSnapshot(
            listen_port=self.listen_port,
            download_rate=sum(t.download_rate for t in torrents),
            upload_rate=sum(t.upload_rate for t in torrents),
            torrents=torrents,
            taken_at=time.time(),
        )

    def wait_until(self, info_hash: str, state: TorrentState, timeout: float) -> TorrentStatus:
        """Block until the torrent reaches `state`; TimeoutError after `timeout` seconds.

        Raises EngineError when the torrent is removed or fails while waiting.
        """
        deadline = time.monotonic() + timeout
        # One fresh status now; later ones come from the alert thread (every
        # UPDATE_INTERVAL and on state changes). Posting on every wake-up fed a
        # loop (post -> state_update -> notify -> post) that kept two Python
        # threads and libtorrent's network thread busy during downloads.
        self._session.post_torrent_updates()
        with self._cond:
            while True:
                current = self._statuses.get(info_hash)
                if current is None:
                    raise EngineError(f"unknown torrent {info_hash}")
                if current.state == state:
                    return current
                if current.state == TorrentState.ERROR:
                    raise EngineError(f"torrent {info_hash} failed: {current.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{info_hash} is {current.state.value} "
                        f"({current.progress:.1%}), not {state.value}, after {timeout}s"
                    )
                self._cond.wait(left)

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> None:
        """Call `callback(event)` on the alert thread for every EngineEvent."""
        with self._cond:
            self._subscribers.append(callback)

    def torrent_bytes(self, info_hash: str) -> bytes | None:
        """The .torrent file (its info dict exactly as hashed); None before metadata."""
        ti = self._handle(info_hash).torrent_file()
        if ti is None:
            return None
        return b"d4:info" + bytes(ti.info_section()) + b"e"

    def files(self, info_hash: str) -> list[tuple[str, int]]:
        """(path relative to save_path, size) of each file, renames included."""
        handle = self._handle(info_hash)
        with self._cond:
            renamed = dict(self._renamed.get(info_hash, {}))
        return [(path, size) for _i, path, size in file_paths(handle.torrent_file(), renamed)]

    def indexed_files(self, info_hash: str) -> list[tuple[int, str, int]]:
        """(index, path relative to save_path, size) of each real file, renames included.

        The names are libtorrent's, sanitised when the torrent was loaded (a raw
        `..` becomes `_`, a leading `/` is dropped); pad files are left out.
        """
        handle = self._handle(info_hash)
        with self._cond:
            renamed = dict(self._renamed.get(info_hash, {}))
        return file_paths(handle.torrent_file(), renamed)

    def stats(self, timeout: float = 5.0) -> dict[str, int]:
        """libtorrent's session counters by name (e.g. `disk.num_blocks_hashed`)."""
        return self._session_stats(timeout)

    # -- moving --------------------------------------------------------------
    def relocate(
        self,
        info_hash: str,
        save_path: Path,
        renames: Mapping[int, str] = _NO_FLAGS,
        timeout: float = 60,
    ) -> None:
        """Rename files and move the torrent's storage; returns once libtorrent confirms.

        Seeding goes on from the new place, and the new place is saved in the
        resume data. Raises EngineError when libtorrent reports a failure.
        """
        handle = self._handle(info_hash)
        deadline = time.monotonic() + timeout
        for index, new_name in renames.items():
            waiter = self._expect(("rename", info_hash, int(index)))
            handle.rename_file(int(index), new_name)
            self._await(waiter, deadline, f"renaming file {index} of {info_hash} to {new_name}")
        waiter = self._expect(("move", info_hash))
        handle.move_storage(str(save_path))
        self._await(waiter, deadline, f"moving {info_hash} to {save_path}")
        with self._cond:
            self._statuses[info_hash] = self._adjusted(status_from_lt(handle.status()))
        handle.save_resume_data(lt.torrent_handle.save_info_dict)
        log.info("relocated %s to %s", info_hash, save_path)

    # -- restoring -----------------------------------------------------------
    def _restore(self) -> None:
        for record in self._store.load_resume():
            try:
                atp = lt.read_resume_data(record.data)
            except RuntimeError as exc:
                log.warning("dropping unreadable resume data of %s: %s", record.info_hash, exc)
                self._store.delete_resume(record.info_hash)
                continue
            renamed = {int(k): str(v) for k, v in dict(atp.renamed_files).items()}
            self._renamed[record.info_hash] = renamed
            paths = file_paths(atp.ti, renamed)
            current = file_stats(atp.save_path, paths)
            recheck = needs_recheck(record.files, current, is_complete(atp))
            if recheck:
                atp.flags &= ~lt.torrent_flags.seed_mode
            atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
            try:
                handle = self._session.add_torrent(atp)
            except RuntimeError as exc:
                log.warning("cannot restore %s: %s", record.info_hash, exc)
                continue
            if recheck:
                log.warning("files of %s changed while stopped: rechecking", record.info_hash)
                handle.force_recheck()
            complete = is_complete(atp) and not recheck
            self._track(record.info_hash, handle, record.role, complete=complete)
        log.info("restored %d torrents", len(self._handles))

    def _handle(self, info_hash: str) -> Any:
        with self._cond:
            handle = self._handles.get(info_hash)
        if handle is None:
            raise EngineError(f"unknown torrent {info_hash}")
        return handle

    # -- closing ---------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Pause, save every torrent's resume data, wait for it, then drop the session."""
        if self._session is None:
            return
        self._session.pause()
        self._save_all_and_wait(timeout)
        self.stop()
        self._session = None
        log.info("engine closed")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
