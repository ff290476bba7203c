"""A fault-injecting proxy in front of a Docker engine's unix socket, for tests.

Point a client's ``DOCKER_HOST`` at ``EngineProxy.docker_host`` and the proxy forwards
every byte to the real engine, both ways, until told otherwise:

- ``down()`` takes the engine away: the listening socket closes (a connect is refused)
  and every open connection is cut; ``up()`` brings it back;
- ``cut_on(Cut(...))`` cuts the engine at a chosen moment: when a request line matches a
  pattern (on its Nth match), either before the request reaches the engine or right after
  the engine's answer has begun (its status line and headers reach the client, its body
  does not), then drops that connection and, unless told not to, goes down.

The client side of each connection is parsed only at request boundaries: request line
and headers, then a Content-Length or chunked body, forwarded as it arrives. The engine's
answers are copied as they come (pull progress streams), never parsed, except that a cut
"on response" forwards them only up to the end of their headers. An ``Upgrade`` request
(attach, exec) turns its connection into a plain byte copy.

This module must not import pytest: scripts and benchmarks may use it too.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.support.daemons import Closing

__all__ = ["Cut", "EngineProxy", "request_pattern"]

_ACCEPT_POLL = 0.05
_CHUNK = 65536
_HEAD_LIMIT = 1 << 20  # request headers larger than this are not an engine client's


def request_pattern(method: str, path: str) -> str:
    """A regex for request lines of `method` on an API `path` of any version, e.g.
    ``request_pattern("POST", "/containers/[^/]+/start")``."""
    return rf"^{method} (?:/v[0-9.]+)?{path}(?:[?# ]|$)"


PULL = request_pattern("POST", "/images/create")
CREATE = request_pattern("POST", "/containers/create")
START = request_pattern("POST", "/containers/[^/?]+/start")
STOP = request_pattern("POST", "/containers/[^/?]+/stop")
RENAME = request_pattern("POST", "/containers/[^/?]+/rename")


@dataclass
class Cut:
    """Cut the engine at the `after`-th request whose request line matches `pattern`.

    `at="request"`: the request never reaches the engine. `at="response"`: the engine
    gets it and begins to answer; the client sees the answer's headers, then the cut.
    `down`: refuse everything afterwards, until ``up()``; else only that connection goes.
    """

    pattern: str
    after: int = 1
    at: Literal["request", "response"] = "request"
    down: bool = True


class EngineProxy(Closing):
    """A unix-socket proxy to `upstream` (``unix:///path`` or a path); a context manager."""

    def __init__(self, upstream: str, directory: Path | None = None) -> None:
        self.upstream = upstream.removeprefix("unix://")
        # Unix socket paths are short (108 bytes): a fresh directory directly under /tmp.
        self._dir = Path(tempfile.mkdtemp(prefix="ep-", dir=directory or "/tmp"))
        self.path = self._dir / "engine.sock"
        self.docker_host = f"unix://{self.path}"
        self.seen: list[str] = []  # every request line, in order
        self.fired: list[str] = []  # the request lines a cut fired on
        self._lock = threading.Lock()
        self._cut: Cut | None = None
        self._matches = 0
        self._conns: set[_Connection] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._accepting = threading.Event()
        self._closed = False
        self.up()

    # -- control -------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """Whether the proxy takes connections."""
        with self._lock:
            return self._listener is not None

    def up(self) -> None:
        """Take connections again (a fresh listening socket at the same path)."""
        with self._lock:
            if self._listener is not None or self._closed:
                return
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(str(self.path))
                listener.listen(128)
                listener.settimeout(_ACCEPT_POLL)
            except BaseException:
                listener.close()
                raise
            self._listener = listener
            self._accepting.set()
            self._acceptor = threading.Thread(
                target=self._accept_loop, args=(listener,), name="engine-proxy-accept"
            )
            self._acceptor.start()

    def down(self) -> None:
        """The engine is gone: connects are refused and every open connection is cut."""
        for conn in self._go_down():
            conn.join()

    def _go_down(self) -> list[_Connection]:
        """Close the listener and cut every connection, without waiting for their threads."""
        with self._lock:
            listener, acceptor = self._listener, self._acceptor
            self._listener, self._acceptor = None, None
            self._accepting.clear()
            conns = list(self._conns)
        if acceptor is not None:
            acceptor.join()
        if listener is not None:
            # The socket file stays: a connect to it is refused, as to a dead daemon's.
            listener.close()
        for conn in conns:
            conn.cut()
        return conns

    def cut_on(self, cut: Cut | None) -> None:
        """Arm a cut (None disarms it); its match count starts from zero."""
        with self._lock:
            self._cut = cut
            self._matches = 0

    def close(self) -> None:
        """Stop everything: listener, connections, threads; remove the socket directory."""
        with self._lock:
            self._closed = True
        self.down()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            conn.cut()
            conn.join()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- inside ----------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(self.upstream)
            except OSError:
                engine.close()
                client.close()
                continue
            conn = _Connection(self, client, engine)
            with self._lock:
                if not self._accepting.is_set():
                    conn.close_sockets()
                    continue
                # Connections are joined at close(); finished ones need no more care.
                self._conns = {c for c in self._conns if c.alive()}
                self._conns.add(conn)
            conn.start()

    def _on_request(self, line: str) -> Cut | None:
        """Record a request line; the cut that fires on it, if any (and disarm it)."""
        with self._lock:
            self.seen.append(line)
            cut = self._cut
            if cut is None or re.search(cut.pattern, line) is None:
                return None
            self._matches += 1
            if self._matches < cut.after:
                return None
            self._cut = None
            self.fired.append(line)
            return cut

    def _fire(self, conn: _Connection, cut: Cut) -> None:
        """Carry out a cut that fired on `conn` (from one of its threads: no joins here)."""
        if cut.down:
            self._go_down()
        conn.cut()


class _Connection:
    """One client connection and its own connection to the engine, two pumping threads."""

    def __init__(self, proxy: EngineProxy, client: socket.socket, engine: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.engine = engine
        self._lock = threading.Lock()
        self._open = True
        # A cut "on response" waiting for the engine's next answer to begin.
        self._on_response: Cut | None = None
        self._requests = threading.Thread(target=self._pump_requests, name="engine-proxy-req")
        self._answers = threading.Thread(target=self._pump_answers, name="engine-proxy-ans")

    def start(self) -> None:
        self._requests.start()
        self._answers.start()

    def cut(self) -> None:
        """Shut both sockets down; each pump sees the end and finishes."""
        with self._lock:
            if not self._open:
                return
            for sock in (self.client, self.engine):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def alive(self) -> bool:
        return self._requests.is_alive() or self._answers.is_alive()

    def join(self) -> None:
        for thread in (self._requests, self._answers):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join()

    def close_sockets(self) -> None:
        with self._lock:
            self._open = False
            self.client.close()
            self.engine.close()

    def _pump_answers(self) -> None:
        """Engine to client, as it comes; a pending cut fires once the headers are through."""
        pending_head = b""
        try:
            while True:
                data = self.engine.recv(_CHUNK)
                if not data:
                    break
                cut = self._on_response
                if cut is None:
                    self.client.sendall(data)
                    continue
                pending_head += data
                end = pending_head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                self.client.sendall(pending_head[: end + 4])
                self.proxy._fire(self, cut)
                break
        except OSError:
            pass
        finally:
            # The client hears the end; the request side finishes on its own.
            self.cut()

    def _pump_requests(self) -> None:
        """Client to engine, request by request; a cut may fire at a request line."""
        try:
            self._parse_and_forward()
        except (OSError, ValueError):
            pass
        finally:
            self.cut()
            self._answers.join()
            self.close_sockets()

    def _parse_and_forward(self) -> None:
        buf = bytearray()
        # States: "head", "body" (`left` bytes), "size" (chunk size line), "data" (`left`
        # bytes of a chunk and its CRLF), "trailer" (lines up to an empty one), "raw".
        state, left = "head", 0
        while True:
            data = self.client.recv(_CHUNK)
            if not data:
                return
            buf += data
            while buf:
                if state == "raw":
                    self.engine.sendall(buf)
                    buf.clear()
                elif state == "head":
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > _HEAD_LIMIT:
                            raise ValueError("request head too large")
                        break
                    head = bytes(buf[: end + 4])
                    del buf[: end + 4]
                    line, headers = _parse_head(head)
                    cut = self.proxy._on_request(line)
                    if cut is not None and cut.at == "request":
                        self.proxy._fire(self, cut)
                        return
                    if cut is not None:
                        self._on_response = cut
                    self.engine.sendall(head)
                    if "upgrade" in headers.get("connection", "").lower():
                        state = "raw"
                    elif "chunked" in headers.get("transfer-encoding", "").lower():
                        state = "size"
                    elif int(headers.get("content-length", "0") or "0") > 0:
                        state, left = "body", int(headers["content-length"])
                elif state in ("body", "data"):
                    take = min(left, len(buf))
                    self.engine.sendall(buf[:take])
                    del buf[:take]
                    left -= take
                    if left == 0:
                        state = "head" if state == "body" else "size"
                else:  # "size" or "trailer": one line at a time
                    end = buf.find(b"\r\n")
                    if end < 0:
                        break
                    line_bytes = bytes(buf[: end + 2])
                    del buf[: end + 2]
                    self.engine.sendall(line_bytes)
                    if state == "trailer":
                        if line_bytes == b"\r\n":
                            state = "head"
                        continue
                    size = int(line_bytes.split(b";", 1)[0].strip(), 16)
                    state, left = ("trailer", 0) if size == 0 else ("data", size + 2)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The request line and the headers (lower-case names) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers
