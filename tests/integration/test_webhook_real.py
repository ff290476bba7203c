"""Signed GitHub deliveries move real containers, once, after the answer has gone out."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests.service import ReceiverProcess
from tests.stack import Stack

FIXTURE = (
    Path(__file__).parents[1]
    / "fixtures"
    / "github"
    / "package.published.container.multiarch-index.json"
)
SECRET = "integration-webhook-secret"


def package_delivery(owner: str, name: str, tag: str, digest: str) -> bytes:
    """The real multi-arch capture, pointed at our package, tag and digest."""
    payload: dict[str, Any] = copy.deepcopy(json.loads(FIXTURE.read_text()))
    package = payload["package"]
    package["name"] = name
    package["owner"]["login"] = owner
    version = package["package_version"]
    version["version"] = digest
    version["container_metadata"]["tag"] = {"name": tag, "digest": digest}
    return json.dumps(payload).encode()


def signed_headers(body: bytes, delivery: str) -> dict[str, str]:
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "package",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={signature}",
        "User-Agent": "GitHub-Hookshot/test",
    }


def image_of(stack: Stack, name: str) -> str:
    return str(stack.client.api.inspect_container(name)["Image"])


def test_duplicate_signed_deliveries_swap_each_container_once(stack: Stack, tmp_path: Path) -> None:
    """30 concurrent copies of one publish: all 202 at once, one swap per container."""
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('ws')}-"
    stack.track_container(prefix)
    repository = f"org/workspace-template-{runtime}"
    v1 = stack.publish(repository, version="v1")
    names = [f"{prefix}one", f"{prefix}two"]
    for name in names:
        stack.run_container(name, v1.ref)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RUNTIMES": runtime,
        "IMAGE_TEMPLATE": f"{stack.registry}/org/workspace-template-{{runtime}}:latest",
        "CONTAINER_PREFIX": prefix,
        "GITHUB_WEBHOOK_SECRET": f"old-secret,{SECRET}",
        "DOCKER_HOST": stack.docker_host,
        # The swap lasts several seconds, so 30 answers under load still precede its end.
        "SWAP_GRACE_SECONDS": "3",
        "SWAP_STOP_TIMEOUT": "1",
    }
    server = ReceiverProcess(env, tmp_path / "serve.log")
    try:
        server.wait_ready()
        v2 = stack.publish(repository, version="v2")
        body = package_delivery("Org", f"workspace-template-{runtime}", "latest", v2.digest)
        since_ns = time.time_ns()

        async def deliver_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post(
                            "/webhooks/github", content=body, headers=signed_headers(body, "d-1")
                        )
                        for _ in range(30)
                    )
                )

        responses = asyncio.run(deliver_all())
        answered_at = time.time()
        images_at_answer = {name: image_of(stack, name) for name in names}

        assert [r.status_code for r in responses] == [202] * 30
        outcomes = sorted(r.json()["runtimes"][runtime] for r in responses)
        assert outcomes.count("scheduled") == 1
        assert set(outcomes) <= {"scheduled", "coalesced"}
        # The answer went out before the swap finished (it takes over a second here).
        assert v1.image_id in images_at_answer.values()

        deadline = time.monotonic() + 60
        while any(image_of(stack, n) != v2.image_id for n in names):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        time.sleep(1.5)  # room for a wrongful second swap to show up in the events
        events = stack.client.api.events(
            since=since_ns // 1_000_000_000,
            until=int(time.time()) + 1,
            filters={"type": "container", "event": "create"},
            decode=True,
        )
        created = [e["Actor"]["Attributes"]["name"] for e in events if e["timeNano"] >= since_ns]
        assert sorted(n for n in created if n.startswith(prefix)) == names
        assert answered_at < time.time()

        unsigned = httpx.post(f"{server.base}/webhooks/github", content=body, timeout=10)
        assert unsigned.status_code == 401
    finally:
        assert server.stop() == 0
    assert SECRET not in server.log()
