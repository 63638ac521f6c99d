"""Property-based tests (Hypothesis): generated manifests, items, paths and torrents,
hostile ones included, against the parser, the path rule and a real client.

Properties: nothing raises but the library's own error; no accepted path, and no
file the client writes, leaves DOWNLOAD_DIR; a bad document keeps the previous
good manifest. Runs are deterministic (derandomize, no example database) and
small (see PROFILE): about 20 s in all on this machine.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from meshmedia.client import SyncClient
from meshmedia.client.placement import final_path, targets_for, unsafe_names
from meshmedia.engine import Engine
from meshmedia.errors import EngineError, ManifestError
from meshmedia.manifest import parse_manifest
from meshmedia.store import Store
from meshmedia.torrentinfo import read_torrent, torrent_files
from tests.helpers import make_config, wait_for
from tests.hostile import Seeder, Site, bencode, files_under, hand_built, serve

PROFILE = {
    "derandomize": True,  # the same examples on every run and in CI
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
MANIFEST = "/manifest/default.json"

# -- strategies -------------------------------------------------------------------------
HOSTILE_SEGMENTS = [
    "..", ".", "", "a", "Film (2001)", ".meshmedia", "C:", "x" * 256, "\ud800", "a\x00b",
    "a\\b", "é", " ", "a\nb", "~", "*",
]  # fmt: skip
segments = st.one_of(
    st.sampled_from(HOSTILE_SEGMENTS),
    st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8),
)
paths = st.one_of(
    st.lists(segments, min_size=1, max_size=4).map("/".join),
    st.sampled_from(["/etc/passwd", "a//b", "a/", "/", "", "a/b/../../c"]),
    st.text(max_size=20),
)
info_hashes = st.binary(min_size=20, max_size=20).map(bytes.hex)
torrents = st.one_of(
    info_hashes.map(lambda ih: f"magnet:?xt=urn:btih:{ih}&dn=x&x.pe=127.0.0.1:9"),
    info_hashes.map(lambda ih: f"magnet:?xt=urn:btih:{ih}&tr=http://127.0.0.1:9/a&ws=http://x"),
    st.sampled_from(["magnet:?dn=x", "http://127.0.0.1:9/t.torrent", "ftp://x/t", "", "magnet:"]),
    st.text(max_size=30),
    st.integers(),
    st.none(),
)
hexes = st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), st.text(max_size=70))
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False), st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
file_entries = st.fixed_dictionaries(
    {"path": paths, "size": st.integers(-1, 10**6), "sha256": hexes},
    optional={"xxh3": st.text(max_size=34)},
)
items = st.one_of(
    st.fixed_dictionaries(
        {"path": paths, "torrent": torrents},
        optional={
            "title": st.one_of(st.text(max_size=10), st.integers()),
            "size": st.one_of(st.integers(-5, 10**13), st.text(max_size=5), st.booleans()),
            "sha256": hexes,
            "files": st.one_of(st.lists(file_entries, max_size=3), json_values),
            "extra": json_values,
        },
    ),
    json_values,
)
documents = st.one_of(
    st.fixed_dictionaries(
        {"group": st.one_of(st.just("default"), st.text(max_size=8), st.integers())},
        optional={
            "items": st.one_of(st.lists(items, max_size=8), json_values),
            "version": st.one_of(st.integers(-3, 10**25), st.text(max_size=4)),
            "updated_at": json_values,
            "signature": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"alg": st.just("ed25519"), "key": st.just("ab" * 32), "sig": hexes}
                ),
            ),
        },
    ),
    json_values,
)
safe_items = st.fixed_dictionaries(
    {
        "path": st.lists(
            st.sampled_from(["a", "b", "Film (2001)", "é"]), min_size=1, max_size=3
        ).map("/".join),
        "torrent": torrents,
    },
    optional={"size": st.integers(0, 10**6), "sha256": hexes},
)
good_documents = st.fixed_dictionaries(
    {"group": st.just("default"), "items": st.lists(safe_items, max_size=6)},
    optional={"version": st.integers(0, 100)},
)
raw_bodies = st.one_of(
    good_documents.map(lambda d: json.dumps(d).encode()),
    documents.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
    st.integers(1, 5000).map(lambda n: b"[" * n),
    st.sampled_from([b"", b"{", b"\xef\xbb\xbf{}", b'{"group": "g", "items": [NaN]}']),
)


# -- the parser and the path rule ----------------------------------------------------------
@settings(max_examples=400, **PROFILE)
@given(body=raw_bodies)
def test_parsing_raises_only_manifest_error_and_accepts_only_safe_paths(body: bytes) -> None:
    try:
        manifest, rejected = parse_manifest(body, one_place_per_torrent=True)
    except ManifestError:
        return
    root = Path("/srv/media")
    taken: set[str] = set()
    for item in manifest.items:
        target = final_path(root, item.path)  # raises if the path were unsafe
        assert os.path.normpath(target).startswith(str(root) + os.sep)
        assert item.path.encode("utf-8")  # no lone surrogate survives
        for other in taken:
            assert not (item.path + "/").startswith(other + "/")
            assert not (other + "/").startswith(item.path + "/")
        taken.add(item.path)
    for bad in rejected:
        str(bad).encode("utf-8")  # every message can be printed


names = st.lists(
    st.one_of(
        st.sampled_from(["..", ".", "", "a", "b", "C:", "/x", "x\\..\\y", "é", "_"]),
        st.text(max_size=6),
    ),
    min_size=1,
    max_size=4,
).map("/".join)


@settings(max_examples=400, **PROFILE)
@given(files=st.lists(names, min_size=1, max_size=4), item=st.sampled_from(["Show", "a/b", "F"]))
def test_every_placement_target_stays_inside_its_item(files: list[str], item: str) -> None:
    final = Path("/srv/media") / item
    indexed = [(i, name, 1) for i, name in enumerate(files)]
    try:
        targets = targets_for(indexed, final)
    except ManifestError:
        return
    for target in targets:
        placed = os.path.normpath(target.path(final))
        assert placed == os.path.normpath(final) or placed.startswith(str(final) + os.sep)
        assert os.path.normpath(final.parent / target.new_name) == placed


parts = st.lists(
    st.one_of(
        st.sampled_from(
            [b"..", b".", b"", b"/abs", b"a", b"b", b"C:", b"x\\..\\y", b"\xff", b"sub"]
        ),
        st.binary(min_size=1, max_size=5),
    ),
    min_size=1,
    max_size=3,
)
torrent_names = st.sampled_from([b"x", b"..", b"/tmp/evil", b"Show", b"a/b", b"", b"\xfe"])
safe_parts = st.lists(
    st.sampled_from([b"a", b"b", b"sub", b"e1.mkv", "é".encode()]), min_size=1, max_size=3
)


def _torrent(name: bytes, files: list[list[bytes]]) -> Any:
    return hand_built(name, [(p, b"z" * (1 + n)) for n, p in enumerate(files)])


hostile_torrents = st.one_of(
    st.builds(
        _torrent, st.sampled_from([b"x", b"Show"]), st.lists(safe_parts, min_size=1, max_size=3)
    ),
    st.builds(_torrent, torrent_names, st.lists(parts, min_size=1, max_size=3)),
)


@settings(max_examples=300, **PROFILE)
@given(data=st.one_of(hostile_torrents.map(lambda t: t.data), st.binary(max_size=300)))
def test_torrent_readers_raise_only_engine_error(data: bytes) -> None:
    try:
        read_torrent(data)
        unsafe_names(torrent_files(data))
    except EngineError:
        pass


@settings(max_examples=200, **PROFILE)
@given(torrent=hostile_torrents)
def test_a_torrent_with_safe_names_places_inside_its_item_by_libtorrents_names(
    torrent: Any,
) -> None:
    try:
        ti = lt.torrent_info(lt.bdecode(torrent.data))
    except RuntimeError:
        return  # libtorrent refuses it: it can never be downloaded
    if not _safe(torrent.data):
        return  # refused by the client, whatever libtorrent makes of it
    storage = ti.layout()
    indexed = [(i, storage.file_path(i), storage.file_size(i)) for i in range(storage.num_files())]
    final = Path("/srv/media/Item")
    for target in targets_for(indexed, final):
        assert os.path.normpath(target.path(final)).startswith(str(final))


def _safe(data: bytes) -> bool:
    try:
        return unsafe_names(torrent_files(data)) is None
    except EngineError:
        return False  # not UTF-8, or not a torrent at all


# -- a real client -------------------------------------------------------------------------
class _Client:
    def __init__(self, base: Path, url: str) -> None:
        self.url = url
        self.config = make_config(base, "client", manifest_urls=(url,), interval=5)
        self.store = Store.in_state_dir(self.config.state_dir)
        self.engine = Engine(self.config, self.store)
        self.client = SyncClient(self.config, self.store, self.engine, retry_base=3600)
        self.client.retries = False

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Site, Seeder, _Client]]:
    base = tmp_path_factory.mktemp("world")
    (base / "outside" / "victim").mkdir(parents=True)
    (base / "outside" / "victim" / "file.txt").write_bytes(b"precious")
    with serve() as site:
        seeder = Seeder(base)
        node = _Client(base, site.url + MANIFEST)
        try:
            yield base, site, seeder, node
        finally:
            node.close()
            seeder.close()


def _outside(base: Path) -> dict[Path, bytes]:
    return files_under(base, base / "client", base / "seeder")


def _usable(body: bytes) -> bool:
    """The oracle: a manifest, and unsigned (random signatures never verify)."""
    try:
        parse_manifest(body)
    except ManifestError:
        return False
    return json.loads(body).get("signature") is None


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append(self.format(record))


@settings(max_examples=60, **PROFILE)
@given(bodies=st.lists(raw_bodies, min_size=1, max_size=4))
def test_the_client_never_raises_and_keeps_the_last_good_manifest(
    world: tuple[Path, Site, Seeder, _Client], bodies: list[bytes]
) -> None:
    base, _, _, node = world
    before_outside = _outside(base)
    caught = _Tracebacks()
    logging.getLogger("meshmedia").addHandler(caught)
    try:
        for body in bodies:
            before = node.client.saved_manifest(node.url)
            usable = _usable(body)
            event(f"usable {usable}")
            assert node.client.apply(node.url, body) is usable
            node.client.step()
            after = node.client.saved_manifest(node.url)
            assert after == ((body, None) if usable else before)
    finally:
        logging.getLogger("meshmedia").removeHandler(caught)
    assert caught.seen == []
    assert _outside(base) == before_outside


@settings(max_examples=12, **PROFILE)
@given(torrent=hostile_torrents, path=st.sampled_from(["Item", "Deep/Item", "x.mkv"]))
def test_hostile_torrents_from_a_real_seeder_never_write_outside(
    world: tuple[Path, Site, Seeder, _Client], torrent: Any, path: str
) -> None:
    base, _, seeder, node = world
    try:
        lt.torrent_info(lt.bdecode(torrent.data))
    except RuntimeError:
        assume(False)
    if (
        node.engine.status(torrent.info_hash) is None
        and seeder.engine.status(torrent.info_hash) is None
    ):
        seeder.seed(torrent)
    before_outside = _outside(base)
    body = json.dumps(
        {"group": "default", "items": [{"path": path, "torrent": torrent.magnet("t", seeder.port)}]}
    ).encode()
    assert node.client.apply(node.url, body)
    wait_for(lambda: node.client.step() or node.client.settled(), timeout=30, interval=0.05)
    (state,) = node.store.client_items(node.url)
    assert _outside(base) == before_outside
    safe = _safe(torrent.data)
    event(f"{'safe' if safe else 'unsafe'} names: {state.state}")
    assert state.state in (("placed", "failed") if safe else ("refused",)), state
    for found in files_under(node.config.download_dir):
        assert found.resolve().is_relative_to(node.config.download_dir.resolve())


def test_bencode_helper_round_trips() -> None:
    assert bencode({"b": [1, b"x"], "a": "y"}) == b"d1:a1:y1:bli1e1:xee"
