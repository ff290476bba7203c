"""A fault-injecting HTTP reverse proxy for tests: put it in front of a real registry (or a
token service) and make it answer 500, 404 or 429, stall, or refuse, for a number of
requests or until cleared.

This module must not import pytest: benchmarks and scripts use it too.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.daemons import Closing, LoopbackServer, PlainHandler

__all__ = ["Fault", "FaultProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """What the proxy does instead of forwarding.

    `status` answers that HTTP status (with `headers`); `delay` waits that many seconds
    before forwarding; `drop` closes the connection without an answer. `times` limits the
    fault to that many requests (None: until cleared); `methods` to those methods.
    """

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False
    times: int | None = None
    methods: tuple[str, ...] = ()


class FaultProxy(Closing):
    """Forwards every request to `upstream` (http://host:port) unless a fault applies."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault: Fault | None = None
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.upstream, timeout=60)
        self._server = LoopbackServer(_Handler, self)
        self.address = self._server.address

    def set(self, fault: Fault | None) -> None:
        """Apply a fault from the next request on (None clears it)."""
        with self._lock:
            self.fault = fault

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that applies to this request, counting it down."""
        with self._lock:
            self.seen.append(f"{method} {path}")
            fault = self.fault
            if fault is None or (fault.methods and method not in fault.methods):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.fault = None
            return fault

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> httpx.Response:
        """Send the request upstream and return the whole answer."""
        # A list, not a dict: the engine sends one Accept header per media type, and a
        # registry that sees only the last one may answer another manifest (another digest).
        sent = [(k, v) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}]
        return self._http.request(method, path, headers=sent, content=body or None)

    def close(self) -> None:
        """Stop serving and close the upstream client."""
        self._server.close()
        self._http.close()


class _Handler(PlainHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        proxy = getattr(self.server, "owner", None)
        assert isinstance(proxy, FaultProxy)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = proxy.take(self.command, self.path)
        if fault is not None and fault.drop:
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            payload = b'{"errors":[{"code":"INJECTED","message":"fault injected by the test"}]}'
            self.send_response(fault.status)
            for name, value in fault.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        try:
            answer = proxy.forward(self.command, self.path, self.headers, body)
        except httpx.HTTPError:
            self.send_error(502)
            return
        self.send_response(answer.status_code)
        for name, value in answer.headers.multi_items():
            if name.lower() not in _HOP_BY_HOP | {"content-length", "content-encoding"}:
                self.send_header(name, value)
        content = answer.content
        declared = answer.headers.get("content-length")
        length_out = declared if self.command == "HEAD" and declared else str(len(content))
        self.send_header("Content-Length", length_out)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the proxy records what it saw in `seen`."""
