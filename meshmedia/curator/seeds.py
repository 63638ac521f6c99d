"""The curator's seeds: `.torrent` bytes in the state database and their torrents in the engine.

The publisher decides what is published; the keeper makes the engine seed it
from the right folder, keeps the `.torrent` the HTTP module serves (table
`torrents`; a state dir of an older meshmedia has them as files in `torrents/`,
still read), and lets go of a torrent once no catalog entry uses it.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from meshmedia.engine import BuiltTorrent, Engine, SourceFile
from meshmedia.errors import EngineError, PublishError
from meshmedia.store import Store

log = logging.getLogger(__name__)

_INFO_HASH = re.compile(r"^[0-9a-f]{40}$")


class SeedKeeper:
    """Seeds published torrents and keeps their `.torrent` bytes in the store."""

    def __init__(self, torrent_dir: Path, store: Store, engine: Engine) -> None:
        """Keep torrents in `store` (whose catalog says which are in use); `torrent_dir`:
        where an older meshmedia kept them as files, read when the store has none."""
        self.torrent_dir = torrent_dir
        self._store = store
        self._engine = engine

    def torrent_bytes(self, info_hash: str) -> bytes | None:
        """The `.torrent` of a published item, or None."""
        if not _INFO_HASH.match(info_hash):
            return None
        kept = self._store.torrent(info_hash)
        if kept is not None:
            return kept
        return _old_torrent_file(self.torrent_dir / f"{info_hash}.torrent")

    def seed(
        self,
        built: BuiltTorrent,
        source: Path,
        files: Sequence[SourceFile],
        private_ca: bytes | None = None,
    ) -> None:
        """Keep `built`'s `.torrent` and seed it from `source`'s folder (a private group's
        SSL torrent with `private_ca`).

        Files hashed just now into this torrent are seeded as verified: libtorrent
        then does not hash each piece again on its first upload (seed_mode does).
        """
        if self.torrent_bytes(built.info_hash) != built.data:  # missing or damaged
            self._store.save_torrents([(built.info_hash, built.data)])
        verified = all(f.fresh for f in files)
        self.ensure_seeding(
            built.info_hash, source, built.data, verified=verified, private_ca=private_ca
        )

    def seed_many(
        self, seeds: Sequence[tuple[BuiltTorrent, Path, Sequence[SourceFile], bytes | None]]
    ) -> dict[str, str]:
        """seed() for each (built, source, files, private_ca) of a batch, the new torrents
        added to the engine together; returns the info hashes not seeding, with why."""
        refused: dict[str, str] = {}
        held: set[str] = set()
        new: list[tuple[bytes, Path, bool, bytes | None]] = []
        keep: list[tuple[str, bytes]] = []
        kept = self._store.torrents_kept([built.info_hash for built, *_ in seeds])
        for built, source, files, ca in seeds:
            if self._engine.status(built.info_hash) is not None:
                held.add(built.info_hash)
                try:
                    self.seed(built, source, files, ca)
                except PublishError as exc:
                    refused[built.info_hash] = str(exc)
                continue
            if kept.get(built.info_hash) != built.data:  # a file of an older meshmedia too
                keep.append((built.info_hash, built.data))
            new.append((built.data, source.parent, all(f.fresh for f in files), ca))
        self._store.save_torrents(keep)
        answers = self._engine.add_seeds(new)
        for built, _source, _files, _ca in seeds:
            ih = built.info_hash
            if ih in held:
                continue
            if ih not in answers:
                refused[ih] = "not a torrent libtorrent reads"
            elif answers[ih] is not None:
                refused[ih] = f"libtorrent refused it: {answers[ih]}"
        return refused

    def ensure_seeding(
        self,
        info_hash: str,
        source: Path,
        data: bytes | None = None,
        *,
        verified: bool = False,
        private_ca: bytes | None = None,
    ) -> None:
        """Seed `info_hash` from `source`'s folder (re-pointed if it seeds from elsewhere);
        with `private_ca` only as that private group's SSL torrent."""
        status = self._engine.status(info_hash)
        if status is not None and Path(status.save_path) == source.parent:
            return
        if status is not None:
            self._engine.remove(info_hash)
        data = data or self.torrent_bytes(info_hash)
        if data is None:
            raise PublishError(f"the torrent {info_hash} is missing from {self.torrent_dir}")
        try:
            self._engine.add_seed(data, source.parent, verified=verified, private_ca=private_ca)
        except EngineError as exc:
            raise PublishError(f"cannot seed {source}: {exc}") from exc

    def release(self, info_hash: str) -> None:
        """Stop seeding a torrent no catalog entry uses any more, and drop its file."""
        if self._store.catalog_uses(info_hash):
            return
        if self._engine.status(info_hash) is not None:
            self._engine.remove(info_hash)
        self._store.delete_torrent(info_hash)
        (self.torrent_dir / f"{info_hash}.torrent").unlink(missing_ok=True)  # an older one's


def _old_torrent_file(path: Path) -> bytes | None:
    """The `.torrent` an older meshmedia kept as a file; None unless a readable regular
    file (a FIFO there would block the read for ever, a folder or a root-only file raise)."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        return path.read_bytes()
    except OSError:
        return None
