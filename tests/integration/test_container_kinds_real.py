"""Every kind of workspace container through a swap on the real engine (README, "Container
kinds"): onto a good image each keeps its settings, data and run state; onto a broken one
each is left present, on the old image, in its old run state, with its data, and nothing
reports RESTORE FAILED."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from receiver.cli import build_engine
from receiver.refresh import RefreshService
from receiver.result import RefreshResult
from tests.support.stack import Published, Stack
from tests.support.workspaces import Runtime

# Stops on TERM or INT at once (busybox sleep as PID 1 ignores both).
QUICK_STOP = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 3600 & wait"]
# Healthy five seconds after its start, inside a start period of eight.
SLOW_START = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; (sleep 5; touch /tmp/ready) & sleep 3600 & wait",
]
SECOND = 1_000_000_000


@dataclass
class Kinds:
    """One runtime with a workspace of each kind on v1, and what was there before."""

    stack: Stack
    runtime: Runtime
    v1: Published
    aux: str
    before: dict[str, dict[str, Any]] = field(default_factory=dict)

    def name(self, kind: str) -> str:
        return f"{self.runtime.prefix}{kind}"

    def inspect(self, kind: str) -> dict[str, Any]:
        found = self.stack.named(self.name(kind))
        assert found is not None, f"{self.name(kind)} is gone"
        return found

    def data(self, kind: str, path: str) -> str:
        return self.stack.read_file(self.name(kind), f"{path}/f")


def ready_check(*, retries: int, start_period: int) -> dict[str, Any]:
    """A health check that passes once /tmp/ready exists (every second, after a start
    period of `start_period` seconds)."""
    return {
        "test": ["CMD", "test", "-e", "/tmp/ready"],
        "interval": SECOND,
        "timeout": SECOND,
        "retries": retries,
        "start_period": start_period * SECOND,
    }


def started(stack: Stack, name: str, image: Published, host: dict[str, Any], **create: Any) -> str:
    """Create and start `name` on `image` with no network, as a platform's API call would."""
    api = stack.client.api
    host_config = api.create_host_config(network_mode="none", **host)
    api.create_container(image.ref, name=name, host_config=host_config, **create)
    api.start(name)
    return name


def make_kinds(stack: Stack) -> Kinds:
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1", cmd=QUICK_STOP, volumes=["/anon"])
    stack.pull_local(v1.ref)
    kinds = Kinds(stack, runtime, v1, aux=f"{stack.unique('aux')}-")
    stack.track_container(kinds.aux)
    api = stack.client.api

    def create(kind: str, *, start: bool = True, **host: Any) -> str:
        config = ("healthcheck", "command", "stop_signal", "stop_timeout")
        extra = {key: host.pop(key) for key in config if key in host}
        name = kinds.name(kind)
        host.setdefault("network_mode", "none")
        api.create_container(v1.ref, name=name, host_config=api.create_host_config(**host), **extra)
        if start:
            api.start(name)
        return name

    volume = stack.unique("vol")
    create("autoremove", auto_remove=True, binds=[f"{volume}:/named"])
    stack.exec(kinds.name("autoremove"), "sh", "-c", "echo named > /named/f; echo anon > /anon/f")
    create(
        "slowhealth",
        command=SLOW_START,
        healthcheck=ready_check(retries=2, start_period=8),
    )
    create(
        "tuned",
        init=True,
        stop_signal="SIGINT",
        stop_timeout=3,
        read_only=True,
        tmpfs={"/tmp": "size=1m"},
        devices=["/dev/null:/dev/xnull:rwm"],
        cap_add=["NET_ADMIN"],
        cap_drop=["CHOWN"],
        restart_policy={"Name": "unless-stopped"},
    )
    create("paused")
    api.pause(kinds.name("paused"))
    create("stopped", start=False)
    owner = create("owner")
    owner_id = api.inspect_container(owner)["Id"]
    for mode in ("network", "pid"):
        side = f"{kinds.aux}{mode}"
        shared: dict[str, Any] = {"network_mode": f"container:{owner_id}"}
        if mode == "pid":
            shared = {"network_mode": "none", "pid_mode": f"container:{owner_id}"}
        api.create_container(
            v1.ref, name=side, command=QUICK_STOP, host_config=api.create_host_config(**shared)
        )
        api.start(side)
    for kind in ("autoremove", "slowhealth", "tuned", "paused", "stopped", "owner"):
        kinds.before[kind] = kinds.inspect(kind)
    return kinds


