"""What a stranger gets from a member's session, per kind of torrent (native_notes/privacy.md).

    .venv/bin/python -m benchmarks.privacy_stranger [--size-mib 4] [--wait 10]

A member session seeds one file ("Grandma 80th birthday.mkv") as each kind of
torrent: plain, plain from a session that forces MSE encryption (in/out_enc_policy
forced), BEP 27 private, SSL (group CA in the info dict), SSL + private.
A stranger who knows the info hash and both of the member's ports then tries:

- lt magnet -> plain port: a real libtorrent session, magnet + connect_peer;
- lt magnet, foreign CA -> SSL port: the magnet with `root_certificate` of its
  own CA and a certificate from it (so it dials TLS with the right SNI);
- lt .torrent, foreign cert -> SSL port: it has the .torrent (e.g. a revoked
  member kept it), so it trusts the group CA, but its cert is from another CA;
- lt .torrent, expired group cert / wrong SAN: certificates from the group CA
  that expired yesterday, or whose SAN is neither `*` nor the torrent name;
- raw BT -> plain port / -> SSL port: our own BitTorrent handshake, extension
  handshake asking for ut_metadata, interested, a request for piece 0;
- raw TLS (SNI = info hash, no cert) / (SNI = another hash) -> SSL port;
- raw BT probe: 1-byte requests answered by reject_request (fast extension) give
  the piece size, the number of pieces and the exact size; then 64 blocks.

Prints one Markdown table: metadata (name) and payload bytes each attempt got.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import random_file
from benchmarks.privacy_lab import (
    MiB,
    Peer,
    Pki,
    Torrent,
    build,
    cert_subject,
    issue,
    load_average,
    make_ca,
    print_rows,
    raw_peer,
    raw_probe,
    seeding,
    wait,
)

NAME = "Grandma 80th birthday.mkv"
KINDS = ("plain", "plain, MSE forced", "private", "ssl", "ssl+private")
# libtorrent's pe_settings: 0 = forced (no plaintext peer is accepted), 2 = RC4 only
MSE_FORCED = {"in_enc_policy": 0, "out_enc_policy": 0, "allowed_enc_level": 2}


def lt_stranger(
    tmp: Path,
    member: Peer,
    ih: str,
    *,
    torrent: Torrent | None,
    root: bytes | None,
    cert: Pki | None,
    ssl_port: bool,
    seconds: float,
) -> str:
    """A libtorrent stranger: returns 'name=<what it learnt> bytes=<payload>'."""
    stranger = Peer("stranger", cert=cert)
    try:
        save = tmp / f"stranger-{os.urandom(4).hex()}"
        sih = stranger.add(torrent, save, magnet_ih=ih, root_certificate=root)
        stranger.connect(sih, member.ssl_port if ssl_port else member.port)
        got = lambda: stranger.status(sih).total_payload_download > 0  # noqa: E731
        wait(got, [member, stranger], seconds, raise_on_timeout=False)
        st = stranger.status(sih)
        if torrent is not None:
            meta = "had the .torrent"
        else:
            meta = f"metadata: {st.name!r}" if st.has_metadata else "no metadata"
        return f"{meta}, {st.total_payload_download} B"
    finally:
        stranger.close()


@dataclass(frozen=True)
class Group:
    """The group's CA and the certificates the strangers try."""

    ca: Pki
    foreign: Pki  # another CA with the same subject: only the key differs
    expired: Pki  # from the group CA, expired yesterday
    wrong_san: Pki  # from the group CA, SAN neither "*" nor the torrent name


def make_group() -> Group:
    """A group CA, a foreign CA and the odd certificates."""
    ca, foreign = make_ca("g"), make_ca("g")
    two_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    return Group(
        ca, foreign, issue(ca, "x", not_before=two_days_ago, days=1), issue(ca, "x", dns="other")
    )


