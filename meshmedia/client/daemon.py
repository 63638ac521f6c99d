"""The client daemon (`meshmedia sync`): composes store, engine, SyncClient, fetchers, status.

Forever: the last good manifests from the store are planned at once (so a
restart works with the curator down), one fetcher thread per manifest URL
long-polls or polls, and the main loop places finished downloads. `--once`:
one fetch per URL, then wait until every item is placed, failed or paused.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TextIO

from meshmedia.bounded import bounded_session
from meshmedia.config import Config
from meshmedia.engine import Engine, TorrentState
from meshmedia.engine.schedule import start_schedule
from meshmedia.groups.joined import Joined, with_memberships
from meshmedia.http import StatusServer
from meshmedia.jellyfin import JellyfinNotifier
from meshmedia.manifest import TrustPolicy, printable
from meshmedia.process import prepare_daemon, stop_on_signals, trimming_when_idle
from meshmedia.store import ItemState, Store

from .fetcher import FetchError, ManifestFetcher
from .follow import Following, follow_once, start_following
from .observers import add_hooks, client_metrics
from .progress import ProgressView, Row
from .reasons import why_not_finished
from .reports import Reporter
from .sync import SyncClient

log = logging.getLogger(__name__)

SELECTION_POLL = 1.0  # seconds between looks at selection.json (`meshmedia select`)


@dataclass
class SyncSummary:
    """What a `--once` run achieved."""

    placed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failed/paused items, unusable manifests
    rejected: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run ended early (a signal, --timeout)
    skipped: list[str] = field(default_factory=list)  # not selected (selection.py)

    @property
    def ok(self) -> bool:
        """True when every valid item is in place."""
        return not self.problems and self.stopped is None

    def lines(self) -> list[str]:
        """A human summary, one line each."""
        head = f"{len(self.placed)} in place, {len(self.problems)} not"
        head += f", {len(self.rejected)} refused" if self.rejected else ""
        head += f", {len(self.skipped)} skipped by selection" if self.skipped else ""
        early = [self.stopped] if self.stopped else []
        lines = [*self.problems, *(f"refused {r}" for r in self.rejected)]
        return [head, *early, *(printable(line) for line in lines)]  # they quote the manifest


def progress_rows(engine: Engine, client: SyncClient) -> list[Row]:
    """One progress row per item that is downloading."""
    rows = []
    for ci in client.downloading():
        status = engine.status(ci.info_hash) if ci.info_hash else None
        if status is not None and status.state != TorrentState.SEEDING:
            title = str(ci.item.get("title") or ci.path)
            rows.append(Row(title, status.total_done, status.total_wanted, status.download_rate))
    return rows


@dataclass(frozen=True)
class _Parts:
    """What a running client daemon is made of."""

    engine: Engine
    client: SyncClient
    following: Following


def _start_parts(
    config: Config, stack: ExitStack, stop: threading.Event, joined: Joined | None = None
) -> _Parts:
    prepare_daemon()
    stack.enter_context(trimming_when_idle())
    store = stack.enter_context(Store.in_state_dir(config.state_dir))
    # The torrents come back after the status port is up: 5,000 took 2-4 s before
    # the first answer (benchmarks.md, "A library at scale").
    engine = Engine(config, store, restore=False)
    stack.callback(engine.close)
    schedule = start_schedule(
        engine, config.limit_schedule, config.upload_limit, config.download_limit
    )
    if schedule is not None:
        stack.callback(schedule.close)
    notifier = None
    if config.jellyfin_url:
        notifier = JellyfinNotifier(
            config.jellyfin_url, config.jellyfin_api_key, config.jellyfin_path_map
        )
        stack.callback(notifier.close)
    client = SyncClient(config, store, engine, notifier, stop=stop)
    stack.callback(client.close)  # placements under way end before the engine closes
    if joined is not None and joined.memberships:
        _wire_memberships(client, joined, stop)
    metrics = client_metrics(client, notifier)
    add_hooks(config, client, stack, stop)
    try:
        status = StatusServer(config.status_port, client.status_json, metrics=metrics)
        stack.callback(status.close)
        log.info("status at http://127.0.0.1:%d/status", status.port)
    except OSError as exc:
        log.warning("no status server on 127.0.0.1:%d: %s", config.status_port, exc)
    engine.restore_saved()
    return _Parts(engine, client, Following(engine, store, client.apply))


def _wire_memberships(client: SyncClient, joined: Joined, stop: threading.Event) -> None:
    """Joined groups: their curator's key is the only one trusted for their manifests,
    requests to that curator carry the credential, and reports go to it."""
    for url, key in joined.trusted_keys().items():
        client.trusts[url] = TrustPolicy(client.store, key)
    client.torrents.headers_for = joined.headers_for
    client.torrents.pins = client.pins = joined.pins()
    client.headers_for = joined.headers_for
    Reporter(client, joined, stop).start()
    for m in joined.memberships:
        log.info("member %s of private group %s at %s", m.member_id, m.group, m.manifest_url)


def _fetcher(client: SyncClient, url: str, timeout: float = 30.0) -> ManifestFetcher:
    saved = client.saved_manifest(url)
    body, etag = saved if saved else (None, None)
    headers = client.headers_for(url)
    session = bounded_session(client.pins)
    return ManifestFetcher(
        url, etag=etag, body=body, timeout=timeout, headers=headers, session=session
    )


class Deadline:
    """`--once --timeout`: seconds left of the run (0 = no deadline: never expires)."""

    def __init__(self, seconds: float) -> None:
        """Start counting `seconds` now."""
        self.seconds = seconds
        self._end = time.monotonic() + seconds if seconds > 0 else None

    def left(self, cap: float) -> float:
        """Seconds left, at most `cap` (at least a small slice, so a request can be made)."""
        if self._end is None:
            return cap
        return max(0.5, min(cap, self._end - time.monotonic()))

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end


def sync_forever(config: Config, stop: threading.Event | None = None) -> None:
    """Follow every manifest URL until SIGTERM/SIGINT (or `stop`); never gives up."""
    stop = stop or threading.Event()
    config, joined = with_memberships(config)
    with stop_on_signals(stop), ExitStack() as stack:
        parts = _start_parts(config, stack, stop, joined)
        client = parts.client
        for url in config.manifest_urls:
            saved = client.saved_manifest(url)
            if saved:
                log.info("using the last good manifest of %s until it answers", url)
                client.apply(url, *saved)
            fetcher = _fetcher(client, url)
            thread = threading.Thread(
                target=fetcher.follow,
                args=(stop, lambda body, etag, u=url: client.apply(u, body, etag), config.interval),
                name=f"fetch {url}",
                daemon=True,
            )
            thread.start()
        start_following(config, parts.following, stop, stack)
        _watch_selection(client, stop)
        while not stop.is_set():
            client.wait(1.0)
            client.step()
        log.info("sync stopping")


def _watch_selection(client: SyncClient, stop: threading.Event) -> None:
    """Look at selection.json every second (a stat); a change plans the manifests again."""

    def watch() -> None:
        while not stop.wait(SELECTION_POLL):
            try:
                client.reselect()
            except Exception:  # a bad edit must not stop the watcher
                log.exception("applying the changed selection failed")

    threading.Thread(target=watch, name="selection", daemon=True).start()


def sync_once(config: Config, stream: TextIO | None = None, tty: bool = False) -> SyncSummary:
    """One cycle: fetch each manifest once, download, place, and wait for every item."""
    summary = SyncSummary()
    stop = threading.Event()
    deadline = Deadline(config.once_timeout)
    config, joined = with_memberships(config)
    with stop_on_signals(stop), ExitStack() as stack:
        parts = _start_parts(config, stack, stop, joined)
        client = parts.client
        client.retries = False
        for url in config.manifest_urls:
            _fetch_once(client, url, summary, deadline.left(30.0))
        follow_once(config, parts.following, stop, summary.problems, deadline.left(60.0))
        view = ProgressView(stream, tty) if stream is not None else None
        while not client.settled() and not stop.is_set() and not deadline.expired:
            client.step()
            if view:
                view.update(progress_rows(parts.engine, client))
            client.wait(0.25)
        client.step()
        if view:
            view.clear()
        summary.stopped = _stopped_early(client, stop, deadline)
        if client.notifier is not None and not client.notifier.flush():
            log.warning("Jellyfin did not take every path")
        _summarize(client, summary)
    return summary


def _stopped_early(client: SyncClient, stop: threading.Event, deadline: Deadline) -> str | None:
    if stop.is_set():
        return "interrupted before every item was in place"
    if not client.settled():
        return (
            f"timed out after {deadline.seconds:.0f} s (--timeout) before every item was in place"
        )
    return None


def _fetch_once(client: SyncClient, url: str, summary: SyncSummary, timeout: float) -> None:
    try:
        result = _fetcher(client, url, timeout).fetch()
        body, etag = result.body, result.etag
    except FetchError as exc:
        saved = client.saved_manifest(url)
        if saved is None:
            summary.problems.append(f"cannot fetch {url} and no earlier copy: {exc}")
            return
        log.warning("%s; using the last good manifest", exc)
        body, etag = saved
    if body is None:  # unchanged since the saved copy
        saved = client.saved_manifest(url)
        body, etag = saved if saved else (b"", None)
    if not client.apply(url, body, etag):
        summary.problems.append(f"the manifest {url} is unusable (see the log)")


def _summarize(client: SyncClient, summary: SyncSummary) -> None:
    for ci in client.items():
        if ci.state == ItemState.PLACED:
            summary.placed.append(ci.path)
        elif ci.state == ItemState.SKIPPED:
            summary.skipped.append(ci.path)
        else:
            summary.problems.append(why_not_finished(ci, client.engine))
    for rejected in client.rejected.values():
        summary.rejected.extend(rejected)
