"""Signed GitHub deliveries move real containers, once, after the answer has gone out."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import docker.errors
import httpx

from receiver.container import aside_name
from tests.support import deliveries
from tests.support.service import ReceiverProcess, wait_for
from tests.support.stack import Stack

SECRET = "integration-webhook-secret"


def image_of(stack: Stack, name: str) -> str | None:
    """The image the workspace called `name` runs; None while its swap has the name unbound
    (the old container waits under its aside name until the replacement is created)."""
    try:
        return str(stack.client.api.inspect_container(name)["Image"])
    except docker.errors.NotFound:
        return None


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
        body = deliveries.package_body(f"workspace-template-{runtime}", v2.digest, owner="Org")
        since_ns = time.time_ns()

        async def deliver_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post(
                            "/webhooks/github",
                            content=body,
                            headers=deliveries.headers(body, SECRET, delivery="d-1"),
                        )
                        for _ in range(30)
                    )
                )

        responses = asyncio.run(deliver_all())
        answered_ns = time.time_ns()

        assert [r.status_code for r in responses] == [202] * 30
        outcomes = sorted(r.json()["runtimes"][runtime] for r in responses)
        assert outcomes.count("scheduled") == 1
        assert set(outcomes) <= {"scheduled", "coalesced"}

        wait_for(
            "every swap to end on v2",
            lambda: all(
                image_of(stack, n) == v2.image_id and image_of(stack, aside_name(n)) is None
                for n in names
            ),
            server,
            timeout=60,
        )
        time.sleep(1.5)  # room for a wrongful second swap to show up in the events
        seen = stack.events(since_ns, prefix, ("create", "destroy"))
        assert sorted(e.name for e in seen if e.action == "create") == names
        # A swap ends when the old container (under its aside name) is removed; every
        # answer was in before the first of them ended (each swap takes over 3 s here).
        asides = {aside_name(n) for n in names}
        ended = [e.at for e in seen if e.action == "destroy" and e.name in asides]
        assert len(ended) == len(names)
        assert answered_ns < min(ended)

        unsigned = httpx.post(f"{server.base}/webhooks/github", content=body, timeout=10)
        assert unsigned.status_code == 401
    finally:
        assert server.stop() == 0
    assert SECRET not in server.log()
