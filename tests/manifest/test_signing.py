"""Signed manifests: tampering, other keys and rollbacks are refused; good ones pass."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import pytest

from meshmedia.manifest import (
    Item,
    ManifestStore,
    RollbackError,
    SignatureError,
    TrustPolicy,
    generate_key,
    load_key,
    parse_public_key,
    save_key,
    verify,
)
from meshmedia.store import Store

DOC = {
    "group": "family",
    "version": 3,
    "updated_at": "2026-11-24T21:00:00Z",
    "items": [
        {
            "title": "Clip",
            "torrent": "magnet:?xt=urn:btih:" + "ab" * 20,
            "path": "Clip/clip.mkv",
            "sha256": "00" * 32,
        }
    ],
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state.db") as db:
        yield db


def test_key_roundtrip_and_mode(tmp_path: Path) -> None:
    key = generate_key()
    path = save_key(tmp_path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(tmp_path) == key
    assert parse_public_key(key.public_hex) == key.public
    with pytest.raises(SignatureError, match="refusing to replace"):
        save_key(tmp_path, generate_key())


def test_good_signature_verifies_and_survives_reordering() -> None:
    key = generate_key()
    signed = key.sign(DOC)
    reordered = dict(reversed(list(signed.items())))
    verify(reordered, key.public)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["items"][0].__setitem__("sha256", "11" * 32),
        lambda d: d["items"].append(dict(d["items"][0], path="evil.mkv")),
        lambda d: d.__setitem__("version", 4),
        lambda d: d["signature"].__setitem__("sig", "00" * 64),
    ],
)
def test_tampered_manifest_is_refused(tamper) -> None:
    key = generate_key()
    signed = key.sign(DOC)
    bad = copy.deepcopy(signed)
    tamper(bad)
    with pytest.raises(SignatureError, match="does not match"):
        verify(bad, key.public)


def test_other_key_and_unsigned_are_refused(store: Store) -> None:
    trusted, other = generate_key(), generate_key()
    policy = TrustPolicy(store, trusted.public)
    with pytest.raises(SignatureError, match="not by the trusted key"):
        policy.admit("http://c/m.json", other.sign(DOC))
    with pytest.raises(SignatureError, match="not signed"):
        policy.admit("http://c/m.json", DOC)
    assert policy.admit("http://c/m.json", trusted.sign(DOC)) == trusted.public


def test_rollback_is_refused(store: Store) -> None:
    key = generate_key()
    policy = TrustPolicy(store, key.public)
    policy.admit("src", key.sign(DOC))
    policy.admit("src", key.sign(DOC))  # the same version again is fine (a re-fetch)
    with pytest.raises(RollbackError, match="older than version 3"):
        policy.admit("src", key.sign(dict(DOC, version=2)))


def test_trust_on_first_use_pins_the_key(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    first, other = generate_key(), generate_key()
    policy = TrustPolicy(store)
    assert policy.admit("src", DOC) is None  # unsigned and nothing pinned: accepted
    assert policy.admit("src", first.sign(DOC)) == first.public
    assert "pinned signing key" in caplog.text
    with pytest.raises(SignatureError, match="not by the trusted key"):
        TrustPolicy(store).admit("src", other.sign(DOC))
    with pytest.raises(SignatureError, match="not signed"):
        TrustPolicy(store).admit("src", DOC)


def test_manifest_store_signs_every_version(tmp_path: Path) -> None:
    key = generate_key()
    manifests = ManifestStore(tmp_path / "manifests", signer=key)
    magnet = "magnet:?xt=urn:btih:" + "cd" * 20
    manifests.upsert("family", [Item(title="A", torrent=magnet, path="a.mkv")])
    second = manifests.upsert("family", [Item(title="B", torrent=magnet, path="b.mkv")])
    manifests.flush()
    on_disk = json.loads((tmp_path / "manifests" / "family.json").read_bytes())
    assert on_disk["version"] == second.version == 2
    verify(on_disk, key.public)
    verify(json.loads(second.dumps()), key.public)
    assert on_disk["signature"]["key"] == key.public_hex
