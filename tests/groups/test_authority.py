"""The group CA on the curator: files, modes, and the certificates it issues."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from meshmedia.groups import GroupAuthority, make_csr, new_member_key
from meshmedia.groups.authority import GroupError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_made_once_with_private_modes(tmp_path: Path) -> None:
    ca = GroupAuthority.open(tmp_path, "family")
    folder = tmp_path / "groups" / "family"
    names = ["ca.crt", "ca.key", "dht.key", "secret"]
    assert sorted(p.name for p in folder.iterdir()) == names
    assert (mode(folder), mode(folder.parent)) == (0o700, 0o700)
    assert [mode(folder / name) for name in names] == [0o600] * 4
    again = GroupAuthority.open(tmp_path, "family")
    assert (again.ca_pem, again.secret, again.dht_seed) == (ca.ca_pem, ca.secret, ca.dht_seed)
    assert len(ca.secret) == len(ca.dht_seed) == 32
    assert ca.secret != ca.dht_seed
    assert GroupAuthority.open(tmp_path, "other").ca_pem != ca.ca_pem


def test_the_ca_certificate_is_an_opaque_ed25519_ca_for_20_years(tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(GroupAuthority.open(tmp_path, "family").ca_pem)
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    (cn,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert len(str(cn.value)) == 8
    assert int(str(cn.value), 16) >= 0
    assert "family" not in cert.subject.rfc4514_string()
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 20 <= years < 20.1
    cert.verify_directly_issued_by(cert)


def test_a_signed_csr_is_a_member_certificate_of_the_group(tmp_path: Path) -> None:
    ca = GroupAuthority.open(tmp_path, "family")
    key_pem = new_member_key()
    pem = ca.sign_csr(make_csr(key_pem), "5f0c1a2b3c4d5e6f")
    cert = x509.load_pem_x509_certificate(pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.ca_pem))
    key = serialization.load_pem_private_key(key_pem, None)
    assert cert.public_key() == key.public_key()
    (cn,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn.value == "5f0c1a2b3c4d5e6f"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*"]
    skew = dt.datetime.now(dt.timezone.utc) - cert.not_valid_before_utc
    assert dt.timedelta(minutes=59) < skew < dt.timedelta(minutes=61)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=14)
    short = x509.load_pem_x509_certificate(ca.sign_csr(make_csr(key_pem), "m", days=2))
    assert short.not_valid_after_utc - short.not_valid_before_utc == dt.timedelta(days=2)


def test_issue_self_gives_a_certificate_and_its_key(tmp_path: Path) -> None:
    ca = GroupAuthority.open(tmp_path, "family")
    cert_pem, key_pem = ca.issue_self("0123456789abcdef")
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.ca_pem))


@pytest.mark.parametrize("group", ["", ".", "..", "a/b", "..\\x", "a\0b"])
def test_a_group_name_that_is_no_file_name_is_refused(tmp_path: Path, group: str) -> None:
    with pytest.raises(GroupError):
        GroupAuthority.open(tmp_path, group)
    assert not (tmp_path / "groups").exists() or list((tmp_path / "groups").iterdir()) == []


def test_bad_csrs_are_refused(tmp_path: Path) -> None:
    ca = GroupAuthority.open(tmp_path, "family")
    with pytest.raises(GroupError, match="signing request"):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "m")
    with pytest.raises(GroupError, match="member id"):
        ca.sign_csr(make_csr(new_member_key()), "")
    with pytest.raises(GroupError, match="not a PEM"):
        make_csr(b"junk")


def test_a_ca_key_that_does_not_fit_its_certificate_is_refused(tmp_path: Path) -> None:
    GroupAuthority.open(tmp_path, "a")
    GroupAuthority.open(tmp_path, "b")
    folder = tmp_path / "groups"
    (folder / "a" / "ca.key").write_bytes((folder / "b" / "ca.key").read_bytes())
    with pytest.raises(GroupError, match="do not match"):
        GroupAuthority.open(tmp_path, "a")
    (folder / "b" / "ca.crt").write_bytes(b"junk")
    with pytest.raises(GroupError, match="cannot read"):
        GroupAuthority.open(tmp_path, "b")
