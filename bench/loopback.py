"""The benchmarks' fake upstreams: a JSON HTTP server on 127.0.0.1, served by a thread while in a ``with`` block.

Shared by ``bench/fanout.py`` (a rate-limited upstream), ``bench/whoop_upstream.py`` (WHOOP's API and token
endpoint) and ``bench/local_load.py`` (a slow upstream), with ``max_in_window`` to read what they recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class JsonHandler(BaseHTTPRequestHandler):
    """The loopback upstreams' shared answer: a JSON body with its length, and no access log."""

    def _answer(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


class LoopbackServer:
    """A ``JsonHandler`` served on a free 127.0.0.1 port: listening from construction, answering inside
    ``with`` (a thread serves it), shut down on ``__exit__``."""

    def __init__(self, handler: type[JsonHandler], name: str) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def max_in_window(times: Sequence[float], window: float) -> int:
    """Most events in any half-open window of ``window`` seconds (two pointers over sorted times)."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
