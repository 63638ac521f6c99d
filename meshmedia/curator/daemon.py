"""The curator daemon (`meshmedia serve`): composes the parts and runs until a signal.

Store + Engine + ManifestStore + Publisher + ManifestServer + Watcher, built
from one Config. Shutdown order: stop watching, stop accepting and finish
the responses under way, save the engine's state, close the database.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from meshmedia.config import WILDCARDS, Config
from meshmedia.engine import Engine
from meshmedia.engine.building import advertise_host
from meshmedia.engine.schedule import start_schedule
from meshmedia.groups.curator_tls import server_context
from meshmedia.groups.registry import Registry
from meshmedia.http import (
    ManifestServer,
    load_or_create_token,
    status_page,
    token_path,
)
from meshmedia.http.metrics import Metrics, engine_source, gauge_source
from meshmedia.manifest import ManifestStore, SigningKey, generate_key, load_key, save_key
from meshmedia.process import prepare_daemon, stop_on_signals, trimming_when_idle
from meshmedia.store import Store

from .addresses import PeerAdvertiser, advertised_http, reachable_http
from .announcer import DhtAnnouncer
from .publisher import Publisher
from .swarms import PrivateSwarms
from .watcher import Watcher

log = logging.getLogger(__name__)


class Curator:
    """Everything a curator runs, started by start() (or `with`) and stopped by close()."""

    def __init__(
        self,
        config: Config,
        *,
        force_polling: bool | None = None,
        background_restore: bool = False,
    ) -> None:
        """A curator for `config`; `background_restore`: answer HTTP at once and bring the
        torrents back (and start watching) on a thread (the daemon; tests wait for none)."""
        self.config = config
        self._background = background_restore
        self.restored = threading.Event()
        self._force_polling = force_polling
        self._stack = ExitStack()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.manifests: ManifestStore | None = None
        self.publisher: Publisher | None = None
        self.server: ManifestServer | None = None
        self.watcher: Watcher | None = None
        self.announcer: DhtAnnouncer | None = None
        self.registry: Registry | None = None
        self.advertiser: PeerAdvertiser | None = None
        self.swarms: PrivateSwarms | None = None
        self.metrics = Metrics("curator")

    def start(self) -> None:
        """Build and start every part; on a failure, close what was started and re-raise."""
        config = self.config
        try:
            self.store = store = Store.in_state_dir(config.state_dir)
            self._stack.callback(store.close)
            self.engine = engine = Engine(config, store, restore=not self._background)
            self._stack.callback(engine.close)
            schedule = start_schedule(
                engine, config.limit_schedule, config.upload_limit, config.download_limit
            )
            if schedule is not None:
                self._stack.callback(schedule.close)
            signer = self._signer()
            self.manifests = manifests = ManifestStore(
                Path(config.state_dir) / "manifests", signer=signer
            )
            self._stack.callback(manifests.close)
            manifests.preload({share.group for share in config.shares})
            self.swarms = swarms = PrivateSwarms(
                Path(config.state_dir), engine, lambda group: not config.is_public(group)
            )
            self.publisher = publisher = Publisher(
                config, store, engine, manifests, swarms, restore=not self._background
            )
            self._stack.callback(publisher.close)
            self._measure(engine, manifests, publisher)
            if signer is not None and config.dht:
                self.announcer = DhtAnnouncer(
                    config, store, engine, manifests, signer, sealed=swarms.sealed
                )
                self.announcer.start()
                self._stack.callback(self.announcer.close)
            token = load_or_create_token(config)
            self.registry = registry = Registry(Path(config.state_dir))
            self._stack.callback(registry.close)
            self.server = server = ManifestServer(
                config,
                manifests,
                publisher,
                engine.snapshot,
                token,
                home_page=status_page,
                metrics=self.metrics,
                registry=registry,
                signing_key=signer.public_hex if signer is not None else None,
                tls=server_context(Path(config.state_dir)),
                swarm_peers=self._swarm_peers,
                advertised=lambda: advertised_http(config, engine),
            )
            server.start()
            self._stack.callback(server.close)
            self._advertise(engine, server, manifests)
            self.watcher = watcher = Watcher(config, publisher, force_polling=self._force_polling)
            self._stack.callback(watcher.close)
            if self._background:
                restoring = threading.Thread(target=self._restore, name="restore", daemon=True)
                restoring.start()
                self._stack.callback(restoring.join)
            else:
                watcher.start()
                self.restored.set()
        except BaseException:
            self.close()
            raise
        self._log_where(server, engine)

    def _signer(self) -> SigningKey | None:
        """The manifest signing key; made when a group is private (their manifests are
        always signed: members trust only this key)."""
        config = self.config
        signer = load_key(Path(config.state_dir))
        if signer is None and not config.all_public:
            signer = generate_key()
            save_key(Path(config.state_dir), signer)
            log.info("made the manifest signing key (private groups' manifests are signed)")
        if signer is not None:
            log.info("signing manifests with key %s", signer.public_hex)
        return signer

    def _advertise(self, engine: Engine, server: ManifestServer, manifests: ManifestStore) -> None:
        """Map the HTTP port on the router and keep each manifest's `peers` current."""
        config = self.config
        if reachable_http(config):  # never offer a loopback-only HTTP module to the router
            engine.portmap.map_http(server.port, advertise_host(config))
        self.advertiser = advertiser = PeerAdvertiser(config, engine, manifests)
        advertiser.start()
        self._stack.callback(advertiser.close)

    def _restore(self) -> None:
        """Bring the torrents and the catalog back, then watch the shares (a thread):
        5,000 torrents took 1-2 s before the first HTTP answer."""
        assert self.engine is not None
        assert self.publisher is not None
        assert self.watcher is not None
        started = time.monotonic()
        try:
            self.engine.restore_saved()
            self.publisher.restore()
            self.watcher.start()
        except Exception:
            log.exception("restoring the curator's torrents failed")
            return
        finally:
            self.restored.set()
        log.info("restored in %.2f s; watching the shares", time.monotonic() - started)
        if self.watcher.polling:
            log.info("watching by polling (quiet interval %.1f s)", self.config.poll_quiet)

    def _swarm_peers(self, asked: str | None) -> list[str]:
        """The curator's SSL peer address for a joining member: the advertised host, a
        specific listen host, else the address the member reached the HTTP port at."""
        config, swarms = self.config, self.swarms
        if swarms is None:
            return []
        host = asked
        if config.advertise_host and config.advertise_host.lower() != "none":
            host = config.advertise_host
        elif config.listen_host not in WILDCARDS:
            host = config.listen_host
        return swarms.peers(host)

    def _measure(self, engine: Engine, manifests: ManifestStore, publisher: Publisher) -> None:
        """What GET /metrics reads: the engine, each group's manifest, publish latency."""
        metrics = self.metrics
        metrics.add_source(
            engine_source(engine.tally, engine.stats, lambda: publisher.bytes_hashed)
        )

        def versions() -> dict[str, int]:
            return {group: manifests.get(group).version for group in manifests.groups()}

        def items() -> dict[str, int]:
            return {group: len(manifests.get(group).items) for group in manifests.groups()}

        metrics.add_source(
            gauge_source(
                "meshmedia_manifest_version", "Version of each manifest.", "group", versions
            )
        )
        metrics.add_source(
            gauge_source("meshmedia_manifest_items", "Items in each manifest.", "group", items)
        )
        publisher.on_published = metrics.publish_seconds.observe

    def _log_where(self, server: ManifestServer, engine: Engine) -> None:
        config = self.config
        log.info("manifests at %s/manifest/<group>.json", server.url.rstrip("/"))
        log.info("BitTorrent on %s port %d", config.listen_host, engine.listen_port)
        for share in config.shares:
            log.info("share folder %s -> group %s", share.path, share.group)
        if config.token:
            log.info("write token from --token / MESHMEDIA_TOKEN")
        else:
            log.info("write token in %s", token_path(config))
        if self.restored.is_set() and self.watcher is not None and self.watcher.polling:
            log.info("watching by polling (quiet interval %.1f s)", config.poll_quiet)

    def close(self) -> None:
        """Stop in order: watcher, HTTP server, publisher, manifests (fsync), engine, database."""
        self._stack.close()

    def __enter__(self) -> Curator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(config: Config, stop: threading.Event | None = None) -> None:
    """Run a curator until SIGTERM/SIGINT (or until `stop` is set), then shut down cleanly."""
    stop = stop or threading.Event()
    prepare_daemon()
    with stop_on_signals(stop), trimming_when_idle(), Curator(config, background_restore=True):
        log.info("curator running; stop with SIGTERM or Ctrl-C")
        stop.wait()
        log.info("curator stopping")
    log.info("curator stopped")
