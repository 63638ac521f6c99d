"""How often the engine asks libtorrent for statuses: every tick while a torrent is busy,
every IDLE_UPDATE_INTERVAL when every torrent is an idle seed (a real session and table;
the clock is the test's)."""

from __future__ import annotations

import libtorrent as lt

from meshmedia.engine.events import IDLE_UPDATE_INTERVAL, TorrentEvents
from meshmedia.engine.snapshots import TorrentState, TorrentStatus
from meshmedia.engine.table import Role, TorrentTable


def _status(ih: str, state: TorrentState, rate: int = 0) -> TorrentStatus:
    return TorrentStatus(ih, "clip.mkv", state, 1.0, rate, 0, 0, 0, 10, 10, 10, 0, "/nowhere", None)


def test_idle_seeds_are_asked_for_every_idle_interval_and_busy_torrents_every_tick() -> None:
    off = dict.fromkeys(("enable_dht", "enable_lsd", "enable_upnp", "enable_natpmp"), False)
    session = lt.session({"listen_interfaces": "127.0.0.1:0", **off})
    table = TorrentTable()
    now = [100.0]
    events = TorrentEvents(session, table, clock=lambda: now[0])
    ih = "ab" * 20
    table.track(ih, object(), Role.SEED, _status(ih, TorrentState.SEEDING), complete=True)
    assert not table.busy()

    def ticks(seconds: float) -> int:
        """Tick every 0.5 s for `seconds`; how many refreshes were posted."""
        before = events.posted
        for _ in range(int(seconds / 0.5)):
            now[0] += 0.5
            events.tick()
        return events.posted - before

    events.tick()  # the first tick refreshes
    assert events.posted == 1
    assert ticks(IDLE_UPDATE_INTERVAL * 4) == 4  # idle: one refresh an interval
    table.update([_status(ih, TorrentState.SEEDING, rate=5000)])  # a peer downloads from it
    assert table.busy()
    assert ticks(5.0) == 10  # busy: every tick
    table.update([_status(ih, TorrentState.SEEDING)])
    assert ticks(IDLE_UPDATE_INTERVAL) == 1
    other = "cd" * 20
    table.track(
        other, object(), Role.DOWNLOAD, _status(other, TorrentState.METADATA), complete=False
    )
    assert ticks(5.0) == 10  # a magnet fetching its metadata is busy
    table.forget(other)
    assert not table.busy()


def test_an_unchanged_status_keeps_the_one_held() -> None:
    """Every 5 s libtorrent posts the statuses of idle seeds again, unchanged: the table
    keeps one object per torrent instead of a new one each time (5,000 seeds)."""
    table = TorrentTable()
    ih = "ab" * 20
    table.track(ih, object(), Role.SEED, _status(ih, TorrentState.SEEDING), complete=True)
    held = table.status(ih)
    table.update([_status(ih, TorrentState.SEEDING)])  # equal, another object
    assert table.status(ih) is held
    assert table.take_touched() == {ih: table.handle(ih)}  # still asked about resume data
    table.update([_status(ih, TorrentState.SEEDING, rate=5000)])
    assert table.status(ih) != held
    assert not hasattr(held, "__dict__")  # slots: no dict per status
