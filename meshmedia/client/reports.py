"""Reports to the curators of joined groups (native_notes/privacy.md 3.5): what this home has.

One thread looks at the client's items every REPORT_POLL seconds and posts
`POST /members/report` (with the member's credential) to each joined group's
curator when its report changed, at start, and at least every REPORT_EVERY
seconds. A look is a read of the client's table under its lock, a few hundred
items: cheap against the 1 s a change may take to reach the curator.
Info hashes only; the curator maps them to its own titles.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import Any

import requests

from meshmedia import __version__
from meshmedia.bounded import bounded_session
from meshmedia.engine import TorrentState
from meshmedia.groups.joined import Joined
from meshmedia.groups.membership import Membership
from meshmedia.store import ItemState

from .sync import SyncClient

log = logging.getLogger(__name__)
REPORT_POLL = 0.5
REPORT_EVERY = 60.0


def report_of(client: SyncClient, membership: Membership) -> dict[str, Any]:
    """This home's report for one joined group: its items by state, disk and version."""
    placed, downloading, failed = [], {}, {}
    for ci in client.items():
        if ci.url != membership.manifest_url or not ci.info_hash:
            continue
        if ci.state == ItemState.PLACED:
            placed.append(ci.info_hash)
        elif ci.state in (ItemState.FAILED, ItemState.REFUSED, ItemState.PAUSED):
            failed[ci.info_hash] = ci.error or ci.state.value
        elif ci.state in (ItemState.DOWNLOADING, ItemState.QUEUED):
            downloading[ci.info_hash] = _progress(client, ci.info_hash)
    try:
        free = shutil.disk_usage(client.download_dir).free
    except OSError:
        free = None
    return {
        "version": __version__,
        "free_disk": free,
        "placed": sorted(placed),
        "downloading": downloading,
        "failed": failed,
    }


def _progress(client: SyncClient, info_hash: str) -> float:
    status = client.engine.status(info_hash)
    if status is None or not status.total_wanted:
        return 0.0
    if status.state == TorrentState.SEEDING:
        return 1.0
    return round(status.total_done / status.total_wanted, 2)


class Reporter:
    """Posts each joined group's report on change and every REPORT_EVERY seconds."""

    def __init__(self, client: SyncClient, joined: Joined, stop: threading.Event) -> None:
        """Report for every membership of `joined` until `stop` is set."""
        self.client = client
        self.joined = joined
        self.stop = stop
        self.sent = 0  # reports the curators took (for tests and logs)
        self._last: dict[str, tuple[dict[str, Any], float]] = {}
        self._http = bounded_session(joined.pins())

    def start(self) -> threading.Thread:
        """Run on a daemon thread."""
        thread = threading.Thread(target=self.run, name="member reports", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        """Until stop: look, and post what changed (no failure ends the thread)."""
        while not self.stop.is_set():
            for membership in self.joined.memberships:
                try:
                    self.maybe_send(membership)
                except Exception:  # a report must never end the thread
                    log.exception("the report to the curator of %s failed", membership.group)
            self.stop.wait(REPORT_POLL)

    def maybe_send(self, membership: Membership) -> None:
        """Post the report when it changed or REPORT_EVERY seconds passed."""
        report = report_of(self.client, membership)
        last = self._last.get(membership.manifest_url)
        now = time.monotonic()
        if last is not None and last[0] == report and now - last[1] < REPORT_EVERY:
            return
        url = membership.manifest_url.split("/manifest/", 1)[0] + "/members/report"
        headers = self.joined.headers_for(membership.manifest_url)
        try:
            answer = self._http.post(url, json=report, headers=headers, timeout=10)
        except requests.RequestException as exc:
            log.info("cannot report to %s: %s", url, exc.__class__.__name__)
            self._last[membership.manifest_url] = (report, now - REPORT_EVERY + 5)  # retry in 5 s
            return
        if answer.status_code != 200:
            log.warning("the curator of %s refused the report: HTTP %d", membership.group,
                        answer.status_code)  # fmt: skip
        else:
            self.sent += 1
        self._last[membership.manifest_url] = (report, now)
