"""Signed manifests: tampering, other keys and rollbacks are refused; good ones pass."""

from __future__ import annotations

import copy
import hashlib
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
    SigningKey,
    TrustPolicy,
    generate_key,
    load_key,
    parse_public_key,
    save_key,
    verify,
)
from meshmedia.manifest.signing import signer_of
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


# -- the exact rules (mutation-checked) ---------------------------------------------
def test_public_keys_parse_in_the_forms_keygen_prints() -> None:
    key = generate_key()
    for text in (key.public_hex, key.public_hex.upper(), f"  ed25519:{key.public_hex}\n"):
        assert parse_public_key(text) == key.public
    for text in ("", key.public_hex[:-2], key.public_hex + "00", "zz" * 32, "ed25519:"):
        with pytest.raises(SignatureError, match="is not an ed25519 public key"):
            parse_public_key(text)


def test_the_expanded_secret_is_the_clamped_sha512_of_the_seed() -> None:
    """RFC 8032 5.1.5, what libtorrent's BEP 46 signing takes: low 3 bits and the top
    bit cleared, the next bit set; every other byte the SHA-512 of the seed."""
    for n in range(32):
        key = SigningKey(bytes([n]) * 32, b"")
        digest = hashlib.sha512(key.seed).digest()
        secret = key.expanded_secret
        assert len(secret) == 64
        assert secret[0] == digest[0] & 0b1111_1000
        assert secret[31] == (digest[31] & 0b0111_1111) | 0b0100_0000
        assert secret[1:31] == digest[1:31]
        assert secret[32:] == digest[32:]


def test_signing_replaces_an_old_signature_and_names_the_key() -> None:
    key = generate_key()
    signed = key.sign({**DOC, "signature": {"alg": "x"}})
    assert set(signed) == {*DOC, "signature"}
    assert signed["signature"]["alg"] == "ed25519"
    assert signed["signature"]["key"] == key.public_hex
    assert len(bytes.fromhex(signed["signature"]["sig"])) == 64
    verify(signed, key.public)
    assert {k: v for k, v in signed.items() if k != "signature"} == DOC


def test_save_key_refuses_to_replace_unless_forced(tmp_path: Path) -> None:
    first, second = generate_key(), generate_key()
    path = save_key(tmp_path / "state", first)
    assert path == tmp_path / "state" / "signing.key"
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "signing.pub").stat().st_mode) == 0o600
    assert (tmp_path / "state" / "signing.pub").read_text() == first.public_hex + "\n"
    with pytest.raises(SignatureError, match="exists; refusing to replace a signing key"):
        save_key(tmp_path / "state", second)
    assert load_key(tmp_path / "state") == first
    save_key(tmp_path / "state", second, overwrite=True)
    assert load_key(tmp_path / "state") == second
    assert path.read_text() == second.seed.hex() + "\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o601])
