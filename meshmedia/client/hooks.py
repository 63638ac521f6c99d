"""Tell the home what arrived: `--on-placed CMD` per placed item, `--webhook URL` events.

Both listen to the client's ItemEvents and do their work on a thread of their
own, so a slow command or receiver never holds up the sync. The command runs
without a shell (its words split like a shell would, once, when the setting is
read), with MESHMEDIA_PATH, MESHMEDIA_TITLE, MESHMEDIA_GROUP and MESHMEDIA_SIZE in
its environment (PATH, TITLE, GROUP, SIZE too, for scripts written for other
tools); its failure or a timeout is logged, never fatal. The webhook gets one JSON
POST per placed item and per failure, retried with exponential backoff; events
beyond MAX_QUEUE wait are dropped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import requests

from .events import Failed, Placed

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 300.0  # seconds an --on-placed command may run
MAX_QUEUE = 1000
WEBHOOK_TIMEOUT = 10.0
RETRIES = 5  # a webhook event is tried 1 + RETRIES times
BACKOFF = 1.0  # seconds before the first retry, doubling


class _Worker:
    """A daemon thread taking jobs from a bounded queue."""

    def __init__(self, name: str, work: Callable[[Any], None]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUE)
        self._work = work
        self.name = name
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def put(self, job: object) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            log.warning("%s: %d events waiting; dropping one", self.name, MAX_QUEUE)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._work(job)
            except Exception:  # a job's failure never ends the thread
                log.exception("%s failed", self.name)
            finally:
                self._queue.task_done()

    def join(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for the queued jobs; True when none is left."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks


class PlacedCommand:
    """`--on-placed CMD`: runs CMD once per placed item, never through a shell."""

    def __init__(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> None:
        """`argv`: the program and its arguments."""
        self.argv = list(argv)
        self.timeout = timeout
        self._worker = _Worker("on-placed", self._run)

    def __call__(self, event: Placed | Failed) -> None:
        """An ItemEvents listener: queue a placed item."""
        if isinstance(event, Placed):
            self._worker.put(event)

    def _run(self, event: Placed) -> None:
        values = {"PATH": str(event.final), "TITLE": event.title, "GROUP": event.group}
        values["SIZE"] = str(event.size)
        env = {**os.environ, **{f"MESHMEDIA_{k}": v for k, v in values.items()}}
        env.update({k: v for k, v in values.items() if k != "PATH"})  # PATH stays the search path
        try:
            done = subprocess.run(
                self.argv, env=env, timeout=self.timeout, check=False,
                stdin=subprocess.DEVNULL, capture_output=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("--on-placed %s for %s failed: %s", self.argv[0], event.path, exc)
            return
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-300:]
            log.error("--on-placed %s for %s exited %d: %s", self.argv[0], event.path,
                      done.returncode, tail)  # fmt: skip
        else:
            log.info("--on-placed %s ran for %s", self.argv[0], event.path)

    def join(self, timeout: float) -> bool:
        """Wait for the commands queued so far."""
        return self._worker.join(timeout)


def event_json(event: Placed | Failed) -> dict[str, Any]:
    """The webhook's body: {"event": "placed"|"failed", "path", "title", "group", ...}."""
    body = asdict(event)
    if isinstance(event, Placed):
        body["final"] = str(event.final)
    body["event"] = "placed" if isinstance(event, Placed) else "failed"
    body["manifest"] = body.pop("url")
    body["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return body


class Webhook:
    """`--webhook URL`: one JSON POST per placed item and per failure, with retries."""

    def __init__(
        self,
        url: str,
        *,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        stop: threading.Event | None = None,
    ) -> None:
        """POST to `url`; a 2xx answer delivers, anything else is retried `retries` times."""
        self.url = url
        self.retries, self.backoff = retries, backoff
        self._stop = stop or threading.Event()
        self._http = requests.Session()
        self._worker = _Worker("webhook", self._send)

    def __call__(self, event: Placed | Failed) -> None:
        """An ItemEvents listener: queue the event."""
        self._worker.put(event_json(event))

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        delay = self.backoff
        for attempt in range(self.retries + 1):
            problem = self._post(data)
            if problem is None:
                log.info("webhook: %s %s delivered", body["event"], body["path"])
                return
            if attempt == self.retries:
                break
            log.warning("webhook: %s; retry in %.0f s", problem, delay)
            if self._stop.wait(delay):
                return
            delay *= 2
        log.error("webhook: gave up on %s %s: %s", body["event"], body["path"], problem)

    def _post(self, data: bytes) -> str | None:
        headers = {"Content-Type": "application/json", "User-Agent": "meshmedia"}
        try:
            answer = self._http.post(self.url, data=data, headers=headers, timeout=WEBHOOK_TIMEOUT)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}"
        answer.close()
        return None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"

    def join(self, timeout: float) -> bool:
        """Wait for the events queued so far."""
        return self._worker.join(timeout)
