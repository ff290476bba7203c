"""Shared helpers: statistics, progress lines, pinned child processes, machine facts."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

# Two cores: every server under test runs on one, every load generator on the other.
SERVER_CPU = 1
LOAD_CPU = 0

_started = time.monotonic()


def say(message: str) -> None:
    """A progress line, with the seconds since the run started."""
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements (and the values themselves)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-repetition ratios of paired (interleaved) measurements, summarised."""
    paired = [a / b for a, b in zip(numerators, denominators, strict=False) if b]
    return summary(paired)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int, args: Sequence[str]) -> list[str]:
    """`args` run under taskset on one CPU (every thread of it, from its first instruction)."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) <= cpu:
        return list(args)
    return ["taskset", "-c", str(cpu), *args]


class Child:
    """A server process the benchmark started, pinned to the server CPU, output to a log."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        cpu: int | None = SERVER_CPU,
        port: int = 0,
    ) -> None:
        self.name = name
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        command = pinned(cpu, args) if cpu is not None else list(args)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def wait_http(self, url: str, timeout: float = 30, ok: Sequence[int] = (200,)) -> None:
        """Wait until `url` answers one of `ok`; raise with the log if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                if httpx.get(url, timeout=1).status_code in ok:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url}:\n{self.log()}")

    def rss_kib(self) -> int:
        """Resident memory of the process, KiB (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, wait, SIGKILL if it will not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _version(args: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine() -> dict[str, Any]:
    """What this machine is: CPU, cores, memory, OS and the versions of what is measured."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    os_name = "unknown"
    os_release = Path("/etc/os-release")
    if os_release.exists():
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    import starlette
    import uvicorn

    from receiver.server import OPTIONS

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "uvicorn_http": f"{OPTIONS['http']} and {OPTIONS['loop']}",
        "server_python": server_python(),
        "node": _version(["node", "--version"]),
        "wrk": _version(["wrk", "--version"]).split(" [")[0],
        "docker": _version(["docker", "version", "--format", "{{.Client.Version}}"]),
    }


def commit() -> str:
    """The receiver's git commit, with "+changes" when the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "receiver"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def python() -> str:
    """This interpreter (the dev venv): load generators, proxies, helpers."""
    return sys.executable


RUNTIME_VENV = ROOT / ".venv-runtime"


def server_python() -> str:
    """The interpreter the servers under test run on: `.venv-runtime`, which scripts/bench
    makes with the receiver's runtime dependencies only, as deploy/Dockerfile does (the dev
    venv's test tools would add their imports to the memory figures); this one without it."""
    candidate = RUNTIME_VENV / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def server_pythonpath(first: str = "") -> str:
    """PYTHONPATH for a server run from outside the checkout: `first` (a variant under
    test), then the checkout, so its receiver/ and bench/ are the ones imported."""
    return os.pathsep.join(p for p in (first, str(ROOT)) if p)
