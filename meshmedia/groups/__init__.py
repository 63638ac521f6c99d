"""Private groups (issue 14, native_notes/privacy.md 3): a group's CA on the curator and
a joined group's credentials on a client. No libtorrent and no HTTP here: the engine
takes the PEM bytes, the curator and the client wire them in."""

from meshmedia.groups.authority import GroupAuthority, make_csr, new_member_key
from meshmedia.groups.membership import Membership, load_memberships, save_membership

__all__ = [
    "GroupAuthority",
    "Membership",
    "load_memberships",
    "make_csr",
    "new_member_key",
    "save_membership",
]
