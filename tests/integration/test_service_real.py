"""The service end to end: `serve` answers the admin route and refreshes real containers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.service import ReceiverProcess
from tests.support.stack import Published, Stack
from tests.support.workspaces import ADMIN_KEY, receiver_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(stack: Stack) -> tuple[str, str, Published]:
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('ws')}-"
    stack.track_container(prefix)
    v1 = stack.publish(f"org/workspace-template-{runtime}", version="v1")
    stack.run_container(f"{prefix}one", v1.ref)
    stack.run_container(f"{prefix}two", v1.ref)
    return runtime, prefix, v1


def test_serve_refreshes_through_the_admin_route(
    stack: Stack, workspace: tuple[str, str, Published], tmp_path: Path
) -> None:
    """A minted token opens the route; the answer lists what was recreated; SIGTERM exits 0."""
    runtime, prefix, _ = workspace
    server = ReceiverProcess(receiver_env(stack, runtime, prefix), tmp_path / "serve.log")
    try:
        server.wait_ready("/healthz")
        token = server.admin_token(ttl=120)
        v2 = stack.publish(f"org/workspace-template-{runtime}", version="v2")
        with httpx.Client(base_url=server.base, timeout=120) as http:
            assert http.get("/readyz").status_code == 200
            denied = http.post("/admin/workspace-images/refresh")
            assert denied.status_code == 401
            response = http.post(
                "/admin/workspace-images/refresh",
                json={"runtimes": [runtime]},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["recreated"] == [f"{prefix}one", f"{prefix}two"]
        assert body["failed"] == {}
        assert body["digests"] == {runtime: v2.digest}
        for name in ("one", "two"):
            container = stack.client.api.inspect_container(f"{prefix}{name}")
            assert container["Image"] == v2.image_id
            assert container["State"]["Running"] is True
    finally:
        code = server.stop(timeout=30)
    assert code == 0
    log_text = server.log()
    assert token not in log_text
    assert ADMIN_KEY not in log_text


def test_host_script_refreshes_and_prints_json(
    stack: Stack, workspace: tuple[str, str, Published]
) -> None:
    """scripts/refresh-workspace-images.sh RUNTIME refreshes and prints the result JSON."""
    runtime, prefix, _ = workspace
    env = receiver_env(stack, runtime, prefix)
    del env["RUNTIMES"]
    v2 = stack.publish(f"org/workspace-template-{runtime}", version="v2")
    script = str(ROOT / "scripts" / "refresh-workspace-images.sh")
    done = subprocess.run([script, runtime], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["recreated"] == [f"{prefix}one", f"{prefix}two"]
    assert result["digests"] == {runtime: v2.digest}

    again = subprocess.run([script, runtime], env=env, capture_output=True, text=True, check=False)
    assert json.loads(again.stdout)["recreated"] == []

    shown = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0
    assert "Usage: scripts/refresh-workspace-images.sh" in shown.stdout
