"""Run the receiver as its own process (`serve`) for tests, the demo and benchmarks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemons import free_port


class ReceiverProcess:
    """`python -m receiver serve` on 127.0.0.1, its output in a log file."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Start it; `cwd` is where `receiver` is imported from (another checkout, say)."""
        self.env = dict(env)
        self.log_path = log_path
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "receiver", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
            )

    def wait_ready(self, path: str = "/readyz", timeout: float = 30) -> None:
        """Wait until `path` answers 200; raise with the log if the process dies or stalls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"receiver exited early:\n{self.log()}")
            try:
                if httpx.get(self.base + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"receiver did not answer {path}:\n{self.log()}")

    def admin_token(self, ttl: int = 300, subject: str = "admin") -> str:
        """Mint an admin token with the CLI, as an operator would."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "receiver",
                "admin-token",
                "--ttl",
                str(ttl),
                "--subject",
                subject,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def status(self, token: str) -> dict[str, Any]:
        """`GET /admin/status` with an admin token; the JSON it answers (200 or it fails)."""
        answer = httpx.get(
            f"{self.base}/admin/status", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        if answer.status_code != 200:
            raise AssertionError(f"/admin/status answered {answer.status_code}: {answer.text}")
        body: dict[str, Any] = answer.json()
        return body

    def refresh(self, token: str, **body: Any) -> httpx.Response:
        """`POST /admin/workspace-images/refresh` with an admin token and a JSON body."""
        return httpx.post(
            f"{self.base}/admin/workspace-images/refresh",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=180,
        )

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait, and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        """Everything the receiver wrote so far."""
        return self.log_path.read_text(errors="replace")


def wait_for(
    what: str, check: Callable[[], object], server: ReceiverProcess, timeout: float = 90
) -> None:
    """Poll `check` until it is true; on time-out fail with the receiver's log."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; receiver log:\n{server.log()}")
        time.sleep(0.05)