def refresh(kinds: Kinds, **settings: str) -> RefreshResult:
    return refresh_once(kinds.runtime, SWAP_GRACE_SECONDS="1", SWAP_HEALTH_TIMEOUT="2", **settings)


def refresh_once(runtime: Runtime, **settings: str) -> RefreshResult:
    """One refresh of the runtime, as the command line makes it."""
    resolved = runtime.settings(**settings)
    engine = build_engine(resolved)
    try:
        return RefreshService(resolved, engine).refresh()
    finally:
        engine.close()


def sidecars(kinds: Kinds) -> dict[str, tuple[str, bool]]:
    """Each sidecar's namespace owner (from its HostConfig) and whether it runs."""
    found = {}
    for mode, key in (("network", "NetworkMode"), ("pid", "PidMode")):
        inspect = kinds.stack.named(f"{kinds.aux}{mode}")
        assert inspect is not None
        owner = str(inspect["HostConfig"][key]).removeprefix("container:")
        found[mode] = (owner, bool(inspect["State"]["Running"]))
    return found


@pytest.fixture(scope="module")
def good(stack: Stack) -> tuple[Kinds, Published, RefreshResult]:
    kinds = make_kinds(stack)
    v2 = kinds.runtime.publish("v2", cmd=QUICK_STOP, volumes=["/anon"])
    return kinds, v2, refresh(kinds)


@pytest.fixture(scope="module")
def broken(stack: Stack) -> tuple[Kinds, RefreshResult]:
    kinds = make_kinds(stack)
    kinds.runtime.publish("v2", cmd=["/bin/no-such-command"], volumes=["/anon"])
    # No canary: every container's swap is tried, and each must be undone.
    return kinds, refresh(kinds, ROLLOUT_CANARY="0")


def same_settings(old: dict[str, Any], new: dict[str, Any]) -> None:
    for key in ("Init", "ReadonlyRootfs", "Tmpfs", "Devices", "CapAdd", "CapDrop", "AutoRemove"):
        assert new["HostConfig"].get(key) == old["HostConfig"].get(key), key
    assert new["HostConfig"]["RestartPolicy"] == old["HostConfig"]["RestartPolicy"]
    assert new["Config"].get("StopSignal") == old["Config"].get("StopSignal")
    assert new["Config"].get("StopTimeout") == old["Config"].get("StopTimeout")
    assert new["Config"].get("Healthcheck") == old["Config"].get("Healthcheck")


def test_onto_a_good_image_every_kind_keeps_settings_data_and_state(
    good: tuple[Kinds, Published, RefreshResult],
) -> None:
    kinds, v2, result = good
    assert "RESTORE FAILED" not in str(result.as_json())
    assert result.failed == {}
    # The paused one waits until unpaused; the rest moved.
    assert result.deferred == {kinds.name("paused"): "paused"}
    for kind in ("autoremove", "slowhealth", "tuned", "stopped", "owner"):
        old, new = kinds.before[kind], kinds.inspect(kind)
        assert new["Image"] == v2.image_id, kind
        assert new["State"]["Running"] is old["State"]["Running"], kind
        same_settings(old, new)
    assert kinds.inspect("slowhealth")["State"]["Health"]["Status"] == "healthy"
    assert kinds.data("autoremove", "/named") == "named"
    assert kinds.data("autoremove", "/anon") == "anon"
    paused = kinds.inspect("paused")
    assert paused["Image"] == kinds.v1.image_id
    assert paused["State"]["Paused"] is True
    # The sidecars joined the owner's replacement, still running.
    owner = kinds.inspect("owner")["Id"]
    assert sidecars(kinds) == {"network": (owner, True), "pid": (owner, True)}