def lt_attempts(
    tmp: Path, member: Peer, ih: str, torrent: Torrent, group: Group, kind: str, seconds: float
) -> dict[str, str]:
    """Every libtorrent stranger against one torrent."""
    plans: list[tuple[str, Torrent | None, bytes | None, Pki | None, bool]] = [
        ("lt magnet -> plain port", None, None, None, False),
        ("lt magnet, foreign CA+cert -> SSL port", None, group.foreign.cert_pem,
         issue(group.foreign, "s"), True),
        ("lt .torrent, foreign cert -> SSL port", torrent, None, issue(group.foreign, "s"), True),
        ("lt .torrent, no cert -> SSL port", torrent, None, None, True),
        ("lt .torrent, expired group cert -> SSL port", torrent, None, group.expired, True),
        ("lt .torrent, group cert SAN=other -> SSL port", torrent, None, group.wrong_san, True),
    ]  # fmt: skip
    out = {}
    for label, known, root, cert, ssl_port in plans:
        if "ssl" not in kind and known is not None:
            out[label] = "n/a"  # a plain .torrent holds no CA: nothing to dial TLS with
            continue
        out[label] = lt_stranger(
            tmp, member, ih, torrent=known, root=root, cert=cert, ssl_port=ssl_port,
            seconds=seconds,
        )  # fmt: skip
    return out


def raw_attempts(
    member: Peer, ih: str, group: Group, seconds: float, certs_seen: set[str]
) -> dict[str, str]:
    """Every hand-made BitTorrent / TLS stranger against one torrent."""
    other = f"{int(ih, 16) ^ 1:040x}"
    plans: list[tuple[str, int, str | None, Pki | None]] = [
        ("raw BT -> plain port", member.port, None, None),
        ("raw BT -> SSL port", member.ssl_port, None, None),
        ("raw TLS SNI=ih, no cert -> SSL port", member.ssl_port, ih, None),
        ("raw TLS SNI=ih, foreign cert -> SSL port", member.ssl_port, ih,
         issue(group.foreign, "s")),
        ("raw TLS SNI=other hash -> SSL port", member.ssl_port, other, None),
    ]  # fmt: skip
    out = {}
    for label, port, sni, cert in plans:
        raw = raw_peer(port, ih, tls_sni=sni, client_cert=cert, timeout=min(seconds, 5.0))
        member.pump()
        out[label] = raw.summary()
        if raw.server_cert:
            certs_seen.add(cert_subject(raw.server_cert))
    probe = raw_probe(member.port, ih, blocks=64, timeout=seconds * 3)
    out["raw BT probe -> plain port (1-byte requests, then 64 blocks)"] = (
        f"piece size {probe.piece_size}, {probe.pieces} pieces, size {probe.size} B"
        f" in {probe.requests} requests; {probe.block_bytes} B of data"
    )
    return out


def run(size: int, seconds: float) -> None:
    """Seed each kind of torrent and try every stranger against it."""
    tmp = Path(tempfile.mkdtemp(prefix="privacy-stranger-"))
    group = make_group()
    data = random_file(tmp / "seed" / NAME, size)
    plain_member = Peer("member", cert=issue(group.ca, "m1"))
    mse_member = Peer("member", cert=issue(group.ca, "m1"), extra=MSE_FORCED)
    results: dict[str, dict[str, str]] = {}
    certs_seen: set[str] = set()
    for kind in KINDS:
        member = mse_member if "MSE" in kind else plain_member
        root = group.ca.cert_pem if "ssl" in kind else None
        torrent = build(data, root, private="private" in kind)
        ih = member.add(torrent, data.parent, seed=True)
        wait(seeding(member, ih), [member], 10, "seeding")
        if "ssl" in kind:
            wait(lambda m=member: m.need_cert > 0, [member], 10, "need cert")
        found = lt_attempts(tmp, member, ih, torrent, group, kind, seconds)
        found.update(raw_attempts(member, ih, group, seconds, certs_seen))
        for label, text in found.items():
            results.setdefault(label, {})[kind] = text
        member.session.remove_torrent(member.handles.pop(ih))
    rows: list[list[object]] = [["attempt", *KINDS]]
    rows += [[label, *(by_kind.get(k, "") for k in KINDS)] for label, by_kind in results.items()]
    print(f"file {size} B, {seconds:.0f} s per libtorrent attempt; load {load_average()}")
    print_rows(rows)
    print("certificates a stranger was shown:", "; ".join(sorted(certs_seen)) or "none")
    plain_member.close()
    mse_member.close()
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=4)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds per lt stranger")
    args = parser.parse_args()
    run(args.size_mib * MiB, args.wait)


if __name__ == "__main__":
    main()
