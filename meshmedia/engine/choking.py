"""How a seed shares a capped uplink: few unchoke slots, so clients serve each other.

Reasons and measurements: native_notes/engine.md ("N clients for about one upload").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import libtorrent as lt

SEED_UPLOAD_SLOTS = 2
"""Peers a seed sends to at once while the upload is capped."""

CAPPED_SESSION_SLOTS = 16
"""Peers the whole session sends to at once while the upload is capped (a Raspberry Pi)."""

UNCAPPED_SESSION_SLOTS = 200
"""Uncapped, every connection may be served (connections_limit): libtorrent's -1 here
chokes everyone in the choker's round, it does not mean unlimited (measured)."""

CAPPED_REQUEST_QUEUE = 32
"""Requests (16 KiB blocks) a peer may have waiting at us while the upload is capped, or
while we talk across homes (our uplink is the cap then, set or not)."""

UNLIMITED = -1
DEFAULT_REQUEST_QUEUE = 2000  # libtorrent's max_allowed_in_request_queue


def seed_slots(capped: bool) -> int:
    """The per-torrent unchoke slots (`max_uploads`) of a seed under this upload cap."""
    return SEED_UPLOAD_SLOTS if capped else UNLIMITED


def request_queue(capped: bool, across_homes: bool) -> int:
    """`max_allowed_in_request_queue`: short while capped or across homes.

    Across homes (the curator's uplink 2 MiB/s, 50 ms per link, three clients) a client
    kept up to 2000 requests (~3 s of its rate) waiting at the seed and fetched pieces
    another client was fetching too: 1.23-1.24 copies; 32 requests: 1.13-1.18
    (engine.md "Copies across homes"). 512 KiB in flight still allows ~5 MB/s per peer
    at 100 ms RTT.
    """
    return CAPPED_REQUEST_QUEUE if capped or across_homes else DEFAULT_REQUEST_QUEUE


def apply_choking(
    session: Any, seeds: Iterable[Any], capped: bool, across_homes: bool = False
) -> None:
    """Set the unchoke policy for a capped (or uncapped) upload on the session and seeds.

    libtorrent's local peer class skips unchoke slots, and a peer it skips is never
    looked at by the choker again: a capped seed sent to every LAN client at once (the
    same pieces left the capped uplink several times), and a peer choked under a cap
    stayed choked after it was lifted. So no class skips slots; uncapped, there are as
    many slots as connections instead (every interested peer served, as the local class
    did).
    """
    local = session.get_peer_class(lt.session.local_peer_class_id)
    if local["ignore_unchoke_slots"]:
        local["ignore_unchoke_slots"] = False
        session.set_peer_class(lt.session.local_peer_class_id, local)
    session.apply_settings(
        {
            "unchoke_slots_limit": CAPPED_SESSION_SLOTS if capped else UNCAPPED_SESSION_SLOTS,
            # a short queue at a capped seed: a client commits to fewer of its pieces
            # ahead, so two clients rarely fetch the same piece from it
            "max_allowed_in_request_queue": request_queue(capped, across_homes),
        }
    )
    slots = seed_slots(capped)
    for handle in seeds:
        handle.set_max_uploads(slots)