def test_onto_a_broken_image_every_kind_is_back_as_it_was(
    broken: tuple[Kinds, RefreshResult],
) -> None:
    kinds, result = broken
    assert "RESTORE FAILED" not in str(result.as_json())
    assert set(result.failed) == {kinds.name(k) for k in ("autoremove", "tuned", "owner")}
    assert all(failure.restored for failure in result.failed.values())
    # slowhealth runs its own command, not the image's broken one: it moved, healthy.
    assert kinds.name("slowhealth") in result.recreated
    assert kinds.inspect("slowhealth")["State"]["Health"]["Status"] == "healthy"
    # With no canary a stopped container, which proves nothing, moves (recreated stopped);
    # with one it waits for the canary: test_a_stopped_workspace_waits_for_a_canary.
    assert kinds.inspect("stopped")["State"]["Running"] is False
    for kind in ("autoremove", "tuned", "owner", "paused"):
        old, now = kinds.before[kind], kinds.inspect(kind)
        assert now["Image"] == kinds.v1.image_id, kind
        assert now["State"]["Running"] is old["State"]["Running"], kind
        assert now["State"]["Paused"] is old["State"]["Paused"], kind
        same_settings(old, now)
    assert kinds.data("autoremove", "/named") == "named"
    assert kinds.data("autoremove", "/anon") == "anon"
    # The owner is its old self again, and the sidecars run joined to it.
    owner = kinds.inspect("owner")["Id"]
    assert owner == kinds.before["owner"]["Id"]
    assert sidecars(kinds) == {"network": (owner, True), "pid": (owner, True)}


def test_a_check_that_fails_after_its_start_period_is_rolled_back(stack: Stack) -> None:
    """Unhealthy once its start period is over: rolled back, the old container running."""
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1", cmd=QUICK_STOP)
    stack.pull_local(v1.ref)
    name = started(
        stack, f"{runtime.prefix}sick", v1, {}, healthcheck=ready_check(retries=1, start_period=3)
    )
    api = stack.client.api
    before = api.inspect_container(name)["Id"]
    runtime.publish("v2", cmd=QUICK_STOP)
    began = time.monotonic()
    result = refresh_once(runtime, SWAP_HEALTH_TIMEOUT="1")
    took = time.monotonic() - began
    assert "unhealthy" in result.failed[name].reason
    assert took >= 3  # not judged inside its start period, whatever SWAP_HEALTH_TIMEOUT says
    assert stack.running_image(name) == (v1.image_id, True)
    assert api.inspect_container(name)["Id"] == before


def test_a_restarting_workspace_is_left_to_settle(stack: Stack) -> None:
    """Crash-looping under `--restart=always`: when its turn comes it is reported as
    deferred, not swapped; the engine goes on restarting it."""
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1", cmd=["/bin/sh", "-c", "exit 1"])
    stack.pull_local(v1.ref)
    name = started(stack, f"{runtime.prefix}looping", v1, {"restart_policy": {"Name": "always"}})
    api = stack.client.api
    runtime.publish("v2", cmd=QUICK_STOP)

    def restarts() -> int:
        return int(api.inspect_container(name)["RestartCount"])

    deadline = time.monotonic() + 30
    while restarts() < 5:
        assert time.monotonic() < deadline, "the engine does not restart it"
        time.sleep(0.05)
    # Right after an attempt the engine waits 3.2 s or more before the next one.
    count = restarts()
    while restarts() == count:
        assert time.monotonic() < deadline + 30
        time.sleep(0.005)
    result = refresh_once(runtime)
    assert result.deferred == {name: "restarting"}
    assert api.inspect_container(name)["Image"] == v1.image_id


def test_a_stopped_workspace_waits_for_a_canary(stack: Stack) -> None:
    """A broken image: the running canary fails, and the stopped workspace, which could not
    have told, is held on the old image, still stopped."""
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1", cmd=QUICK_STOP)
    runner = runtime.workspace("runner", v1)
    idle = runtime.workspace("idle", v1, start=False)
    runtime.publish("v2", cmd=["/bin/no-such-command"])
    result = refresh_once(runtime)
    assert list(result.failed) == [runner]
    assert result.deferred == {idle: f"held: the canary {runner} failed"}
    assert stack.running_image(idle) == (v1.image_id, False)
    assert stack.running_image(runner) == (v1.image_id, True)
