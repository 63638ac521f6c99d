"""`GET /metrics` (Prometheus text format) of a curator or a client, via prometheus_client.

Each daemon has its own `Metrics` with its own CollectorRegistry (never the
library's global one), so several daemons in one process keep their counts
apart. Two kinds of series: those counted as things happen (HTTP requests,
placements, publishes, Jellyfin answers: prometheus_client's Counter and
Histogram), and those read from the daemon at scrape time (torrents, bytes,
peers, items, manifest versions: a collector over callables the daemon gives,
so the engine's and the store's state is never copied into a second place).
Label values are never taken from a request: routes are the route table's
templates, manifest labels the URLs and groups the daemon itself follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

log = logging.getLogger(__name__)

TORRENT_STATES = ("checking", "metadata", "downloading", "seeding", "paused", "error")
# Seconds: a 10 MB file publishes in ~0.03 s and a 1 GiB one hashes in ~3 s here
# (native_notes/client.md, benchmarks.md); placement (SHA-256 + rename) alike.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STATS_TIMEOUT = 2.0  # seconds a scrape waits for libtorrent's session counters

Source = Callable[[], Iterable[Metric]]


class Metrics:
    """One daemon's metrics: counters it updates, sources read at scrape time."""

    def __init__(self, role: str) -> None:
        """`role`: "curator" or "client" (the `meshmedia_info` series says which)."""
        self.role = role
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "meshmedia_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "meshmedia_publish_seconds",
            "Curator: seconds from a publish starting (hashing) to the item in the manifest.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.placement_seconds = Histogram(
            "meshmedia_placement_seconds",
            "Client: seconds from a download's last piece to the file at its path (verified).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.items_placed = Counter(
            "meshmedia_items_placed",
            "Client: items verified and placed, by manifest URL.",
            ["manifest"],
            registry=self.registry,
        )
        self.jellyfin = Counter(
            "meshmedia_jellyfin_notifications",
            "Client: answers to Jellyfin notifications, by outcome (ok, retry, refused).",
            ["outcome"],
            registry=self.registry,
        )
        self._sources: list[Source] = []
        self.registry.register(_Sources(self._sources))

    def add_source(self, source: Source) -> None:
        """Read `source()` at every scrape (its errors are logged, never fail the scrape)."""
        self._sources.append(source)

    def request(self, route: str, code: int) -> None:
        """Count one answered HTTP request."""
        self.http_requests.labels(route, str(code)).inc()

    def jellyfin_outcome(self, outcome: str) -> None:
        """Count one answer from Jellyfin."""
        self.jellyfin.labels(outcome).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type (GET /metrics)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def url_label(url: str) -> str:
    """A manifest URL as a label: no user part, query or fragment (they may hold a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "invalid"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Sources:
    """A prometheus_client collector over the daemon's scrape-time sources."""

    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        """Every source's series; a failing source is left out (and logged)."""
        for source in list(self._sources):
            try:
                yield from list(source())
            except Exception:  # one broken source must not cost the others
                log.exception("a metrics source failed")


BLOCK = 16 * 1024  # libtorrent hashes and counts 16 KiB blocks


def engine_source(
    tally: Callable[[], Any],
    stats: Callable[[float], Mapping[str, int]],
    hashed: Callable[[], int] | None = None,
) -> Source:
    """Torrents by state, peers, rates, payload bytes and bytes hashed of an Engine (its
    tally and libtorrent's session counters, which only grow while the session
    lives); `hashed`: the bytes the publisher read to hash, on a curator."""

    def collect() -> Iterator[Metric]:
        now = tally()
        states = GaugeMetricFamily("meshmedia_torrents", "Torrents by state.", labels=["state"])
        for state, count in {**dict.fromkeys(TORRENT_STATES, 0), **now.states}.items():
            states.add_metric([state], count)
        yield states
        yield GaugeMetricFamily(
            "meshmedia_peers", "Peers connected, over every torrent.", value=now.num_peers
        )
        rate = GaugeMetricFamily(
            "meshmedia_rate_bytes_per_second", "Payload rate.", labels=["direction"]
        )
        rate.add_metric(["down"], now.download_rate)
        rate.add_metric(["up"], now.upload_rate)
        yield rate
        try:
            counters = stats(STATS_TIMEOUT)
        except TimeoutError:
            log.warning("no session counters from libtorrent for /metrics")
            return
        payload = CounterMetricFamily(
            "meshmedia_payload_bytes", "Payload bytes since start.", labels=["direction"]
        )
        payload.add_metric(["down"], counters.get("net.recv_payload_bytes", 0))
        payload.add_metric(["up"], counters.get("net.sent_payload_bytes", 0))
        yield payload
        rehash = CounterMetricFamily(
            "meshmedia_hashed_bytes", "Bytes read to hash since start.", labels=["by"]
        )
        rehash.add_metric(["libtorrent"], counters.get("disk.num_blocks_hashed", 0) * BLOCK)
        if hashed is not None:
            rehash.add_metric(["publisher"], hashed())
        yield rehash

    return collect


def items_source(
    counts: Callable[[], Iterable[tuple[str, str, int]]], states: Iterable[str]
) -> Source:
    """Client: items by state per manifest, from (manifest URL, state, count) rows."""
    names = tuple(states)

    def collect() -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "meshmedia_items", "Client: items by manifest and state.", labels=["manifest", "state"]
        )
        table: dict[str, dict[str, int]] = {}
        for url, state, count in counts():
            by_state = table.setdefault(url_label(url), dict.fromkeys(names, 0))
            by_state[state] = by_state.get(state, 0) + count
        for url, by_state in sorted(table.items()):
            for state, count in by_state.items():
                family.add_metric([url, state], count)
        yield family

    return collect


def gauge_source(
    name: str, doc: str, label: str, values: Callable[[], Mapping[str, int]]
) -> Source:
    """One gauge with one label, e.g. each manifest's version by group or by URL."""

    def collect() -> Iterator[Metric]:
        family = GaugeMetricFamily(name, doc, labels=[label])
        for key, value in sorted(values().items()):
            family.add_metric([key], value)
        yield family

    return collect
