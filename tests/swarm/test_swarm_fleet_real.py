"""Swarm mode on a real three-node swarm (dockerd in network namespaces on a bridge, the
registry on the bridge): a signed delivery rolls workspaces pinned to every node, a broken
image stops at the canary, a node down mid-update converges once it is back, a restart
updates nothing, a private image reaches every node with registry auth."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.types
import pytest

from tests.support import deliveries
from tests.support.service import ReceiverProcess, wait_for
from tests.support.stack import Published
from tests.support.swarm import Swarm
from tests.support.swarm_runtime import SwarmRuntime

from .conftest import runtime_on, start_swarm

SECRET = "swarm-webhook-secret"
SUFFIXES = ("1", "2", "3")


@pytest.fixture(scope="module")
def swarm3() -> Iterator[Swarm]:
    yield from start_swarm(3)


@pytest.fixture
def runtime(swarm3: Swarm) -> Iterator[SwarmRuntime]:
    """A runtime on the three-node swarm (this module's, not the one-node swarm's)."""
    yield from runtime_on(swarm3)


def serve(
    runtime: SwarmRuntime, tmp_path: Path, log: str = "serve.log", **env: str
) -> ReceiverProcess:
    server = ReceiverProcess(runtime.env(GITHUB_WEBHOOK_SECRET=SECRET, **env), tmp_path / log)
    server.wait_ready()
    return server


def deliver(server: ReceiverProcess, runtime: SwarmRuntime, digest: str) -> str:
    return deliveries.deliver_publish(server.base, runtime.name, digest, SECRET)


def one_per_node(runtime: SwarmRuntime) -> tuple[Published, list[str]]:
    """v1, and a workspace service on it pinned to each node."""
    image = runtime.publish("v1")
    names = [
        runtime.service(suffix, image.pinned, node)
        for suffix, node in zip(SUFFIXES, runtime.swarm.nodes, strict=True)
    ]
    runtime.wait_running(dict.fromkeys(names, image), timeout=60)
    return image, names


def record(server: ReceiverProcess, token: str, runtime: SwarmRuntime) -> dict[str, Any]:
    found: dict[str, Any] = server.status(token)["runtimes"][runtime.name]
    return found


def update_starts(runtime: SwarmRuntime) -> dict[str, str | None]:
    """When each service's last update began (None: never updated)."""
    return {
        name: (runtime.inspect(name).get("UpdateStatus") or {}).get("StartedAt")
        for name in runtime.services
    }


def test_a_delivery_rolls_every_node_and_a_restart_updates_nothing(
    runtime: SwarmRuntime, tmp_path: Path
) -> None:
    v1, names = one_per_node(runtime)
    bystander = runtime.named_service(f"db-{runtime.name}", v1.pinned, runtime.swarm.nodes[1])
    server = serve(runtime, tmp_path)
    try:
        v2 = runtime.publish("v2")
        delivered = time.monotonic()
        assert deliver(server, runtime, v2.digest) == "scheduled"
        took = runtime.wait_running(dict.fromkeys(names, v2), timeout=90)
        converged = time.monotonic() - delivered
        token = server.admin_token()
        wait_for(
            "the refresh's record", lambda: record(server, token, runtime)["last_refresh"], server
        )
        last = record(server, token, runtime)["last_refresh"]
    finally:
        assert server.stop() == 0
    assert last["ok"], last
    assert sorted(last["recreated"]) == names
    assert runtime.spec_image(bystander) == v1.pinned
    assert runtime.running_images()[bystander] == {v1.image_id}
    print(
        f"\nswarm, 3 nodes: delivery to every workspace service on the new digest "
        f"{converged:.1f} s (per service from the delivery: "
        + ", ".join(f"{took[n]:.1f} s" for n in names)
        + ")"
    )

    # A restart (poller on): boot seeding reads the pinned digests; nothing is updated.
    before = update_starts(runtime)
    server = serve(runtime, tmp_path, "restart.log", IMAGE_AUTO_REFRESH="true")
    try:
        token = server.admin_token()
        wait_for("a poll tick", lambda: server.status(token)["poller"]["ticks"] >= 1, server)
        seen = record(server, token, runtime)["seen"]
    finally:
        assert server.stop() == 0
    assert seen == v2.digest
    assert update_starts(runtime) == before


