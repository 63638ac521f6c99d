"""The same manifest route on well-kept Python HTTP servers, for benchmarks/connections.py.

    python -m benchmarks.http_anchors waitress|cheroot|uvicorn|hypercorn PORT BODY_FILE ETAG

Serves `GET /manifest/bench.json` like the curator: the body with its ETag, 304
to a matching If-None-Match, and with `?wait=N` a matching request is held up
to N seconds (nothing changes during a benchmark, so it ends in a 304). Each
server runs with the settings its documentation offers against slow and idle
clients (listed in SETTINGS), and ends a held request early when it can tell
that the client left (waitress' `client_disconnected`, ASGI's
`http.disconnect`). Run it with a Python that has the server installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

SETTINGS = {
    "waitress": "threads=64, connection_limit=1024, channel_timeout=10, cleanup_interval=1, "
    "channel_request_lookahead=1, backlog=1024",
    "cheroot": "numthreads=64, timeout=10, request_queue_size=1024",
    "uvicorn": "h11, timeout_keep_alive=10, backlog=1024",
    "hypercorn": "asyncio, keep_alive_timeout=10, read_timeout=10, backlog=1024",
}


def _wait(query: str, if_none_match: str | None, etag: str) -> float:
    """Seconds to hold this request (0: answer at once)."""
    wait = float(parse_qs(query).get("wait", ["0"])[0])
    return wait if if_none_match == etag else 0.0


def wsgi_app(body: bytes, etag: str) -> Any:
    """A WSGI app; a held request sleeps in 0.1 s steps on its worker thread."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/manifest/bench.json":
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        wait = _wait(environ.get("QUERY_STRING", ""), environ.get("HTTP_IF_NONE_MATCH"), etag)
        if wait > 0:
            gone = environ.get("waitress.client_disconnected", lambda: False)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not gone():
                time.sleep(0.1)
            start_response("304 Not Modified", [("ETag", etag)])
            return [b""]
        headers = [("Content-Type", "application/json"), ("ETag", etag)]
        start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return app


def asgi_app(body: bytes, etag: str) -> Any:
    """An ASGI app; a held request awaits `http.disconnect` for up to its wait."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        if scope["path"] != "/manifest/bench.json":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        inm = headers.get(b"if-none-match", b"").decode() or None
        wait = _wait(scope["query_string"].decode(), inm, etag)
        if wait > 0:
            await receive()  # the (empty) request body
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(receive(), wait)  # http.disconnect when the client left
            start = {
                "type": "http.response.start",
                "status": 304,
                "headers": [(b"etag", etag.encode())],
            }
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        out = [(b"content-type", b"application/json"), (b"etag", etag.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


def serve(name: str, port: int, body: bytes, etag: str) -> None:
    """Run server `name` on 127.0.0.1:`port` until killed."""
    if name == "waitress":
        import waitress  # noqa: PLC0415

        waitress.serve(
            wsgi_app(body, etag), host="127.0.0.1", port=port, threads=64,
            connection_limit=1024, channel_timeout=10, cleanup_interval=1,
            channel_request_lookahead=1, backlog=1024, _quiet=True,
        )  # fmt: skip
    elif name == "cheroot":
        from cheroot import wsgi  # noqa: PLC0415

        server = wsgi.Server(
            ("127.0.0.1", port), wsgi_app(body, etag), numthreads=64, timeout=10,
            request_queue_size=1024,
        )  # fmt: skip
        server.start()
    elif name == "uvicorn":
        import uvicorn  # noqa: PLC0415

        uvicorn.run(
            asgi_app(body, etag), host="127.0.0.1", port=port, http="h11", loop="asyncio",
            timeout_keep_alive=10, backlog=1024, log_level="warning",
        )  # fmt: skip
    elif name == "hypercorn":
        from hypercorn.asyncio import serve as hyper_serve  # noqa: PLC0415
        from hypercorn.config import Config  # noqa: PLC0415

        config = Config.from_mapping(
            bind=[f"127.0.0.1:{port}"], keep_alive_timeout=10, read_timeout=10, backlog=1024,
            loglevel="WARNING",
        )  # fmt: skip
        asyncio.run(hyper_serve(asgi_app(body, etag), config))
    else:
        raise SystemExit(f"unknown server {name!r}; one of {', '.join(SETTINGS)}")


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]).read_bytes(), sys.argv[4])
