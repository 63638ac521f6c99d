"""Fetching the `.torrent` of an item whose torrent is an http(s) URL (on a worker thread).

A hostile server may trickle the answer until torrentinfo.fetch_torrent's overall
deadline cuts it off, so the client runs this as a job (work.py), never on its
main loop or under its lock; the item stays queued until the answer is in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests

from meshmedia.bounded import bounded_session
from meshmedia.errors import EngineError
from meshmedia.torrentinfo import fetch_torrent


class TorrentFetch:
    """Fetches one `.torrent` URL on the calling thread (one bounded session per thread)."""

    def __init__(self, http: requests.Session | None = None, deadline: float | None = None):
        """Use `http` for every fetch (tests), else a bounded session per thread;
        `deadline` None: torrentinfo.TORRENT_DEADLINE."""
        self._http = http
        self.deadline = deadline
        self.headers_for: Callable[[str], dict[str, str]] | None = None  # joined groups
        self.pins: dict[str, str] = {}  # their curators' certificates (bounded_session)
        self._local = threading.local()

    def __call__(self, url: str) -> bytes | str:
        """The `.torrent` at `url`, or why it could not be fetched."""
        try:
            headers = self.headers_for(url) if self.headers_for else None
            return fetch_torrent(self._session(), url, self.deadline, headers=headers)
        except EngineError as exc:
            return str(exc)

    def _session(self) -> requests.Session:
        if self._http is not None:
            return self._http
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = bounded_session(self.pins)
        return session
