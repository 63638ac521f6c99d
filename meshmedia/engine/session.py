"""The BitTorrent engine's facade: one libtorrent session and the components around it.

Callers get frozen snapshots and plain events, never live handles. Torrents are
keyed by their v1 info hash (40 hex chars). The Engine composes: a TorrentTable
(handles, roles, statuses), an AlertLoop with one explicit dispatch table, the
components whose handlers fill it (TorrentEvents, ResumeData, Storage, and the
DHT items, `engine.dht`). Resume data lives in the Store and brings every
torrent back after a restart without re-hashing complete files.
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

from .adding import Additions
from .alerts import AlertLoop, Handler, Tick
from .certificates import Certificates, make_private
from .choking import apply_choking, seed_slots
from .convert import hex_of, status_from_lt
from .dht import DhtItems
from .events import TorrentEvents
from .peers import PeerError, check_peer
from .portmap import PortMapper
from .resume import ResumeData, file_paths, real_names
from .schedule import PAUSED
from .settings import across_homes, is_local_address, peer_class_filter, session_params
from .snapshots import EngineEvent, EngineSnapshot, EngineTally, TorrentState, TorrentStatus
from .sources import load_torrent, params_for
from .storage import Storage
from .table import Role, TorrentTable

log = logging.getLogger(__name__)

UPDATE_INTERVAL = 0.5
"""Seconds between fresh statuses from libtorrent (post_torrent_updates)."""

# connect_peer's pex flags (libtorrent's pex_flags_t: encryption 1, seed 2, utp 4,
# holepunch 8). They only tell libtorrent what the peer supports; they do not choose
# the transport (engine.md, "Transfer speed investigation": pex_utp can set
# supports_utp, never clear it). A peer on a local network is dialled as plainly as
# possible; one elsewhere may be reached over uTP or through a ut_holepunch relay.
PEX_ENCRYPTION, PEX_UTP, PEX_HOLEPUNCH = 1, 4, 8
LOCAL_PEER_FLAGS = PEX_ENCRYPTION
REMOTE_PEER_FLAGS = PEX_ENCRYPTION | PEX_UTP | PEX_HOLEPUNCH


class Engine:
    """One libtorrent session with everything meshmedia seeds and downloads.

    Starts the session and the alert thread and restores the torrents saved in
    the store (`restore=False`: later, with `restore_saved()`). `settings` overrides
    individual libtorrent settings (benchmarks).
    The process itself is left alone (the daemons tune it: process.py). Use as a
    context manager or call close().
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        settings: dict[str, Any] | None = None,
        resume_interval: float = 1.0,
        restore: bool = True,
    ) -> None:
        self._config = config
        self._store = store
        self._session: Any = lt.session(session_params(config, settings))
        self._session.set_peer_class_filter(peer_class_filter())
        self._table = TorrentTable()
        self._events = TorrentEvents(self._session, self._table)
        self._resume = ResumeData(self._table, store)
        self._storage = Storage(self._table)
        self._additions = Additions(self._session, self._table)
        self.dht = DhtItems(self._session, self._events.session_stats)
        self._certificates = Certificates()
        self.portmap = PortMapper(self._session, upnp=config.upnp, natpmp=config.natpmp)
        ticks = [
            Tick(UPDATE_INTERVAL, self._events.tick, first=0.0),
            Tick(resume_interval, self._resume.tick),
            Tick(1.0, self.portmap.tick),
        ]
        self._alerts = AlertLoop(
            self._session,
            self._alert_table(),
            ticks,
            after_batch=[self._resume.store_gathered, self._events.after_alerts],
        )
        if restore:
            self._resume.restore(self._session)
        self._limits: dict[str, Any] = {}
        self._capped: bool | None = None  # upload capped: seeds unchoke few (choking.py)
        self.set_limits(config.upload_limit, config.download_limit)
        self._alerts.start()
        log.info(
            "engine listening on port %d, SSL port %d (%s)",
            self.listen_port,
            self.ssl_listen_port,
            config.transport,
        )
        if config.listen_port and self.listen_port != config.listen_port:
            log.warning(
                "BitTorrent port %d is in use: listening on port %d instead (advertised as "
                "such; a port forwarded by hand to %d will not reach it)",
                config.listen_port,
                self.listen_port,
                config.listen_port,
            )

    def _alert_table(self) -> dict[str, Handler]:
        """The one dispatch table: libtorrent alert type name -> the component's handler."""
        events, resume, storage, dht = self._events, self._resume, self._storage, self.dht
        portmap = self.portmap
        return {
            "add_torrent_alert": self._additions.on_added,
            "state_update_alert": events.on_state_update,
            "state_changed_alert": events.on_state_changed,
            "torrent_checked_alert": events.on_state_changed,
            "session_stats_alert": events.on_session_stats,
            "torrent_finished_alert": events.on_torrent_finished,
            "cache_flushed_alert": events.on_cache_flushed,
            "metadata_received_alert": events.on_metadata_received,
            "torrent_error_alert": events.on_torrent_error,
            "file_error_alert": events.on_file_error,
            "hash_failed_alert": events.on_hash_failed,
            "torrent_removed_alert": events.on_torrent_removed,
            "listen_failed_alert": events.on_listen_failed,
            "save_resume_data_alert": resume.on_saved,
            "save_resume_data_failed_alert": resume.on_save_failed,
            "file_renamed_alert": storage.on_file_renamed,
            "file_rename_failed_alert": storage.on_file_rename_failed,
            "storage_moved_alert": storage.on_storage_moved,
            "storage_moved_failed_alert": storage.on_storage_moved_failed,
            "torrent_deleted_alert": storage.on_torrent_deleted,
            "torrent_delete_failed_alert": storage.on_torrent_delete_failed,
            "dht_put_alert": dht.on_put,
            "dht_mutable_item_alert": dht.on_mutable_item,
            "torrent_need_cert_alert": self._certificates.on_need_cert,
            "portmap_alert": portmap.on_mapped,
            "portmap_error_alert": portmap.on_error,
            "external_ip_alert": portmap.on_external_ip,
        }

    def restore_saved(self) -> None:
        """Add every torrent saved in the store (for an Engine made with `restore=False`)."""
        self._resume.restore(self._session)
        if self._capped:
            apply_choking(self._session, self._table.seed_handles(), *self._choking())

    @property
    def listen_port(self) -> int:
        """The port the session is bound to (the real one when the config said 0)."""
        return int(self._session.listen_port())

    @property
    def ssl_listen_port(self) -> int:
        """The SSL port private groups' torrents are reached at (0 when not listening)."""
        return int(self._session.ssl_listen_port())

    def set_group_certificate(self, ca: bytes, cert: bytes, key: bytes) -> None:
        """The member certificate and key (PEM) for the torrents of the private group whose
        CA is `ca`: set on those held now (a renewal, or torrents restored at start) and on
        every one added later (libtorrent asks again after each add and restart)."""
        count = self._certificates.set(ca, cert, key, self._table.handles())
        log.info("member certificate set for a private group (%d torrents now)", count)

    # -- adding and removing -------------------------------------------------
    def add_seed(
        self,
        torrent: bytes,
        save_path: Path,
        *,
        verified: bool = False,
        private_ca: bytes | None = None,
    ) -> str:
        """Seed a complete file we have (no initial check); returns the info hash.

        By default each piece is hashed on its first request (seed_mode). Pass
        `verified=True` only when the caller has just hashed these very files
        into this torrent: then every piece is served without hashing it again.
        `private_ca`: the torrent is a private group's, with this CA in its info dict
        (EngineError otherwise); it is kept off the DHT and LSD.
        """
        return self._add(self._seed_params(torrent, save_path, verified, private_ca), Role.SEED, ())

    def add_seeds(
        self,
        seeds: Sequence[tuple[bytes, Path, bool, bytes | None]],
        timeout: float = 60.0,
    ) -> dict[str, str | None]:
        """Seed many complete files at once, as add_seed does each (torrent, save path,
        verified, private_ca) but without waiting for libtorrent after each; returns by
        info hash None when seeding, else why not (a torrent it cannot read is left out).
        Torrents already held are left alone."""
        params = []
        answers: dict[str, str | None] = {}
        for torrent, save_path, verified, private_ca in seeds:
            try:
                atp = self._seed_params(torrent, save_path, verified, private_ca)
            except EngineError as exc:
                log.warning("cannot seed a torrent from %s: %s", save_path, exc)
                continue
            atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
            ih = hex_of(atp.ti.info_hashes())
            if not self._table.knows(ih) and ih not in answers:
                params.append((ih, atp, Role.SEED))
            answers[ih] = None
        answers.update(self._additions.add(params, timeout))
        return answers

    def _seed_params(
        self, torrent: bytes, save_path: Path, verified: bool, private_ca: bytes | None
    ) -> Any:
        atp = load_torrent(torrent)
        if private_ca is not None:
            make_private(atp, private_ca)
        atp.save_path = str(save_path)
        if renames := real_names(torrent, atp.ti, save_path):
            atp.renamed_files = renames
        atp.max_uploads = seed_slots(bool(self._capped))
        if verified:
            atp.have_pieces = [True] * atp.ti.num_pieces()
        else:
            atp.flags |= lt.torrent_flags.seed_mode
        return atp

    def add_download(
        self,
        source: str | bytes,
        save_path: Path,
        peers: Sequence[tuple[str, int]] = (),
        *,
        private_ca: bytes | None = None,
    ) -> str:
        """Download from a magnet URI, an http(s) URL of a .torrent, or .torrent bytes.

        The source's trackers and web seeds are used only with `allow_trackers`.
        `private_ca`: an item of a private group, whose torrent must carry this CA (a
        magnet gets it as its root certificate); off the DHT and LSD, and `peers` are
        members' SSL addresses.
        """
        atp = params_for(source, allow_trackers=self._config.allow_trackers)
        if private_ca is not None:
            make_private(atp, private_ca)
            if atp.ti is None:
                self._certificates.expect(hex_of(atp.info_hashes), private_ca)
        atp.save_path = str(save_path)
        magnet_peers = [(str(host), int(port)) for host, port in atp.peers]
        if atp.ti is None and not self._table.knows(hex_of(atp.info_hashes)):
            # A magnet's peers in the params are dialled as the torrent starts; through
            # connect_peer they waited for its next one-second tick (0-1 s, benchmarks.md).
            atp.peers = [p for p in magnet_peers if _valid_peer(p)]
            return self._add(atp, Role.DOWNLOAD, peers)
        atp.peers = []
        return self._add(atp, Role.DOWNLOAD, [*magnet_peers, *peers])

    def _add(self, atp: Any, role: Role, peers: Sequence[tuple[str, int]]) -> str:
        # Added paused and started once tracked: a 30 KB magnet from a local seed could
        # finish (its finished alert handled on the alert thread) before the table knew
        # it, and then waited for ever for a flush nobody asked (1 run in ~15).
        atp.flags &= ~lt.torrent_flags.auto_managed
        atp.flags |= lt.torrent_flags.paused
        ih = hex_of(atp.ti.info_hashes() if atp.ti is not None else atp.info_hashes)
        if not self._table.knows(ih):
            self._table.expect(ih, role)
            try:
                handle = self._session.add_torrent(atp)
            except RuntimeError as exc:
                self._table.unexpect(ih)
                raise EngineError(f"libtorrent refused torrent {ih}: {exc}") from exc
            status = status_from_lt(handle.status(), starting=True)
            self._table.track(ih, handle, role, status, complete=role == Role.SEED)
            handle.resume()
            # A refresh posted while it was still paused may have reported it "paused";
            # an idle seed is asked again only every 5 s (events.IDLE_UPDATE_INTERVAL),
            # so ask now: `meshmedia status` showed a new seed "paused" (CI, 2026-12-02).
            self._events.refresh()
            log.info("added %s %s in %s", role.value, ih, atp.save_path)
        for host, port in peers:
            self.connect_peer(ih, host, port)
        return ih

    def remove(self, info_hash: str, delete_files: bool = False, timeout: float = 30) -> None:
        """Stop seeding or downloading a torrent and forget its resume data; with
        `delete_files`, returns once its files are deleted (at most `timeout` s)."""
        handle = self._table.forget(info_hash)
        self._certificates.forget(info_hash)
        if delete_files:
            self._storage.remove(self._session, handle, info_hash, timeout)
        else:
            self._session.remove_torrent(handle, 0)
        self._store.delete_resume(info_hash)
        log.info("removed %s%s", info_hash, " and its files" if delete_files else "")

    def connect_peer(self, info_hash: str, host: str, port: int) -> None:
        """Tell a torrent about a peer (the transport follows `enable_outgoing_utp`)."""
        try:
            host, port = check_peer(host, port)
            flags = LOCAL_PEER_FLAGS if is_local_address(host) else REMOTE_PEER_FLAGS
            self._table.handle(info_hash).connect_peer((host, port), 0, flags)
        except (PeerError, RuntimeError, TypeError, OverflowError, ValueError) as exc:
            # TypeError: Boost.Python.ArgumentError derives from it (a host name, finding 6)
            log.warning("cannot connect %s to %r:%r: %s", info_hash, host, port, exc)

    def find_peers(self, info_hash: str) -> None:
        """Announce the torrent in the DHT now and dial the peers it returns (no-op
        without the DHT): how a client behind a strict router learns of peers that
        joined after it (the curator's PEX tells it only once a minute)."""
        if not self._config.dht:
            return
        try:
            self._table.handle(info_hash).force_dht_announce()
        except EngineError:
            log.debug("not announcing %s: removed meanwhile", info_hash)

    # -- looking -------------------------------------------------------------
    def status(self, info_hash: str) -> TorrentStatus | None:
        """The latest status of one torrent, None when unknown."""
        return self._table.status(info_hash)

    def snapshot(self) -> EngineSnapshot:
        """Every torrent's latest status (refreshed about twice a second)."""
        torrents = self._table.statuses()
        return EngineSnapshot(
            listen_port=self.listen_port,
            download_rate=sum(t.download_rate for t in torrents),
            upload_rate=sum(t.upload_rate for t in torrents),
            torrents=torrents,
            taken_at=time.time(),
            limits=self._limits,
        )

    def tally(self) -> EngineTally:
        """Torrents by state, peers and rates summed: a snapshot's figures without its list
        (no sort, no session call)."""
        return self._table.tally()

    def set_limits(self, upload: int, download: int, window: str | None = None) -> None:
        """Rate limits in bytes/s for every peer (0 = unlimited; PAUSED = -1 moves nothing
        that way). Both paused pause the session; one direction paused is held at 1 B/s,
        libtorrent's smallest limit (it has no pause per direction). `window`: the
        schedule window that chose them, shown in the snapshot."""
        paused = upload == PAUSED and download == PAUSED
        self._session.apply_settings(
            {
                "upload_rate_limit": 1 if upload == PAUSED else upload,
                "download_rate_limit": 1 if download == PAUSED else download,
            }
        )
        if paused != self._session.is_paused():
            (self._session.pause if paused else self._session.resume)()
        if (upload != 0) != self._capped:
            self._capped = upload != 0
            apply_choking(self._session, self._table.seed_handles(), *self._choking())
        held = self._session.get_settings()  # what libtorrent holds, read back
        self._limits = {
            "window": window,
            "upload": "paused" if upload == PAUSED else upload,
            "download": "paused" if download == PAUSED else download,
            "libtorrent": {
                "upload_rate_limit": int(held["upload_rate_limit"]),
                "download_rate_limit": int(held["download_rate_limit"]),
                "session_paused": bool(self._session.is_paused()),
            },
        }

    def _choking(self) -> tuple[bool, bool]:
        """(upload capped, talks across homes): what apply_choking needs."""
        return bool(self._capped), across_homes(self._config)

    def wait_until(self, info_hash: str, state: TorrentState, timeout: float) -> TorrentStatus:
        """Block until the torrent reaches `state`; TimeoutError after `timeout` seconds.

        Raises EngineError when the torrent is removed or fails while waiting.
        """
        # One fresh status now; later ones come from the alert thread (every
        # UPDATE_INTERVAL and on state changes). Posting on every wake-up fed a
        # loop (post -> state_update -> notify -> post) that kept two Python
        # threads and libtorrent's network thread busy during downloads.
        self._events.refresh()
        return self._table.wait_for(info_hash, state, timeout)

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> None:
        """Call `callback(event)` on the alert thread for every EngineEvent."""
        self._events.subscribe(callback)

    def torrent_bytes(self, info_hash: str) -> bytes | None:
        """The .torrent file (its info dict exactly as hashed); None before metadata."""
        ti = self._table.handle(info_hash).torrent_file()
        if ti is None:
            return None
        return b"d4:info" + bytes(ti.info_section()) + b"e"

    def files(self, info_hash: str) -> list[tuple[str, int]]:
        """(path relative to save_path, size) of each file, renames included."""
        return [(path, size) for _i, path, size in self.indexed_files(info_hash)]

    def indexed_files(self, info_hash: str) -> list[tuple[int, str, int]]:
        """(index, path relative to save_path, size) of each real file, renames included.

        The names are libtorrent's, sanitised when the torrent was loaded (a raw
        `..` becomes `_`, a leading `/` is dropped); pad files are left out.
        """
        handle = self._table.handle(info_hash)
        return file_paths(handle.torrent_file(), self._table.renamed(info_hash))

    def stats(self, timeout: float = 5.0) -> dict[str, int]:
        """libtorrent's session counters by name (e.g. `disk.num_blocks_hashed`)."""
        return self._events.session_stats(timeout)

    # -- moving --------------------------------------------------------------
    def relocate(
        self,
        info_hash: str,
        save_path: Path,
        renames: Mapping[int, str] | None = None,
        timeout: float = 60,
    ) -> None:
        """Rename files (index -> new name) and move the torrent's storage; returns once
        libtorrent confirms.

        Seeding goes on from the new place, and the new place is saved in the
        resume data. Raises EngineError when libtorrent reports a failure.
        """
        self._storage.relocate(info_hash, save_path, renames or {}, timeout)
        handle = self._table.handle(info_hash)
        self._table.update([status_from_lt(handle.status())])
        handle.save_resume_data(lt.torrent_handle.save_info_dict)
        log.info("relocated %s to %s", info_hash, save_path)

    # -- closing ---------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Pause, save every torrent's resume data, wait for it, then drop the session."""
        if self._session is None:
            return
        self._session.pause()
        self._resume.save_all(timeout)
        # libtorrent stops its threads and closes its sockets only when the last
        # reference to the session goes: every component lets go of it here.
        self._alerts.stop()
        self._events.close()
        self._additions.close()
        self.dht.close()
        self.portmap.close()
        self._session = None
        log.info("engine closed")

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _valid_peer(peer: tuple[str, int]) -> bool:
    try:
        check_peer(*peer)
    except PeerError:
        log.warning("ignoring peer %r:%r of a magnet", *peer)
        return False
    return True
