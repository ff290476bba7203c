"""A local incoming webhook for NOTIFY_URL: it keeps every JSON body it is sent.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

from tests.support.daemons import Closing, LoopbackServer


class Sink(Closing):
    """Answers every POST with 200 and keeps its JSON body in `received`."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_Handler, self)
        self.url = f"http://{self._server.address}/services/hook"

    def keep(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(body)

    def close(self) -> None:
        """Stop serving."""
        self._server.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        owner = getattr(self.server, "owner", None)
        assert isinstance(owner, Sink)
        owner.keep(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""