def test_a_key_open_to_others_is_refused_not_tightened(tmp_path: Path, mode: int) -> None:
    path = save_key(tmp_path, generate_key())
    os.chmod(path, mode)
    with pytest.raises(SignatureError, match=f"open to other users \\(mode {mode:04o}\\)"):
        load_key(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_broken_key_file_is_refused(tmp_path: Path) -> None:
    assert load_key(tmp_path) is None
    path = save_key(tmp_path, generate_key())
    for text in ("not hex\n", "ab" * 31 + "\n", "ab" * 33 + "\n"):
        path.write_text(text)
        with pytest.raises(SignatureError, match="is not a meshmedia signing key"):
            load_key(tmp_path)
    path.write_text("  " + "cd" * 32 + "\n")
    assert load_key(tmp_path) is not None


def test_signer_of_and_malformed_signatures() -> None:
    key = generate_key()
    assert signer_of(DOC) is None
    assert signer_of(key.sign(DOC)) == key.public
    for signature in ("x", {"alg": "rsa", "key": key.public_hex}, {"key": key.public_hex}):
        with pytest.raises(SignatureError, match="malformed \\(expected alg ed25519\\)"):
            signer_of({**DOC, "signature": signature})
    with pytest.raises(SignatureError, match="not an ed25519 public key"):
        signer_of({**DOC, "signature": {"alg": "ed25519"}})


def test_verify_names_what_is_wrong() -> None:
    key, other = generate_key(), generate_key()
    signed = key.sign(DOC)
    with pytest.raises(SignatureError, match=f"signed by {key.public_hex}, not by"):
        verify(signed, other.public)
    for sig in ("", "zz", "00" * 64):
        bad = {**signed, "signature": {**signed["signature"], "sig": sig}}
        with pytest.raises(SignatureError, match="does not match its content"):
            verify(bad, key.public)


@pytest.mark.parametrize("version", ["3", 3.0, True, None])
def test_a_signed_version_must_be_a_whole_number(store: Store, version: object) -> None:
    key = generate_key()
    with pytest.raises(SignatureError, match=r"version .* is not a number"):
        TrustPolicy(store, key.public).admit("src", key.sign({**DOC, "version": version}))


def test_versions_are_remembered_per_source_and_key(store: Store) -> None:
    key, other = generate_key(), generate_key()
    TrustPolicy(store, key.public).admit("a", key.sign({**DOC, "version": 5}))
    TrustPolicy(store, key.public).admit("b", key.sign({**DOC, "version": 1}))  # another source
    TrustPolicy(store, other.public).admit("a", other.sign({**DOC, "version": 1}))  # another key
    with pytest.raises(RollbackError, match="version 4 from a is older than version 5"):
        TrustPolicy(store, key.public).admit("a", key.sign({**DOC, "version": 4}))
    assert TrustPolicy(store, key.public).admit("a", key.sign({**DOC, "version": 6})) == key.public
    with pytest.raises(RollbackError, match="older than version 6"):
        TrustPolicy(store, key.public).admit("a", key.sign({**DOC, "version": 5}))


# The exact texts a curator or a client's log shows (mutation testing: a `match=` search
# lets a padded or recased message through).


def test_a_key_open_to_others_names_the_fix_in_full(tmp_path: Path) -> None:
    path = save_key(tmp_path / "my state", generate_key())
    os.chmod(path, 0o644)
    with pytest.raises(SignatureError) as caught:
        load_key(tmp_path / "my state")
    assert str(caught.value) == (
        f"the signing key {path} is open to other users (mode 0644); run"
        f" `chmod 600 '{path}'` (and, if someone else may have read it,"
        " make a new key with `meshmedia keygen --force`; clients must then trust it)"
    )


def test_signature_refusals_say_exactly_what_is_wrong() -> None:
    key = generate_key()
    signed = key.sign(DOC)
    cases = [
        (lambda: signer_of({**DOC, "signature": {"key": key.public_hex}}),
         "the manifest's signature is malformed (expected alg ed25519)"),
        (lambda: signer_of({**DOC, "signature": {"alg": "ed25519"}}),
         "'' is not an ed25519 public key (expected 64 hex digits)"),
        (lambda: verify(DOC, key.public),
         "the manifest is not signed, but a trusted key is required"),
        (lambda: verify({**signed, "version": 4}, key.public),
         "the manifest's signature does not match its content (tampered?)"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(SignatureError) as caught:
            call()
        assert str(caught.value) == message


def test_a_rollback_refusal_says_exactly_what_was_refused(store: Store) -> None:
    key = generate_key()
    TrustPolicy(store, key.public).admit("src", key.sign({**DOC, "version": 5}))
    with pytest.raises(RollbackError) as caught:
        TrustPolicy(store, key.public).admit("src", key.sign({**DOC, "version": 4}))
    assert str(caught.value) == (
        "manifest version 4 from src is older than version 5 already accepted (rollback refused)"
    )


def test_a_signed_manifest_without_a_version_is_version_0(store: Store) -> None:
    """The earlier format has no version: read as 0, so a later version 0 is no rollback,
    and a first manifest may be version 0 (nothing accepted yet is below every version)."""
    key = generate_key()
    unversioned = {k: v for k, v in DOC.items() if k != "version"}
    assert TrustPolicy(store, key.public).admit("old", key.sign(unversioned)) == key.public
    assert store.get(f"trust.version:old:{key.public_hex}") == "0"
    assert TrustPolicy(store, key.public).admit("old", key.sign({**DOC, "version": 0}))
    assert TrustPolicy(store, key.public).admit("new", key.sign({**DOC, "version": 0}))


def test_a_trusted_key_is_not_announced_as_trust_on_first_use(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    key = generate_key()
    with caplog.at_level("WARNING", logger="meshmedia.manifest.signing"):
        TrustPolicy(store, key.public).admit("src", key.sign(DOC))
    assert "trust on first use" not in caplog.text
    assert store.get("trust.pin:src") == key.public_hex
