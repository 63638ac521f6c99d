"""Who listens to a client daemon: its metrics (GET /metrics) and the user's hooks.

Both hear the SyncClient's ItemEvents; the metrics also read the engine, the
store and the applied manifest versions at scrape time (http/metrics.py).
"""

from __future__ import annotations

import shlex
import threading
from contextlib import ExitStack

from meshmedia.config import Config
from meshmedia.http.metrics import Metrics, engine_source, gauge_source, items_source, url_label
from meshmedia.jellyfin import JellyfinNotifier
from meshmedia.store import ItemState

from .events import Failed, Placed
from .hooks import PlacedCommand, Webhook
from .sync import SyncClient

HOOKS_TIMEOUT = 30.0  # seconds a stop waits for queued --on-placed commands and webhooks


def add_hooks(config: Config, client: SyncClient, stack: ExitStack, stop: threading.Event) -> None:
    """--on-placed and --webhook listen to the client's events; a stop waits for what they
    have queued (at most HOOKS_TIMEOUT), so `--once` exits after its hooks ran."""
    hooks: list[PlacedCommand | Webhook] = []
    if config.on_placed:
        hooks.append(PlacedCommand(shlex.split(config.on_placed)))
    if config.webhook:
        hooks.append(Webhook(config.webhook, stop=stop))
    for hook in hooks:
        client.events.subscribe(hook)
        stack.callback(hook.join, HOOKS_TIMEOUT)


def client_metrics(client: SyncClient, notifier: JellyfinNotifier | None) -> Metrics:
    """The client's GET /metrics: its engine, items, manifests, placements, Jellyfin."""
    metrics = Metrics("client")
    engine = client.engine
    metrics.add_source(engine_source(engine.tally, engine.stats))
    metrics.add_source(items_source(client.store.client_item_counts, [s.value for s in ItemState]))
    metrics.add_source(
        gauge_source(
            "meshmedia_manifest_version",
            "Version of each followed manifest.",
            "manifest",
            lambda: {url_label(u): v for u, v in list(client.versions.items())},
        )
    )

    def placed(event: Placed | Failed) -> None:
        if isinstance(event, Placed):
            metrics.items_placed.labels(url_label(event.url)).inc()
            metrics.placement_seconds.observe(event.seconds)

    client.events.subscribe(placed)
    if notifier is not None:
        notifier.on_outcome = metrics.jellyfin_outcome
    return metrics
