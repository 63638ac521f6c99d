"""The state dir is private: folders 0700, files 0600, whatever the umask.

The process umask is left alone (placed media must stay readable by Jellyfin);
every file and folder meshmedia makes in its state dir is created or set with
its mode here instead. `secure_state_dir` runs at each start of a daemon and
tightens what an older meshmedia (or a umask of 000) left open, with a log line.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
OURS = ("state.db", "state.db-wal", "state.db-shm", "token", "signing.pub")
"""The state dir's own files. `signing.key` is not here: a key others could read is
refused by signing.load_key with the chmod to run, never silently tightened."""
OUR_FOLDERS = ("manifests", "torrents", "dht")


def private_dir(path: Path) -> bool:
    """Create `path` (and missing parents) and give it mode 0700; True when an existing
    folder had another mode."""
    path = Path(path)
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    return _set_mode(path, FOLDER_MODE) and existed


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """os.open a file that is (or becomes) mode 0600 exactly; returns the fd."""
    fd = os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write a whole file with mode 0600 (no fsync)."""
    with os.fdopen(open_private(path), "wb") as out:
        out.write(data)


def secure_state_dir(state_dir: Path) -> None:
    """Create the state dir 0700, or tighten an existing one and what meshmedia keeps in
    it (folders 0700, files 0600), saying what it changed."""
    state_dir = Path(state_dir)
    before = stat.S_IMODE(state_dir.stat().st_mode) if state_dir.is_dir() else None
    if private_dir(state_dir):
        log.warning(
            "state dir %s had mode %04o (open to other users); set it to %04o",
            state_dir,
            before,
            FOLDER_MODE,
        )
    changed = sum(_set_mode(state_dir / name, FILE_MODE) for name in OURS)
    for name in OUR_FOLDERS:
        changed += _tighten_tree(state_dir / name)
    if changed:
        log.warning(
            "set %d file(s) and folder(s) in %s to modes %04o/%04o",
            changed,
            state_dir,
            FILE_MODE,
            FOLDER_MODE,
        )


def _tighten_tree(top: Path) -> int:
    if not top.is_dir() or top.is_symlink():
        return 0
    changed = int(_set_mode(top, FOLDER_MODE))
    for folder, dirs, files in os.walk(top):
        for name in dirs:
            changed += _set_mode(Path(folder) / name, FOLDER_MODE)
        for name in files:
            changed += _set_mode(Path(folder) / name, FILE_MODE)
    return changed


def _set_mode(path: Path, mode: int) -> bool:
    """chmod `path` (never through a link) unless it has `mode`; True when changed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return False
    os.chmod(path, mode)
    return True
