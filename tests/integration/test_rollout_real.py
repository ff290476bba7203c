"""The rollout policy on the real engine and registry: a broken image is tried on one canary
and quarantined, never a restart storm; a registry outage is retried until the update is
applied, with no new trigger; opted-out and busy workspaces are left alone; notify mode
only reports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.container import ENABLE_LABEL, PRE_UPDATE_LABEL
from tests.support import deliveries
from tests.support.faults import Fault, FaultProxy
from tests.support.service import ReceiverProcess, wait_for
from tests.support.sink import Sink
from tests.support.stack import Published, Stack
from tests.support.workspaces import Runtime

SECRET = "rollout-webhook-secret"
NAMES = ("one", "two", "three")
EXITS_AT_ONCE = {"cmd": ["/bin/no-such-command"]}
UNHEALTHY = {"changes": ['HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/bin/false"]']}
BUSY_HOOK = "if [ -e /tmp/busy ]; then exit 75; fi"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


def serve(runtime: Runtime, tmp_path: Path, **settings: str) -> ReceiverProcess:
    env = runtime.env(GITHUB_WEBHOOK_SECRET=SECRET, SWAP_GRACE_SECONDS="2", **settings)
    server = ReceiverProcess(env, tmp_path / "serve.log")
    server.wait_ready()
    return server


def deliver(server: ReceiverProcess, runtime: Runtime, digest: str) -> str:
    """A signed `package` delivery of the runtime's tag at `digest`; what it did."""
    return deliveries.deliver_publish(server.base, runtime.name, digest, SECRET)


def book(server: ReceiverProcess, token: str, runtime: Runtime) -> dict[str, Any]:
    record: dict[str, Any] = server.status(token)["runtimes"][runtime.name]
    return record


def images(stack: Stack, runtime: Runtime) -> dict[str, tuple[str, bool] | None]:
    """Each workspace's image id and whether it runs (None while its swap has the name
    unbound)."""
    return {name: stack.running_image(f"{runtime.prefix}{name}") for name in NAMES}


def fleet(runtime: Runtime, **workspace: Any) -> Published:
    """v1 and the three workspaces on it."""
    v1 = runtime.publish("v1")
    for name in NAMES:
        runtime.workspace(name, v1, **workspace)
    return v1


def test_a_broken_image_found_by_the_poller_is_tried_once_and_quarantined(
    stack: Stack, tmp_path: Path
) -> None:
    """Poller every 10 s, three workspaces, a v2 whose command does not exist: one
    replacement in all, over several ticks and a redelivery; every workspace back on v1 and
    running; the digest quarantined."""
    runtime = Runtime.make(stack)
    v1 = fleet(runtime)
    server = serve(runtime, tmp_path, IMAGE_AUTO_REFRESH="true", POLL_INTERVAL="10")
    try:
        token = server.admin_token()
        since_ns = time.time_ns()
        v2 = runtime.publish("v2", **EXITS_AT_ONCE)
        wait_for("the quarantine", lambda: book(server, token, runtime)["quarantined"], server, 60)
        assert deliver(server, runtime, v2.digest) == "quarantined"
        ticks = server.status(token)["poller"]["ticks"]
        wait_for(
            "two more ticks", lambda: server.status(token)["poller"]["ticks"] >= ticks + 2, server
        )
        record = book(server, token, runtime)
    finally:
        assert server.stop() == 0
    events = stack.events(since_ns, runtime.prefix, ("create", "stop", "die", "start"))
    created = [e.name for e in events if e.action == "create"]
    assert created == [f"{runtime.prefix}one"], events
    assert images(stack, runtime) == {name: (v1.image_id, True) for name in NAMES}
    assert record["quarantined"]["digest"] == v2.digest
    assert record["retry_at"] is None
    assert record["seen"] == v1.digest
    print(
        f"broken image: {len(created)} replacement(s), "
        f"{sum(e.action in ('stop', 'die') for e in events)} stop/die events"
    )


def test_an_unhealthy_image_through_the_admin_route_is_tried_on_the_canary_only(
    stack: Stack, tmp_path: Path
) -> None:
    """Admin refresh onto an image whose health check fails: the canary is rolled back and
    the others wait; the digest is quarantined; a second admin refresh tries it again."""
    runtime = Runtime.make(stack)
    v1 = fleet(runtime)
    v2 = runtime.publish("v2", **UNHEALTHY)
    server = serve(runtime, tmp_path, SWAP_HEALTH_TIMEOUT="20")
    try:
        token = server.admin_token()
        since_ns = time.time_ns()
        answer = server.refresh(token, runtimes=[runtime.name])
        assert answer.status_code == 200, answer.text
        result = answer.json()
        record = book(server, token, runtime)
        again = server.refresh(token, runtimes=[runtime.name]).json()
    finally:
        assert server.stop() == 0
    canary = f"{runtime.prefix}one"
    assert list(result["failed"]) == [canary]
    assert "unhealthy" in result["failed"][canary]
    assert sorted(result["deferred"]) == [f"{runtime.prefix}three", f"{runtime.prefix}two"]
    assert record["quarantined"]["digest"] == v2.digest
    assert list(again["failed"]) == [canary]  # a person asked: attempted again
    created = [e.name for e in stack.events(since_ns, runtime.prefix)]
    assert created == [canary, canary]
    assert images(stack, runtime) == {name: (v1.image_id, True) for name in NAMES}


