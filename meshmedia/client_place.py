"""The client's placement: adopt a file already in place, verify a finished download, move it.

`Placer` owns the end of an item's journey: the file at its final path
(`download_dir / item.path`) and the staging folder its torrent downloads into.
It reports what went wrong as one sentence and leaves the item's bookkeeping
(failed, placed) to `SyncClient`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .engine import Engine
from .errors import MeshmediaError
from .jellyfin import JellyfinNotifier
from .manifest import Item
from .placement import (
    digests,
    incomplete_dir,
    is_folder,
    link_for_adoption,
    matches,
    move_aside,
    placed_files,
    remove_tree,
    renames_for,
)
from .torrentinfo import torrent_files

log = logging.getLogger("meshmedia.client")  # the client's lines keep the client's name


class Placer:
    """Adopts files already in place and moves verified downloads into place."""

    def __init__(
        self, engine: Engine, download_dir: Path, notifier: JellyfinNotifier | None = None
    ) -> None:
        """Place under `download_dir` the downloads of `engine`; tell `notifier` of each."""
        self.engine = engine
        self.download_dir = download_dir
        self.notifier = notifier
        self.adopted: set[str] = set()  # info hashes seeded from a file already in place

    def adopt(self, item: Item, final: Path, ih: str, name: str | None) -> bool:
        """Link a verified file already at `final` into the staging folder; True if done."""
        if not (final.is_file() and matches(final, item.size, item.sha256, item.xxh3) is True):
            return False
        link_for_adoption(final, incomplete_dir(self.download_dir, ih), name or final.name)
        self.adopted.add(ih)
        log.info("%s is already in place and verified: adopting it", final)
        return True

    def place(self, item: Item, ih: str, final: Path) -> str | None:
        """Verify a finished download and rename it into place; None when placed.

        Otherwise returns what is wrong; a download that is not the item is deleted.
        """
        staging = incomplete_dir(self.download_dir, ih)
        indexed = self._torrent_files(ih)
        files = [(name, size) for _, name, size in indexed]
        problem = self._verify(item, ih, staging, files)
        if problem:
            log.error("%s: %s; deleting the download", item.path, problem)
            self.engine.remove(ih, delete_files=True)
            remove_tree(staging)
            return problem
        self._clear_way(final, staging, files)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine.relocate(ih, final.parent, renames_for(indexed, final))
        except MeshmediaError as exc:
            return f"cannot move into place: {exc}"
        remove_tree(staging)  # leftovers only: empty folders, an adoption's second link
        self.adopted.discard(ih)
        status = self.engine.status(ih)
        fetched = status.total_download if status else 0
        log.info("placed %s (%d bytes downloaded by this process)", final, fetched)
        if self.notifier is not None:
            self.notifier.notify(final)
        return None

    def _torrent_files(self, ih: str) -> list[tuple[int, str, int]]:
        """(index, name, size) of the torrent's real files (pad files left out)."""
        data = self.engine.torrent_bytes(ih)
        if data is None:
            return [(i, name, size) for i, (name, size) in enumerate(self.engine.files(ih))]
        return [(i, name, size) for i, name, size, pad in torrent_files(data) if not pad]

    def _verify(
        self, item: Item, ih: str, staging: Path, files: list[tuple[str, int]]
    ) -> str | None:
        """None when the download is the item, else what is wrong."""
        total = sum(size for _, size in files)
        if not files:
            return "the torrent has no files"
        if item.size is not None and total != item.size:
            return f"size mismatch: expected {item.size} bytes, the torrent has {total}"
        if item.sha256 and not is_folder(files) and ih not in self.adopted:
            actual = digests(staging / files[0][0]).sha256
            if actual != item.sha256:
                return f"SHA-256 mismatch: expected {item.sha256}, got {actual}"
        return None

    def _clear_way(self, final: Path, staging: Path, files: list[tuple[str, int]]) -> None:
        """Move aside anything at the final paths that is not this item's content."""
        if final.exists() and final.is_dir() != is_folder(files):
            move_aside(final, self.download_dir)
            return
        for (target, _), (name, _) in zip(placed_files(final, files), files, strict=True):
            source = staging / name
            if not target.exists() or (source.exists() and target.samefile(source)):
                continue
            move_aside(target, self.download_dir)
