"""GET /metrics on a real curator and a real client during a sync, read with
prometheus_client's own parser: the counts are what happened (issue 16)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from meshmedia.http.metrics import Metrics, url_label
from tests.daemons import MIB, Client, Curator, Daemon
from tests.helpers import random_file, wait_for
from tests.jellyfin_standin import JellyfinStandIn

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Samples:
    """Every sample of GET /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_of_both_daemons_during_a_sync(tmp_path: Path, stop_later: list[Daemon]) -> None:
    curator = Curator(tmp_path / "curator", upload_limit="1M")  # 6 MiB: about 6 s
    stop_later.append(curator)
    random_file(curator.share / "Film.mkv", 5 * MIB, seed=1)
    random_file(curator.share / "Short.mkv", MIB, seed=2)
    curator.start()
    curator.wait_items(2)
    total = 6 * MIB
    with JellyfinStandIn() as jellyfin:
        client = Client(tmp_path / "client", [curator.manifest_url])
        stop_later.append(client)
        client.start("--jellyfin-url", jellyfin.url, "--jellyfin-api-key", jellyfin.state.api_key)
        client_url = f"http://127.0.0.1:{client.status_port}"

        def mid_download() -> Samples | None:
            try:
                samples = scrape(client_url)
            except OSError:
                return None
            down = value(samples, "meshmedia_payload_bytes_total", direction="down")
            busy = value(samples, "meshmedia_torrents", state="downloading") >= 1
            return samples if busy and 0 < down < total else None

        during = wait_for(mid_download, timeout=60, interval=0.1, describe=client.text)
        assert value(during, "meshmedia_peers") >= 1
        assert value(during, "meshmedia_items", manifest=curator.manifest_url, state="placed") < 2

        wait_for(lambda: client.placed("Film.mkv") and client.placed("Short.mkv"), timeout=90)
        wait_for(lambda: jellyfin.requests("/Library/Media/Updated"), timeout=30)
        wait_for(
            lambda: value(
                scrape(client_url), "meshmedia_jellyfin_notifications_total", outcome="ok"
            ),
            timeout=30,
        )
        after = scrape(client_url)
    cur = scrape(f"http://127.0.0.1:{curator.port}")
    url = curator.manifest_url

    downloaded = value(after, "meshmedia_payload_bytes_total", direction="down")
    assert total <= downloaded < total * 1.1  # every byte once (a few re-requested blocks at most)
    assert value(cur, "meshmedia_payload_bytes_total", direction="up") >= total
    assert value(after, "meshmedia_items_placed_total", manifest=url) == 2
    assert value(after, "meshmedia_items", manifest=url, state="placed") == 2
    assert value(after, "meshmedia_items", manifest=url, state="downloading") == 0
    assert value(after, "meshmedia_placement_seconds_count") == 2
    assert value(after, "meshmedia_torrents", state="seeding") == 2
    assert value(after, "meshmedia_manifest_version", manifest=url) >= 1
    assert value(after, "meshmedia_http_requests_total", route="/metrics", code="200") >= 2
    assert value(after, "meshmedia_jellyfin_notifications_total", outcome="ok") >= 1

    assert value(cur, "meshmedia_publish_seconds_count") == 2
    assert value(cur, "meshmedia_manifest_items", group="default") == 2
    assert value(cur, "meshmedia_manifest_version", group="default") >= 1
    assert value(cur, "meshmedia_torrents", state="seeding") == 2
    manifest_gets = value(
        cur, "meshmedia_http_requests_total", route="/manifest/{group}.json", code="200"
    )
    assert manifest_gets >= 1


def test_each_daemon_counts_in_its_own_registry() -> None:
    one, two = Metrics("curator"), Metrics("client")
    one.request("/status", 200)
    one.request("/status", 200)
    two.request("/status", 200)
    first = one.exposition()[0].decode()
    second = two.exposition()[0].decode()
    assert 'meshmedia_http_requests_total{code="200",route="/status"} 2.0' in first
    assert 'meshmedia_http_requests_total{code="200",route="/status"} 1.0' in second


def test_manifest_labels_never_carry_a_secret() -> None:
    url = "http://reader:s3cret@10.0.0.2:5000/manifest/family.json?key=s3cret#top"
    assert url_label(url) == "http://10.0.0.2:5000/manifest/family.json"
    assert url_label("http://[::1]:5000/manifest/a.json") == "http://[::1]:5000/manifest/a.json"
