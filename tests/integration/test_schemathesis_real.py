"""Schemathesis against the live server, driven by the served OpenAPI description: no 5xx,
answers conform to the schema (status codes, content types, bodies), auth is never ignored."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.service import ReceiverProcess
from tests.support.stack import Stack
from tests.support.workspaces import receiver_env

# positive_data_acceptance expects schema-valid requests to succeed; the webhook route
# cannot (its HMAC is not expressible in OpenAPI), so every generated delivery gets 401.
EXCLUDED = "positive_data_acceptance"


def test_the_live_server_conforms_to_its_openapi(stack: Stack, tmp_path: Path) -> None:
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('ws')}-"
    env = {**receiver_env(stack, runtime, prefix), "GITHUB_WEBHOOK_SECRET": "schemathesis"}
    server = ReceiverProcess(env, tmp_path / "serve.log")
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary is not None, "schemathesis is part of the test extra"
    try:
        server.wait_ready("/healthz")
        token = server.admin_token(ttl=600)
        done = subprocess.run(
            [
                binary,
                "run",
                f"{server.base}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED,
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
        )
    finally:
        assert server.stop(timeout=60) == 0
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Traceback" not in server.log()