def test_a_broken_image_stops_at_the_canary_and_is_quarantined(
    runtime: SwarmRuntime, tmp_path: Path
) -> None:
    v1, names = one_per_node(runtime)
    server = serve(runtime, tmp_path)
    try:
        token = server.admin_token()
        v2 = runtime.publish("v2", cmd=["/bin/no-such-command"])
        assert deliver(server, runtime, v2.digest) == "scheduled"
        wait_for("the quarantine", lambda: record(server, token, runtime)["quarantined"], server)
        assert deliver(server, runtime, v2.digest) == "quarantined"
        held = record(server, token, runtime)
    finally:
        assert server.stop() == 0
    assert held["quarantined"]["digest"] == v2.digest
    assert list(held["last_refresh"]["failed"]) == [names[0]]
    assert runtime.spec_images() == dict.fromkeys(names, v1.pinned)
    starts = update_starts(runtime)
    assert starts[names[0]] is not None
    assert starts[names[1]] is None
    assert starts[names[2]] is None
    runtime.wait_running(dict.fromkeys(names, v1), timeout=60)


def test_a_node_down_mid_update_converges_once_it_is_back(
    runtime: SwarmRuntime, tmp_path: Path
) -> None:
    swarm = runtime.swarm
    _, names = one_per_node(runtime)
    down = swarm.nodes[2]
    server = serve(
        runtime,
        tmp_path,
        SWARM_UPDATE_TIMEOUT="10",
        RETRY_MIN_SECONDS="2",
        RETRY_MAX_SECONDS="4",
    )
    try:
        swarm.stop_node(down)
        swarm.wait_nodes("down", [down], timeout=30)
        v2 = runtime.publish("v2")
        assert deliver(server, runtime, v2.digest) == "scheduled"
        runtime.wait_running(dict.fromkeys(names[:2], v2), timeout=90)
        token = server.admin_token()
        wait_for(
            "the bounded wait on the down node to end",
            lambda: (record(server, token, runtime)["last_refresh"] or {}).get("failed"),
            server,
        )
        failed = record(server, token, runtime)["last_refresh"]["failed"]
        swarm.start_node(down)
        swarm.wait_nodes("ready", [down], timeout=60)
        runtime.wait_running({names[2]: v2}, timeout=120)
        wait_for(
            "the book to settle",
            lambda: record(server, token, runtime)["seen"] == v2.digest,
            server,
        )
        settled = record(server, token, runtime)
    finally:
        assert server.stop() == 0
    assert list(failed) == [names[2]]
    assert settled["quarantined"] is None  # a node going away says nothing of the image
    assert runtime.spec_images() == dict.fromkeys(names, v2.pinned)


def forget_pull_credentials(
    swarm: Swarm, names: list[str], image: Published, registry: str
) -> None:
    """Swarm keeps the registry auth an update last carried: send wrong credentials with a
    forced update of each service (its image is on its node already), so that only the
    receiver's own X-Registry-Auth can bring the next image to the nodes."""
    client = docker.DockerClient(base_url=swarm.manager.base_url)
    api: Any = client.api
    try:
        # docker-py sends X-Registry-Auth from the credentials it holds for the registry.
        api._auth_configs.add_auth(registry, {"username": "puller", "password": "wrong"})
        for name in names:
            current = api.inspect_service(name)
            api.update_service(
                current["ID"],
                version=current["Version"]["Index"],
                task_template=docker.types.TaskTemplate(
                    container_spec=docker.types.ContainerSpec(image=image.pinned),
                    force_update=1,
                ),
                fetch_current_spec=True,
            )
        for name in names:
            outcome = swarm.wait_update(name, previous=None, timeout=60)
            assert outcome.state == "completed", outcome
    finally:
        client.close()


def test_a_private_image_is_pulled_by_every_node_with_registry_auth(
    swarm3: Swarm, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    registry = swarm3.start_registry(f"private-{secrets.token_hex(3)}", {"puller": password})
    with SwarmRuntime(swarm3, registry=registry, auth=("puller", password)) as runtime:
        swarm3.manager.client.login("puller", password, registry=registry)
        v1, names = one_per_node(runtime)
        forget_pull_credentials(swarm3, names, v1, registry)
        server = serve(runtime, tmp_path, GHCR_USER="puller", GHCR_TOKEN=password)
        try:
            v2 = runtime.publish("v2")
            assert deliver(server, runtime, v2.digest) == "scheduled"
            runtime.wait_running(dict.fromkeys(names, v2), timeout=90)
        finally:
            assert server.stop() == 0
        nodes = {c.node for name in names for c in swarm3.service_containers(name)}
        assert nodes == {node.name for node in swarm3.nodes}
