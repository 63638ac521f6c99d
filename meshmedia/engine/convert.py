"""libtorrent's objects copied into the frozen values of snapshots.py."""

from __future__ import annotations

import sys
from typing import Any

import libtorrent as lt

from .snapshots import TorrentState, TorrentStatus

_STATES = {
    lt.torrent_status.states.checking_files: TorrentState.CHECKING,
    lt.torrent_status.states.checking_resume_data: TorrentState.CHECKING,
    lt.torrent_status.states.queued_for_checking: TorrentState.CHECKING,
    lt.torrent_status.states.allocating: TorrentState.CHECKING,
    lt.torrent_status.states.downloading_metadata: TorrentState.METADATA,
    lt.torrent_status.states.downloading: TorrentState.DOWNLOADING,
    lt.torrent_status.states.finished: TorrentState.SEEDING,
    lt.torrent_status.states.seeding: TorrentState.SEEDING,
}


def hex_of(hashes: Any) -> str:
    """The v1 info hash (40 hex chars) of an `info_hash_t`."""
    return str(hashes.v1)


def status_from_lt(st: Any, *, starting: bool = False) -> TorrentStatus:
    """Copy a libtorrent `torrent_status` into a frozen TorrentStatus. `starting`: the
    torrent was added paused and is resumed next, so it is not reported paused.

    Its strings are interned: every refresh copies each torrent's info hash, name and
    save path again, and a curator's seeds share one save path per folder."""
    error = st.errc.message() if st.errc.value() != 0 else None
    if error:
        state = TorrentState.ERROR
    elif st.flags & lt.torrent_flags.paused and not starting:
        state = TorrentState.PAUSED
    else:
        state = _STATES.get(st.state, TorrentState.DOWNLOADING)
    return TorrentStatus(
        info_hash=sys.intern(hex_of(st.info_hashes)),
        name=sys.intern(st.name),
        state=state,
        progress=float(st.progress),
        download_rate=int(st.download_payload_rate),
        upload_rate=int(st.upload_payload_rate),
        num_peers=int(st.num_peers),
        num_seeds=int(st.num_seeds),
        total_done=int(st.total_wanted_done),
        total_wanted=int(st.total_wanted),
        total_download=int(st.total_payload_download),
        total_upload=int(st.total_payload_upload),
        save_path=sys.intern(st.save_path),
        error=error,
    )
