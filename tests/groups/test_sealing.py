"""Sealed BEP 46 values: only the group secret opens them, bound to key and salt."""

from __future__ import annotations

import os

import pytest

from meshmedia.groups.authority import GroupError
from meshmedia.groups.sealing import OVERHEAD, dht_salt, seal, unseal

SECRET = bytes(range(32))
PUBLIC = b"k" * 32


def test_a_sealed_value_opens_with_the_secret_and_shows_no_word() -> None:
    salt = dht_salt(SECRET)
    plain = b'{"group": "family", "version": 3, "manifest": {"title": "Grandma"}}'
    value = seal(SECRET, PUBLIC, salt, plain)
    assert len(value) == len(plain) + OVERHEAD
    assert unseal(SECRET, PUBLIC, salt, value) == plain
    for word in (b"family", b"Grandma", b"version"):
        assert word not in value
    assert seal(SECRET, PUBLIC, salt, plain) != value  # a fresh nonce each time


def test_the_salt_is_16_bytes_of_the_secret_not_of_a_name() -> None:
    assert len(dht_salt(SECRET)) == 16
    assert dht_salt(SECRET) == dht_salt(bytes(range(32)))
    assert dht_salt(SECRET) != dht_salt(os.urandom(32))
    assert b"family" not in dht_salt(SECRET)


@pytest.mark.parametrize("change", ["secret", "public", "salt", "byte", "version", "cut"])
def test_any_other_key_salt_or_byte_is_refused(change: str) -> None:
    salt = dht_salt(SECRET)
    value = seal(SECRET, PUBLIC, salt, b"pointer")
    secret, public = SECRET, PUBLIC
    if change == "secret":
        secret = os.urandom(32)
    elif change == "public":
        public = b"x" * 32
    elif change == "salt":
        salt = os.urandom(16)
    elif change == "byte":
        value = value[:-1] + bytes([value[-1] ^ 1])
    elif change == "version":
        value = b"\x02" + value[1:]
    else:
        value = value[:10]
    with pytest.raises(GroupError):
        unseal(secret, public, salt, value)
