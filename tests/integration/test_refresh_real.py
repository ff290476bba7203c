"""Refresh on a real Docker engine and registry: containers move to v2 with everything kept."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker.errors
import httpx
import pytest

from receiver import config
from receiver.docker_engine import DockerEngine
from receiver.errors import Cause, PullError
from receiver.imageref import parse
from receiver.refresh import RefreshService
from receiver.registry import MANIFEST_TYPES
from tests.support.stack import Published, Stack


@dataclass
class World:
    """One test's runtime, images and the settings that point the receiver at them."""

    runtime: str
    prefix: str
    template: str
    v1: Published
    settings: config.Config
    engine: DockerEngine

    def service(self) -> RefreshService:
        return RefreshService(self.settings, self.engine)


def settings_for(
    stack: Stack, runtimes: str, prefix: str, template: str, **extra: str
) -> config.Config:
    return config.load(
        {
            **extra,
            "RUNTIMES": runtimes,
            "IMAGE_TEMPLATE": template,
            "CONTAINER_PREFIX": prefix,
            "SWAP_GRACE_SECONDS": "0.5",
            # busybox sleep as PID 1 ignores SIGTERM; don't wait the default 10 s for it.
            "SWAP_STOP_TIMEOUT": "1",
            "DOCKER_HOST": stack.docker_host,
        }
    )


@pytest.fixture
def world(stack: Stack) -> Iterator[World]:
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('ws')}-"
    template = f"{stack.registry}/org/workspace-template-{{runtime}}:latest"
    v1 = stack.publish(
        f"org/workspace-template-{runtime}",
        version="v1",
        env={"MODE": "v1"},
        labels={"version": "1"},
        volumes=["/anon"],
    )
    stack.pull_local(v1.ref)
    stack.track_container(prefix)
    settings = settings_for(stack, runtime, prefix, template)
    engine = DockerEngine(settings.docker_env)
    yield World(runtime, prefix, template, v1, settings, engine)
    engine.close()


def inspect(stack: Stack, name: str) -> dict[str, Any]:
    data: dict[str, Any] = stack.client.api.inspect_container(name)
    return data


def names(stack: Stack, prefix: str) -> set[str]:
    found = stack.client.api.containers(all=True, filters={"name": prefix})
    return {str(c["Names"][0]).lstrip("/") for c in found}


def test_refresh_moves_containers_to_v2_keeping_settings_and_data(
    stack: Stack, world: World
) -> None:
    """Running and stopped workspaces move to v2; env, labels, named and anonymous data survive."""
    p = world.prefix
    volume = stack.unique("vol")
    stack.run_container(
        f"{p}a",
        world.v1.ref,
        env={"USER_SET": "1"},
        labels={"team": "blue"},
        volumes=[f"{volume}:/named"],
    )
    stack.exec(f"{p}a", "sh", "-c", "echo anon-data > /anon/f && echo named-data > /named/f")
    stack.run_container(f"{p}stopped", world.v1.ref, start=False)
    unprefixed = stack.unique("other")
    stack.run_container(unprefixed, world.v1.ref)
    other_runtime = stack.unique("rt")
    other = stack.publish(f"org/workspace-template-{other_runtime}", version="other")
    stack.run_container(f"{p}other-runtime", other.ref)
    before = {name: inspect(stack, name)["Id"] for name in (unprefixed, f"{p}other-runtime")}

    v2 = stack.publish(
        f"org/workspace-template-{world.runtime}",
        version="v2",
        env={"MODE": "v2"},
        labels={"version": "2"},
        cmd=["/bin/sleep", "3601"],
        volumes=["/anon"],
    )
    result = world.service().refresh()

    assert result.as_json() == {
        "pulled": [world.runtime],
        "recreated": [f"{p}a", f"{p}stopped"],
        "unchanged": [],
        "failed": {},
        "digests": {world.runtime: v2.digest},
        "repaired": {},
        "removed_images": [],
        "skipped": {},
        "deferred": {},
    }
    a = inspect(stack, f"{p}a")
    assert a["Image"] == v2.image_id
    assert a["State"]["Running"] is True
    assert stack.read_file(f"{p}a", "/version") == "v2"
    assert "USER_SET=1" in a["Config"]["Env"]
    assert "MODE=v2" in a["Config"]["Env"], "the new image's default env must apply"
    assert a["Config"]["Labels"] == {"team": "blue", "version": "2"}
    assert a["Config"]["Cmd"] == ["/bin/sleep", "3601"], "the new image's CMD must apply"
    assert stack.read_file(f"{p}a", "/anon/f") == "anon-data"
    assert stack.read_file(f"{p}a", "/named/f") == "named-data"
    stopped = inspect(stack, f"{p}stopped")
    assert stopped["Image"] == v2.image_id
    assert stopped["State"]["Running"] is False
    for name, container_id in before.items():
        assert inspect(stack, name)["Id"] == container_id
    assert inspect(stack, unprefixed)["Image"] == world.v1.image_id
    assert not any(name.endswith("-receiver-aside") for name in names(stack, p))

    again = world.service().refresh()
    assert again.recreated == []
    assert sorted(again.unchanged) == [f"{p}a", f"{p}stopped"]
    assert inspect(stack, f"{p}a")["Id"] == a["Id"]
    with contextlib.suppress(docker.errors.APIError):
        stack.client.api.remove_container(f"{p}a", force=True)
        stack.client.api.remove_volume(volume)


