"""A round of many new files is listed in batches (issue 15): one manifest version per
file made publishing 5,000 files O(N^2) (each version copied and served every item)."""

from __future__ import annotations

from pathlib import Path

from meshmedia.curator import Publisher
from meshmedia.engine import Engine
from meshmedia.manifest import ManifestStore
from meshmedia.store import Store
from tests.helpers import make_config, random_file


def test_a_round_of_40_files_is_listed_in_a_few_versions(tmp_path: Path) -> None:
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    files = [random_file(share / "d" / f"{k:02d}.jpg", 10_000 + k) for k in range(40)]
    random_file(share / "Show", 5_000)
    clash = random_file(share / "x" / "y.jpg", 7_000)
    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests)
        publisher.publish(share / "Show")
        first = manifests.get("default").version
        publisher.publish_many([(p, None) for p in [*files, clash]])
        manifest = manifests.get("default")
        assert {i.path for i in manifest.items} == {
            "Show", "x/y.jpg", *(f"d/{k:02d}.jpg" for k in range(40))
        }  # fmt: skip
        # the first at once, the rest together (one per BATCH_SECONDS): 41 before
        assert manifest.version - first <= 4, manifest.version - first
        assert {e.path for e in store.catalog()} == {i.path for i in manifest.items}
        assert {t.info_hash for t in engine.snapshot().torrents} == {
            i.info_hash for i in manifest.items
        }
        assert set(publisher.published()) == {p.resolve() for p in [share / "Show", *files, clash]}
        manifests.close()


def test_a_long_round_lists_its_batches_ever_further_apart(tmp_path: Path) -> None:
    """Batches 0.25 s, then 0.5, 1 and 2 s apart (at most): a 5,000-file burst made 24
    versions in 8 s, each fetched and parsed whole by every client."""
    config = make_config(tmp_path, "curator")
    share = config.shares[0].path
    files = [random_file(share / "d" / f"{k:03d}.jpg", 1_000 + k) for k in range(121)]
    now = [0.0]

    def clock() -> float:  # each look: 50 ms later (about one look a file)
        now[0] += 0.05
        return now[0]

    with Store.in_state_dir(config.state_dir) as store, Engine(config, store) as engine:
        manifests = ManifestStore(config.state_dir / "manifests")
        publisher = Publisher(config, store, engine, manifests, clock=clock)
        publisher.publish_many([(p, None) for p in files])
        manifest = manifests.get("default")
        assert len(manifest.items) == 121
        # the first, then ~6 s of looks: 0.25 + 0.5 + 1 + 2 + 2 (+ the rest); 25 at 0.25 s
        assert manifest.version <= 8, manifest.version
        manifests.close()
