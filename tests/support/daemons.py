"""Starting and stopping what tests run beside the receiver: processes, servers, leftovers.

Every daemon a test starts (dockerd, docker-registry, a token service, a proxy) is started
and stopped through these helpers, so each one dies with the test process, logs to a file,
stops politely then firmly, and leaves no process, mount or directory behind.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

STOP_TIMEOUT = 20.0
REGISTRY_START_TIMEOUT = 15.0


class StackUnavailable(Exception):
    """What a test needs cannot be had here (no engine, no registry, not root, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Closing:
    """A context manager that calls `close()` on the way out; subclasses define close()."""

    def close(self) -> None:
        """Stop everything this object started."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing): one process at a time fills a
    cache that several test runs share."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def die_with_parent() -> None:
    """In a child before exec: the kernel sends it SIGTERM if the test process dies first."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(
    args: list[str], log: Path, *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session, its output appended to `log`.

    The fork happens on one long-lived thread: the parent-death signal fires when the
    *thread* that forked the child ends, so a daemon started from a short-lived thread
    (a pool's worker, say) would be killed with that thread.
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daemon-spawn")
    return _spawner.submit(_spawn_now, args, log, env).result()


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn_now(
    args: list[str], log: Path, env: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    # Output goes to a file, not a pipe: nobody would drain a pipe, and an open pipe
    # left at exit is a ResourceWarning (an error under the test suite's filters).
    # A new session keeps a terminal's Ctrl-C from reaching the daemon before
    # close() has removed the containers and mounts.
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> bool:
    """Stop a process we started: SIGTERM, wait, then SIGKILL; True if it exited politely."""
    if proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mounts_under(root: Path) -> list[str]:
    """Mount points below `root`, deepest first (so parents are not busy when unmounted)."""
    prefix = str(root.resolve()) + "/"
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" ")
            if len(fields) > 4:
                # mountinfo escapes spaces and other specials as octal, e.g. "\040".
                point = fields[4].encode().decode("unicode_escape")
                if point.startswith(prefix):
                    found.add(point)
    return sorted(found, key=len, reverse=True)


def unmount_all(root: Path) -> bool:
    """Unmount everything below `root` (lazily if it is busy); True when nothing is left."""
    umount = shutil.which("umount", path="/usr/bin:/bin:/usr/sbin:/sbin") or "umount"
    for point in mounts_under(root):
        if subprocess.run([umount, point], capture_output=True, check=False).returncode:
            subprocess.run([umount, "-l", point], capture_output=True, check=False)
    return not mounts_under(root)


def remove_tree(root: Path) -> bool:
    """Unmount what is left below `root`, then delete it; False (and nothing deleted) if a
    mount stays, since deleting through a bind mount would delete the host's files."""
    if not unmount_all(root):
        return False
    shutil.rmtree(root, ignore_errors=True)
    return True


def processes_mentioning(marker: str) -> dict[int, list[str]]:
    """The command lines (argv) of every other process whose command line holds `marker`."""
    needle = marker.encode()
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found[int(entry.name)] = cmdline.decode(errors="replace").split("\0")
    return found


def kill_processes_mentioning(marker: str) -> dict[int, list[str]]:
    """SIGKILL every process whose command line holds `marker` (a daemon's private path);
    the argv of each killed. After a daemon is killed, its helpers (containerd shims) may
    survive."""
    killed: dict[int, list[str]] = {}
    for pid, argv in processes_mentioning(marker).items():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed[pid] = argv
    return killed


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] = lambda: True,
    log: Path | None = None,
) -> None:
    """Poll `ready` every 0.1 s; raise RuntimeError (with the log's tail) on time-out or
    when `alive` says the daemon died meanwhile."""
    deadline = time.monotonic() + timeout
    while not ready():
        tail = f"; tail of {log}:\n{log_tail(log)}" if log is not None else ""
        if not alive():
            raise RuntimeError(f"{what} exited while starting{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f}s{tail}")
        time.sleep(0.1)


def engine_answers(docker_host: str, timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers `/_ping` at `docker_host` (unix:// or tcp://)."""
    # Plain sockets rather than a Docker client: a client that fails in its constructor
    # (it asks the API version) leaves a session behind, a ResourceWarning later.
    scheme, _, where = docker_host.partition("://")
    try:
        if scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = where
        else:
            host, _, port = where.rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (host, int(port))
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except (OSError, ValueError):
        return False
    return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]


def registry_answers(address: str, timeout: float = 1.0) -> bool:
    """Whether the registry at `host:port` answers `/v2/` with 200."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def registry_config(address: str, root: Path, **extra: Any) -> dict[str, Any]:
    """A docker-registry configuration serving `address`, storing under `root` (deletes
    allowed), plus `extra` top-level sections (`auth`, ...)."""
    return {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": address},
        **extra,
    }


def serve_registry(
    tmp: Path,
    name: str,
    settings: Callable[[str], Mapping[str, Any]],
    ready: Callable[[str], bool] = registry_answers,
    host: str = "127.0.0.1",
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``docker-registry`` on a free port of `host`; return its host:port and process.

    `settings` maps the ``HOST:PORT`` address to the registry's configuration, which is
    written to ``<tmp>/<name>.yml``; the log goes to ``<tmp>/<name>.log``. `ready` tells
    whether the registry at an address answers (default: ``/v2/`` answers 200).
    """
    log = tmp / f"{name}.log"
    config = tmp / f"{name}.yml"
    # The free port may be taken between probing and binding; try a few times.
    for _attempt in range(5):
        address = f"{host}:{free_port()}"
        # JSON is YAML, and needs no YAML library.
        config.write_text(json.dumps(settings(address)))
        proc = spawn(["docker-registry", "serve", str(config)], log)
        try:
            deadline = time.monotonic() + REGISTRY_START_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                if ready(address):
                    return address, proc
                time.sleep(0.1)
        except BaseException:
            stop_process(proc, timeout=5)
            raise
        stop_process(proc, timeout=5)
    raise RuntimeError(f"docker-registry did not start; tail of {log}:\n{log_tail(log)}")


class PlainHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that answers a TLS ClientHello as a plain HTTP server does.

    containerd's resolver (Docker on the containerd image store) tries HTTPS first even
    on a loopback registry, and falls back to HTTP only when the answer to its ClientHello
    begins with `HTTP/`, as Go's servers send; Python's handler would answer an HTML body
    with no status line, and the pull would fail.
    """

    def handle(self) -> None:
        first = self.rfile.peek(1)[:1]  # type: ignore[attr-defined]
        if first == _TLS_HANDSHAKE:
            self.wfile.write(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request")
            self.close_connection = True
            return
        super().handle()


_TLS_HANDSHAKE = b"\x16"  # the record type a ClientHello starts with


class LoopbackServer(Closing):
    """An HTTP server on 127.0.0.1 (a free port) in a thread of its own; a context manager.

    `handler` is a BaseHTTPRequestHandler class; its requests reach this object as
    `self.server.owner`, so the object holding the server's state answers them.
    """

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler], owner: object) -> None:
        self.httpd = _Httpd(handler, owner)
        self.port = int(self.httpd.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        # A short poll interval keeps close() quick.
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and wait for the thread."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


class _Httpd(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler], owner: object) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), handler)
