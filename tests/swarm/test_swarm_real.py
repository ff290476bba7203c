"""Swarm mode on a real one-node swarm, through the command line: which services are
workspaces, what an update keeps of their spec, how a broken image and an update already
under way are handled."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker.errors
import docker.types

from receiver import config
from receiver.container import ENABLE_LABEL
from tests.support.swarm import Swarm
from tests.support.swarm_runtime import SwarmRuntime

NS = 1_000_000_000
STACK_FILE = Path(__file__).parents[2] / "deploy" / "stack.yaml"


def refresh(runtime: SwarmRuntime, *args: str, **settings: str) -> tuple[int, dict[str, Any]]:
    """`python -m receiver refresh` in swarm mode: its exit code and JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "receiver", "refresh", *args],
        env=runtime.env(**settings),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, result


def test_stale_services_are_updated_keeping_their_spec(
    runtime: SwarmRuntime, swarm1: Swarm
) -> None:
    """Two stale workspaces (one with an UpdateConfig of its own) move to the new digest
    with env, labels and update config kept; a service without the prefix and an opted-out
    one stay as they were; a second refresh changes nothing."""
    node = swarm1.manager
    v1 = runtime.publish("v1")
    own = docker.types.UpdateConfig(parallelism=1, order="start-first", monitor=NS)
    mine = runtime.service(
        "own", v1.pinned, node, update_config=own, labels={"team": "a"}, env=["KEEP=1"]
    )
    plain = runtime.service("plain", v1.pinned, node)
    opted = runtime.service("opted", v1.pinned, node, labels={ENABLE_LABEL: "false"})
    other = runtime.named_service(f"x{runtime.prefix}other", v1.pinned, node)
    runtime.wait_running(dict.fromkeys([mine, plain, opted, other], v1), timeout=60)
    v2 = runtime.publish("v2")

    code, result = refresh(runtime)

    assert code == 0, result
    assert result["recreated"] == sorted([mine, plain])
    assert result["digests"] == {runtime.name: v2.digest}
    assert list(result["skipped"]) == [opted]
    assert runtime.spec_images() == {
        mine: v2.pinned,
        plain: v2.pinned,
        opted: v1.pinned,
        other: v1.pinned,
    }
    runtime.wait_running({mine: v2, plain: v2, opted: v1, other: v1}, timeout=60)
    spec = runtime.inspect(mine)["Spec"]
    assert spec["Labels"] == {"team": "a"}
    assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["KEEP=1"]
    assert spec["UpdateConfig"]["Order"] == "start-first"
    defaults = runtime.inspect(plain)["Spec"]["UpdateConfig"]
    assert (defaults["Parallelism"], defaults["FailureAction"], defaults["Monitor"]) == (
        1,
        "rollback",
        NS,
    )
    assert defaults.get("Order", "stop-first") == "stop-first"

    versions = {name: runtime.inspect(name)["Version"]["Index"] for name in runtime.services}
    code, again = refresh(runtime)
    assert code == 0, again
    assert again["recreated"] == []
    assert again["unchanged"] == sorted([mine, plain])
    assert {n: runtime.inspect(n)["Version"]["Index"] for n in runtime.services} == versions


def test_a_broken_image_is_rolled_back_by_swarm_on_the_canary_only(
    runtime: SwarmRuntime, swarm1: Swarm
) -> None:
    """A v2 whose command does not exist: Swarm rolls the canary back; the other service is
    never touched; the refresh fails and says so."""
    node = swarm1.manager
    v1 = runtime.publish("v1")
    first = runtime.service("1", v1.pinned, node)
    second = runtime.service("2", v1.pinned, node)
    runtime.wait_running({first: v1, second: v1}, timeout=60)
    runtime.publish("v2", cmd=["/bin/no-such-command"])

    code, result = refresh(runtime)

    assert code == 1, result
    assert list(result["failed"]) == [first]
    assert "rollback" in result["failed"][first]
    assert list(result["deferred"]) == [second]
    assert runtime.spec_images() == {first: v1.pinned, second: v1.pinned}
    assert "UpdateStatus" not in runtime.inspect(second)
    runtime.wait_running({first: v1, second: v1}, timeout=60)


def test_an_update_under_way_is_waited_on_not_started_again(
    runtime: SwarmRuntime, swarm1: Swarm
) -> None:
    """An operator's update to the new digest is still monitoring when the refresh comes:
    the refresh waits for it and finds the service current."""
    node = swarm1.manager
    v1 = runtime.publish("v1")
    name = runtime.service("busy", v1.pinned, node)
    runtime.wait_running({name: v1}, timeout=60)
    v2 = runtime.publish("v2")
    runtime.start_update(name, v2.pinned, monitor=5)
    started = runtime.inspect(name)["UpdateStatus"]["StartedAt"]

    code, result = refresh(runtime)

    assert code == 0, result
    assert result["recreated"] == []
    assert result["unchanged"] == [name]
    status = runtime.inspect(name)["UpdateStatus"]
    assert (status["State"], status["StartedAt"]) == ("completed", started)
    runtime.wait_running({name: v2}, timeout=30)


def test_the_stack_file_deploys_one_receiver_on_a_manager(swarm1: Swarm, tmp_path: Path) -> None:
    """`docker stack deploy -c deploy/stack.yaml` is accepted by the real CLI and makes the
    service the README describes (a stand-in image: the spec is what is checked here)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DOCKER_HOST": swarm1.manager.base_url,
        "RECEIVER_IMAGE": swarm1.publish("org/receiver-stand-in", version="r").pinned,
        "RUNTIMES": "claude-code",
        "DOCKER_GID": "998",
        "IMAGE_TEMPLATE": "ghcr.io/org/workspace-template-{runtime}:latest",
    }
    stack = f"receiver{secrets.token_hex(3)}"
    names = [f"receiver_{what}" for what in ("admin_secret_key", "github_webhook_secret")]
    names += ["receiver_ghcr_user", "receiver_ghcr_token"]
    api: Any = swarm1.manager.client.api
    made = [api.create_secret(name, secrets.token_bytes(8))["ID"] for name in names]
    try:
        subprocess.run(
            ["docker", "stack", "deploy", "-c", str(STACK_FILE), stack],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        spec = api.inspect_service(f"{stack}_receiver")["Spec"]
    finally:
        subprocess.run(["docker", "stack", "rm", stack], env=env, capture_output=True, timeout=60)
        for secret in made:
            _remove_secret(api, secret)
    container = spec["TaskTemplate"]["ContainerSpec"]
    # What the receiver in that container would make of its environment (secrets aside).
    environ = dict(entry.partition("=")[::2] for entry in container["Env"])
    settings = config.load({k: v for k, v in environ.items() if not k.endswith("_FILE")})
    assert settings.orchestrator is config.Orchestrator.SWARM
    assert settings.runtimes == ("claude-code",)
    assert (
        str(settings.image_for("claude-code"))
        == "ghcr.io/org/workspace-template-claude-code:latest"
    )
    assert settings.container_prefix == "ws-"  # not set when deployed: the default
    assert container["User"] == "10001:998"
    assert {s["SecretName"] for s in container["Secrets"]} == set(names)
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    assert spec["UpdateConfig"]["Order"] == "stop-first"


def _remove_secret(api: Any, secret: str) -> None:
    """Remove a secret once the stack's tasks that hold it are gone."""
    deadline = time.monotonic() + 30
    while True:
        try:
            api.remove_secret(secret)
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
