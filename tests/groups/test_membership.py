"""A client's joined groups on disk: round trip, modes, and files that do not read."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest

from meshmedia.groups import GroupAuthority, Membership, load_memberships, make_csr, save_membership
from meshmedia.groups.authority import GroupError, check_group_name
from meshmedia.groups.membership import member_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def membership(curator: Path, client: Path, group: str = "family") -> Membership:
    ca = GroupAuthority.open(curator, group)
    key = member_key(client)
    return Membership(
        group=group,
        member_id="5f0c1a2b3c4d5e6f",
        certificate=ca.sign_csr(make_csr(key), "5f0c1a2b3c4d5e6f"),
        ca=ca.ca_pem,
        key=key,
        curator_addresses=["192.168.1.10:5000", "203.0.113.7:5000"],
        signing_key="ab" * 32,
        credential="secret-credential",
        manifest_url=f"https://192.168.1.10:5000/manifest/{group}.json",
    )


def test_a_saved_membership_loads_back_with_private_modes(tmp_path: Path) -> None:
    client = tmp_path / "client"
    m = membership(tmp_path / "curator", client)
    save_membership(client, m)
    assert load_memberships(client) == [m]
    assert mode(client) == mode(client / "groups") == 0o700
    assert mode(client / "member.key") == mode(client / "groups" / "family.json") == 0o600
    assert sorted(p.name for p in (client / "groups").iterdir()) == ["family.json"]
    other = dataclasses.replace(
        m,
        group="friends",
        credential=None,
        peers=["10.0.0.2:6882"],
        dht_public_key="ab" * 32,
        dht_secret="cd" * 32,
    )
    save_membership(client, other)
    assert load_memberships(client) == [m, other]


def test_no_groups_folder_is_no_membership(tmp_path: Path) -> None:
    assert load_memberships(tmp_path) == []


def test_the_member_key_is_made_once(tmp_path: Path) -> None:
    key = member_key(tmp_path)
    assert member_key(tmp_path) == key
    assert mode(tmp_path / "member.key") == 0o600


def test_another_key_than_the_homes_is_refused(tmp_path: Path) -> None:
    client = tmp_path / "client"
    m = membership(tmp_path / "curator", client)
    save_membership(client, m)
    with pytest.raises(GroupError, match="another key"):
        save_membership(client, dataclasses.replace(m, group="x", key=b"other"))
    assert not (client / "groups" / "x.json").exists()


def test_an_unreadable_group_file_is_skipped_and_the_others_load(tmp_path: Path) -> None:
    client = tmp_path / "client"
    m = membership(tmp_path / "curator", client)
    save_membership(client, m)
    folder = client / "groups"
    (folder / "junk.json").write_text("{")
    (folder / "list.json").write_text("[]")
    renamed = json.loads((folder / "family.json").read_text())
    (folder / "renamed.json").write_text(json.dumps(renamed))
    renamed["group"] = "cut"
    del renamed["ca"]
    (folder / "cut.json").write_text(json.dumps(renamed))
    assert load_memberships(client) == [m]


def test_without_the_member_key_no_group_loads(tmp_path: Path) -> None:
    client = tmp_path / "client"
    save_membership(client, membership(tmp_path / "curator", client))
    (client / "member.key").unlink()
    assert load_memberships(client) == []


@pytest.mark.parametrize("group", ["..", ".hidden", "a b", "tab\tname", "x" * 65, "é"])
def test_a_group_name_the_config_would_refuse_is_refused_here_too(
    tmp_path: Path, group: str
) -> None:
    """A curator's join answer names the group: it becomes a file name on the client, so
    it follows the config's one rule (GROUP_RE), not a looser one of its own."""
    with pytest.raises(GroupError):
        check_group_name(group)