def test_pull_error_inside_the_stream_fails_without_touching_containers(
    stack: Stack, world: World
) -> None:
    """A layer the registry lost fails mid-stream (HTTP 200); the result names the runtime."""
    p = world.prefix
    container_id = stack.run_container(f"{p}a", world.v1.ref)
    broken = stack.publish(f"org/workspace-template-{world.runtime}", version="broken")
    delete_first_layer(stack, f"org/workspace-template-{world.runtime}", "latest")

    with pytest.raises(PullError) as caught:
        world.engine.pull(parse(broken.ref))
    # Reported inside the stream, after HTTP 200: no status of its own.
    assert caught.value.status is None
    result = world.service().refresh()

    assert result.pulled == []
    assert list(result.failed) == [world.runtime]
    assert result.failed[world.runtime].cause is Cause.TRANSIENT
    container = inspect(stack, f"{p}a")
    assert container["Id"] == container_id
    assert container["Image"] == world.v1.image_id
    assert container["State"]["Running"] is True


def test_missing_tag_fails_that_runtime_only(stack: Stack, world: World) -> None:
    """A runtime whose image does not exist fails; the other runtime still refreshes."""
    p = world.prefix
    stack.run_container(f"{p}a", world.v1.ref)
    v2 = stack.publish(f"org/workspace-template-{world.runtime}", version="v2")
    ghost = stack.unique("ghost")
    settings = settings_for(stack, f"{world.runtime},{ghost}", p, world.template)

    result = RefreshService(settings, world.engine).refresh()

    assert result.recreated == [f"{p}a"]
    assert list(result.failed) == [ghost]
    assert inspect(stack, f"{p}a")["Image"] == v2.image_id
    # Every engine answers a missing tag with 404 before any streaming (its words differ).
    with pytest.raises(PullError) as caught:
        world.engine.pull(settings.image_for(ghost))
    assert caught.value.status == 404


def delete_first_layer(stack: Stack, repository: str, tag: str) -> None:
    """Make the registry lose a layer blob, so a pull breaks after streaming has begun."""
    base = f"http://{stack.registry}/v2/{repository}"
    with httpx.Client(timeout=10) as http:
        manifest = http.get(f"{base}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES})
        manifest.raise_for_status()
        layer = manifest.json()["layers"][0]["digest"]
        http.delete(f"{base}/blobs/{layer}").raise_for_status()


def test_image_cleanup_removes_the_replaced_image_on_the_real_engine(
    stack: Stack, world: World
) -> None:
    """IMAGE_CLEANUP=true: once its last container moved to v2, the v1 image is removed."""
    p = world.prefix
    stack.run_container(f"{p}a", world.v1.ref)
    stack.run_container(f"{p}b", world.v1.ref, start=False)
    v2 = stack.publish(f"org/workspace-template-{world.runtime}", version="v2")
    settings = settings_for(stack, world.runtime, p, world.template, IMAGE_CLEANUP="true")

    result = RefreshService(settings, world.engine).refresh()

    assert sorted(result.recreated) == [f"{p}a", f"{p}b"]
    assert result.removed_images == [world.v1.image_id]
    assert not stack.image_present(world.v1.image_id)
    assert stack.image_present(v2.image_id)
