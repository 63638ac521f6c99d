"""--on-placed and --webhook as real processes: a command per placed item (no shell, its
failure logged, never fatal) and JSON events per placed item and per failure, retried
with backoff, at a stand-in receiver (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.daemons import MIB, Client, Curator, Daemon, answers
from tests.helpers import free_port, random_file, wait_for

HOOK = """\
import os, sys
with open(sys.argv[1], "a") as out:
    out.write("|".join([os.environ["MESHMEDIA_PATH"], os.environ["TITLE"],
                        os.environ["GROUP"], os.environ["SIZE"], sys.argv[2]]) + "\\n")
sys.exit(3 if "Second" in os.environ["TITLE"] else 0)
"""


class Receiver(ThreadingHTTPServer):
    """Records each POSTed JSON body; answers 500 to the first `failures` requests."""

    def __init__(self, failures: int) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.failures = failures
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.attempts += 1
        ok = self.server.attempts > self.server.failures
        if ok:
            self.server.bodies.append(json.loads(body))
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_hook_and_webhook_per_placed_item_and_failure(
    tmp_path: Path, stop_later: list[Daemon]
) -> None:
    curator = Curator(tmp_path / "curator")
    stop_later.append(curator)
    random_file(curator.share / "First.mkv", MIB, seed=1)
    random_file(curator.share / "Second.mkv", MIB // 2, seed=2)
    random_file(curator.share / "Bad.mkv", MIB // 2, seed=3)
    curator.start()
    items = {i["path"]: i for i in curator.wait_items(3)}
    items["Bad.mkv"]["xxh3"] = "cd" * 16  # verification fails: a failure event
    site = tmp_path / "site"
    site.mkdir()
    doc = {"group": "family", "version": 1, "items": list(items.values())}
    (site / "family.json").write_text(json.dumps(doc))
    port = free_port()
    plain = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    receiver = Receiver(failures=2)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    script, calls = tmp_path / "hook.py", tmp_path / "calls.txt"
    script.write_text(HOOK)
    try:
        url = f"http://127.0.0.1:{port}/family.json"
        wait_for(lambda: answers(url), timeout=30, interval=0.1)
        client = Client(tmp_path / "client", [url])
        webhook = f"http://127.0.0.1:{receiver.server_port}/api/webhook/secret-id"
        command = f"{sys.executable} {script} {calls} 'two words; $(not run)'"
        result = client.once("--on-placed", command, "--webhook", webhook, "--timeout", "60")
    finally:
        plain.terminate()
        plain.wait(timeout=30)
        receiver.shutdown()
        receiver.server_close()
    assert result.returncode == 1, result.stderr  # Bad.mkv failed verification
    assert "2 in place, 1 not" in result.stderr
    lines = sorted(calls.read_text().splitlines())
    media = client.media
    assert lines == [
        f"{media / 'First.mkv'}|First|family|{MIB}|two words; $(not run)",
        f"{media / 'Second.mkv'}|Second|family|{MIB // 2}|two words; $(not run)",
    ]
    assert "--on-placed" in result.stderr
    assert "exited 3" in result.stderr
    assert "secret-id" not in result.stderr  # the webhook URL is a secret
    assert receiver.attempts == len(receiver.bodies) + 2  # two 500s, retried
    events = {(b["event"], b["path"]) for b in receiver.bodies}
    assert events == {("placed", "First.mkv"), ("placed", "Second.mkv"), ("failed", "Bad.mkv")}
    failed = next(b for b in receiver.bodies if b["event"] == "failed")
    assert "XXH3 mismatch" in failed["reason"]
    assert failed["group"] == "family"
    assert failed["manifest"] == url
    placed = next(b for b in receiver.bodies if b["path"] == "First.mkv")
    assert placed["size"] == MIB
    assert placed["final"] == str(media / "First.mkv")
