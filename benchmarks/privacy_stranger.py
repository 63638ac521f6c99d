"""What a stranger gets from a member's session, per kind of torrent (native_notes/privacy.md).

    .venv/bin/python -m benchmarks.privacy_stranger [--size-mib 4] [--wait 10]

A member session seeds one file ("Grandma 80th birthday.mkv") as each kind of
torrent: plain, BEP 27 private, SSL (group CA in the info dict), SSL + private.
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
- raw TLS (SNI = info hash, no cert) / (SNI = another hash) -> SSL port.

Prints one Markdown table: metadata (name) and payload bytes each attempt got.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

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
    random_file,
    raw_peer,
    raw_probe,
    seeding,
    wait,
)

NAME = "Grandma 80th birthday.mkv"
KINDS = ("plain", "private", "ssl", "ssl+private")


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


def run(size: int, seconds: float) -> None:
    """Seed each kind of torrent and try every stranger against it."""
    tmp = Path(tempfile.mkdtemp(prefix="privacy-stranger-"))
    ca, foreign = make_ca("g"), make_ca("g")  # same subject: only the key differs
    yesterday = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    expired = issue(ca, "x", not_before=yesterday, days=1)
    wrong_san = issue(ca, "x", dns="other-name")
    data = random_file(tmp / "seed" / NAME, size)
    member = Peer("member", cert=issue(ca, "m1"))
    rows: list[list[object]] = [["attempt", *KINDS]]
    results: dict[str, dict[str, str]] = {}
    certs_seen: set[str] = set()
    for kind in KINDS:
        torrent = build(data, ca.cert_pem if "ssl" in kind else None, private="private" in kind)
        ih = member.add(torrent, data.parent, seed=True)
        wait(seeding(member, ih), [member], 10, "seeding")
        if "ssl" in kind:
            wait(lambda: member.need_cert > 0, [member], 10, "need cert")
        other = f"{int(ih, 16) ^ 1:040x}"
        attempts = {
            "lt magnet -> plain port": dict(torrent=None, root=None, cert=None, ssl_port=False),
            "lt magnet, foreign CA+cert -> SSL port": dict(
                torrent=None, root=foreign.cert_pem, cert=issue(foreign, "s"), ssl_port=True
            ),
            "lt .torrent, foreign cert -> SSL port": dict(
                torrent=torrent, root=None, cert=issue(foreign, "s"), ssl_port=True
            ),
            "lt .torrent, no cert -> SSL port": dict(
                torrent=torrent, root=None, cert=None, ssl_port=True
            ),
            "lt .torrent, expired group cert -> SSL port": dict(
                torrent=torrent, root=None, cert=expired, ssl_port=True
            ),
            "lt .torrent, group cert SAN=other-name -> SSL port": dict(
                torrent=torrent, root=None, cert=wrong_san, ssl_port=True
            ),
        }
        for label, args in attempts.items():
            if "ssl" not in kind and "SSL port" in label and "magnet" not in label:
                results.setdefault(label, {})[kind] = "n/a"
                continue
            results.setdefault(label, {})[kind] = lt_stranger(
                tmp,
                member,
                ih,
                seconds=seconds,
                **args,  # type: ignore[arg-type]
            )
        raws = {
            "raw BT -> plain port": dict(port=member.port),
            "raw BT -> SSL port": dict(port=member.ssl_port),
            "raw TLS SNI=ih, no cert -> SSL port": dict(port=member.ssl_port, tls_sni=ih),
            "raw TLS SNI=ih, foreign cert -> SSL port": dict(
                port=member.ssl_port, tls_sni=ih, client_cert=issue(foreign, "s")
            ),
            "raw TLS SNI=other hash -> SSL port": dict(port=member.ssl_port, tls_sni=other),
        }
        for label, args in raws.items():
            raw = raw_peer(info_hash=ih, timeout=min(seconds, 5.0), **args)  # type: ignore[arg-type]
            member.pump()
            results.setdefault(label, {})[kind] = raw.summary()
            if raw.server_cert:
                certs_seen.add(cert_subject(raw.server_cert))
        probe = raw_probe(member.port, ih, blocks=64, timeout=seconds * 3)
        results.setdefault("raw BT probe -> plain port (1-byte requests, then 64 blocks)", {})[
            kind
        ] = (
            f"piece size {probe.piece_size}, {probe.pieces} pieces, size {probe.size} B"
            f" (true {size}) in {probe.requests} requests; {probe.block_bytes} B of data"
        )
        member.handles[ih].pause()
        member.session.remove_torrent(member.handles.pop(ih))
    for label, by_kind in results.items():
        rows.append([label, *(by_kind.get(k, "") for k in KINDS)])
    print(f"file {size // MiB} MiB, {seconds:.0f} s per libtorrent attempt; load {load_average()}")
    print_rows(rows)
    print("certificates a stranger was shown:", "; ".join(sorted(certs_seen)) or "none")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=4)
    parser.add_argument("--wait", type=float, default=10.0, help="seconds per lt stranger")
    args = parser.parse_args()
    run(args.size_mib * MiB, args.wait)


if __name__ == "__main__":
    main()