def test_a_registry_outage_during_a_webhook_is_retried_until_the_update_lands(
    stack: Stack, tmp_path: Path
) -> None:
    """No poller. The registry answers 500 when the delivery arrives and comes back 5 s
    later: the refresh is retried by itself and every workspace reaches v2, with no new
    trigger."""
    with FaultProxy(f"http://{stack.registry}") as proxy:
        runtime = Runtime.make(stack, registry=proxy.address)
        v1 = runtime.publish("v1")
        for name in NAMES:
            runtime.workspace(name, v1)
        server = serve(runtime, tmp_path, RETRY_MIN_SECONDS="1", RETRY_MAX_SECONDS="4")
        try:
            token = server.admin_token()
            v2 = runtime.publish("v2")
            proxy.set(Fault(status=500))
            assert deliver(server, runtime, v2.digest) == "scheduled"
            wait_for("a planned retry", lambda: book(server, token, runtime)["retry_at"], server)
            assert images(stack, runtime) == {name: (v1.image_id, True) for name in NAMES}
            time.sleep(5)
            proxy.set(None)
            wait_for(
                "every workspace on v2",
                lambda: images(stack, runtime) == {n: (v2.image_id, True) for n in NAMES},
                server,
                timeout=30,
            )
            wait_for("the book", lambda: book(server, token, runtime)["seen"] == v2.digest, server)
            record = book(server, token, runtime)
        finally:
            assert server.stop() == 0
    assert record["last_refresh"]["source"] == "retry"
    assert record["last_trigger"]["source"] == "webhook:package"
    assert record["retry_at"] is None


def test_an_opted_out_workspace_is_skipped(stack: Stack, tmp_path: Path) -> None:
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1")
    keep = runtime.workspace("keep", v1, labels={ENABLE_LABEL: "false"})
    moved = runtime.workspace("move", v1)
    v2 = runtime.publish("v2")
    server = serve(runtime, tmp_path)
    try:
        result = server.refresh(server.admin_token()).json()
    finally:
        assert server.stop() == 0
    assert result["skipped"] == {keep: f"opted out ({ENABLE_LABEL}=false)"}
    assert result["recreated"] == [moved]
    assert stack.client.api.inspect_container(keep)["Image"] == v1.image_id
    assert stack.client.api.inspect_container(moved)["Image"] == v2.image_id


def test_a_busy_workspace_defers_and_is_updated_once_it_is_idle(
    stack: Stack, tmp_path: Path
) -> None:
    """Its pre-update hook says 75 while /tmp/busy exists: untouched and deferred; once
    the task is done, the retry swaps it, with no new trigger."""
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1")
    busy = runtime.workspace("agent", v1, labels={PRE_UPDATE_LABEL: BUSY_HOOK})
    stack.exec(busy, "touch", "/tmp/busy")
    before = stack.client.api.inspect_container(busy)["Id"]
    server = serve(runtime, tmp_path, RETRY_MIN_SECONDS="1", RETRY_MAX_SECONDS="2")
    try:
        token = server.admin_token()
        v2 = runtime.publish("v2")
        assert deliver(server, runtime, v2.digest) == "scheduled"
        wait_for("a planned retry", lambda: book(server, token, runtime)["retry_at"], server)
        assert stack.client.api.inspect_container(busy)["Id"] == before
        stack.exec(busy, "rm", "/tmp/busy")
        wait_for(
            "the swap",
            lambda: stack.running_image(busy) == (v2.image_id, True),
            server,
            timeout=30,
        )
    finally:
        assert server.stop() == 0
    assert "deferred" in server.log()


def test_notify_mode_reports_a_new_digest_once_and_swaps_nothing(
    stack: Stack, tmp_path: Path, sink: Sink
) -> None:
    runtime = Runtime.make(stack)
    v1 = fleet(runtime)
    server = serve(runtime, tmp_path, REFRESH_MODE="notify", NOTIFY_URL=sink.url)
    try:
        token = server.admin_token()
        v2 = runtime.publish("v2")
        assert deliver(server, runtime, v2.digest) == "available"
        assert deliver(server, runtime, v2.digest) == "available"
        wait_for("the notification", lambda: sink.received, server)
        record = book(server, token, runtime)
        assert images(stack, runtime) == {name: (v1.image_id, True) for name in NAMES}
        applied = server.refresh(token).json()  # a person applies it
    finally:
        assert server.stop() == 0
    assert record["available"] == v2.digest
    told = [note for note in sink.received if note.get("available")]
    assert [note["digest"] for note in told] == [v2.digest]
    assert sorted(applied["recreated"]) == sorted(f"{runtime.prefix}{n}" for n in NAMES)
