"""The daemons of the private-group tests: a curator of one private group, joining homes."""

from __future__ import annotations

import re
from pathlib import Path

from tests.daemons import NETWORK, Daemon, answers
from tests.helpers import free_port, run_meshmedia, wait_for

CODE = re.compile(r"^MM[A-Z2-7]+$", re.MULTILINE)


class PrivateCurator(Daemon):
    """`meshmedia serve` of one private group, `family`, on every address."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, "serve")
        self.share = base / "share"
        self.share.mkdir(parents=True, exist_ok=True)
        self.state = base / "state"
        self.port, self.peer_port = free_port(), free_port()

    def start(self, *extra: str) -> None:
        self.spawn(
            "serve", "--share", f"family={self.share}", "--state-dir", str(self.state),
            "--host", "0.0.0.0", "--port", str(self.port), "--listen-port", str(self.peer_port),
            "--settle-time", "0.2", *NETWORK, *extra,
        )  # fmt: skip
        wait_for(lambda: answers(f"http://127.0.0.1:{self.port}/"), 60, 0.2, self.text)

    def invite(self, *extra: str) -> str:
        made = run_meshmedia(
            "invite", "--group", "family", "--state-dir", str(self.state),
            "--address", f"127.0.0.1:{self.port}", *extra,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        return CODE.findall(made.stdout)[0]

    def items(self) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/manifest/family.json"
        return list((answers(url) or {}).get("items", []))


def join(client_state: Path, code: str, *extra: str) -> tuple[int, str]:
    done = run_meshmedia("join", code, "--state-dir", str(client_state), *extra)
    return done.returncode, done.stdout + done.stderr


class Home(Daemon):
    """`meshmedia sync` (forever) of a joined home: only its state dir is given."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, "sync")
        self.state = base / "state"
        self.media = base / "media"
        self.status_port = free_port()

    def join(self, code: str) -> None:
        status, said = join(self.state, code, "--download-dir", str(self.media))
        assert status == 0, said

    def start(self) -> None:
        self.spawn(
            "sync", "--state-dir", str(self.state), "--listen-port", "0",
            "--status-port", str(self.status_port), "--min-free", "0", *NETWORK,
        )  # fmt: skip

    def placed(self) -> set[str]:
        items = (answers(f"http://127.0.0.1:{self.status_port}/status") or {}).get("items", [])
        return {i["path"] for i in items if i["state"] == "placed"}
