"""Recreate on the real engine: networks, volumes, hostnames and settings survive a swap to v2.

One refresh recreates every workspace of the module's runtime; each test then checks one
row of the create-spec's table (receiver/spec.py) on the new containers.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
import pytest

from receiver import config
from receiver.cli import build_engine
from receiver.container import Container
from receiver.refresh import RefreshService
from receiver.result import RefreshResult
from receiver.swap import Swapper
from tests.support.stack import Published, Stack


def script(seconds: int) -> str:
    # As PID 1, sh ignores TERM and INT unless it traps them; a trap makes stops immediate.
    return f"trap 'exit 0' TERM INT; sleep {seconds} & wait"


V1_ENTRYPOINT = ["/bin/sh", "-c"]
V2_ENTRYPOINT = ["/bin/sh", "-e", "-c"]
USER_CMD = [f"echo user; {script(3600)}"]
# Paths of the `vol` workspace that hold data, by how the volume was given.
DATA_PATHS = ("/anon", "/cli-anon", "/sdk-anon", "/mount-anon", "/named", "/bind")


@dataclass
class World:
    """The module's runtime, its workspaces before and after the refresh, and what to clean."""

    stack: Stack
    prefix: str
    aux_prefix: str
    v1: Published
    v2: Published | None = None
    result: RefreshResult | None = None
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    owner: str = ""
    front_v4: str = ""
    front_v6: str = ""
    mac: str = ""
    settings: config.Config | None = None
    db: str = ""
    networks: list[str] = field(default_factory=list)
    volumes: set[str] = field(default_factory=set)

    def name(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def inspect(self, short: str) -> dict[str, Any]:
        data: dict[str, Any] = self.stack.client.api.inspect_container(self.name(short))
        return data

    def old(self, short: str) -> dict[str, Any]:
        return self.before[self.name(short)]


def _create_network(stack: Stack, name: str, *, ipv6: bool) -> tuple[str, str]:
    """A bridge network with random subnets (static addresses need user subnets)."""
    api = stack.client.api
    for _attempt in range(5):
        v4 = f"10.232.{random.randrange(256)}.0/24"  # noqa: S311 - not for security
        v6 = f"fd00:232:{random.randrange(1 << 16):x}::/64"  # noqa: S311
        pools = [docker.types.IPAMPool(subnet=v4)]
        if ipv6:
            pools.append(docker.types.IPAMPool(subnet=v6))
        try:
            api.create_network(
                name,
                driver="bridge",
                enable_ipv6=ipv6,
                ipam=docker.types.IPAMConfig(pool_configs=pools),
            )
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc):
                raise
            continue
        return v4, v6
    raise RuntimeError(f"no free subnet for network {name}")


def _cleanup(world: World, bind_dir: Path) -> None:
    stack = world.stack
    api = stack.client.api
    for prefix in (world.prefix, world.aux_prefix):
        with contextlib.suppress(docker.errors.APIError):
            stack.cleanup_containers(prefix)
    for network in world.networks:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_network(network)
    for volume in sorted(world.volumes):
        with contextlib.suppress(docker.errors.APIError):
            api.remove_volume(volume)
    shutil.rmtree(bind_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('wsf')}-"
    repository = f"org/workspace-template-{runtime}"
    v1 = stack.publish(
        repository,
        version="v1",
        env={"PATH": "/bin", "X": "1"},
        labels={"version": "1"},
        entrypoint=V1_ENTRYPOINT,
        cmd=[script(3600)],
        workdir="/data",
        volumes=["/anon"],
    )
    stack.pull_local(v1.ref)
    # Containers the workspaces point at (a link target, a network namespace owner) are
    # not workspaces: another prefix.
    aux_prefix = f"{stack.unique('aux')}-"
    stack.track_container(prefix)
    stack.track_container(aux_prefix)
    world = World(stack, prefix, aux_prefix, v1)
    bind_dir = Path(tempfile.mkdtemp(prefix="recreate-faithful-"))
    try:
        _make_workspaces(world, bind_dir)
        world.v2 = stack.publish(
            repository,
            version="v2",
            env={"PATH": "/bin", "X": "2"},
            labels={"version": "2"},
            entrypoint=V2_ENTRYPOINT,
            cmd=[script(3601)],
            workdir="/tmp",
            volumes=["/anon"],
        )
        world.settings = settings = config.load(
            {
                "RUNTIMES": runtime,
                "IMAGE_TEMPLATE": f"{stack.registry}/org/workspace-template-{{runtime}}:latest",
                "CONTAINER_PREFIX": prefix,
                "SWAP_GRACE_SECONDS": "0.5",
                "SWAP_STOP_TIMEOUT": "1",
                # All six at once: the grace period is then waited out only once.
                "SWAP_PARALLELISM": "6",
                "DOCKER_HOST": stack.docker_host,
            }
        )
        engine = build_engine(settings)
        try:
            world.result = RefreshService(settings, engine).refresh()
        finally:
            engine.close()
        yield world
    finally:
        _cleanup(world, bind_dir)


def _make_workspaces(world: World, bind_dir: Path) -> None:
    stack, api, p = world.stack, world.stack.client.api, world.prefix
    front, back = f"{p}front", f"{p}back"
    world.networks += [front, back]
    world.front_v4, world.front_v6 = _create_network(stack, front, ipv6=True)
    _create_network(stack, back, ipv6=False)
    named = f"{p}named"
    api.create_volume(named)
    world.volumes.add(named)
    base = world.front_v4.rsplit(".", 1)[0]
    static_v4, static_v6 = f"{base}.10", world.front_v6.replace("::/64", "::10")
    world.mac = "02:42:0a:e8:{:02x}:0a".format(int(base.rsplit(".", 1)[1]))

    def create(name: str, *, start: bool = True, **kwargs: Any) -> str:
        host_config = kwargs.pop("host_config", None) or api.create_host_config(network_mode="none")
        api.create_container(world.v1.ref, name=name, host_config=host_config, **kwargs)
        if start:
            api.start(name)
        return name

    def on_front(**endpoint: Any) -> dict[str, Any]:
        return {
            "host_config": api.create_host_config(network_mode=front),
            "networking_config": {
                "EndpointsConfig": {front: api.create_endpoint_config(**endpoint)}
            },
        }

    world.db = db = create(f"{world.aux_prefix}db", start=False, **on_front())
    api.connect_container_to_network(db, back)
    api.start(db)
    world.owner = create(f"{world.aux_prefix}owner", **on_front())
    net = create(
        world.name("net"),
        start=False,
        mac_address=world.mac,
        **on_front(
            aliases=["workspace"],
            links={db: "database"},
            ipv4_address=static_v4,
            ipv6_address=static_v6,
        ),
    )
    api.connect_container_to_network(
        net, back, aliases=["backend"], driver_opt={"com.example.endpoint": "on"}
    )
    api.start(net)
    create(
        world.name("vol"),
        volumes=["/cli-anon"],
        host_config=api.create_host_config(
            network_mode="none",
            binds=[f"{named}:/named", f"{bind_dir}:/bind", "/sdk-anon"],
            mounts=[docker.types.Mount("/mount-anon", None, type="volume")],
        ),
    )
    write = " && ".join(f"echo data{path} > {path}/f" for path in DATA_PATHS)
    stack.exec(world.name("vol"), "sh", "-c", write)
    create(
        world.name("user"),
        hostname="workbench",
        environment={"X": "1", "USER_ONLY": "yes"},
        command=USER_CMD,
    )
    create(world.name("auto"))
    create(
        world.name("stopped"),
        stop_signal="SIGINT",
        stop_timeout=1,
        host_config=api.create_host_config(
            network_mode="none",
            restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},
        ),
    )
    api.stop(world.name("stopped"), timeout=5)
    create(
        world.name("side"),
        host_config=api.create_host_config(network_mode=f"container:{world.owner}"),
    )
    for short in ("net", "vol", "user", "auto", "stopped", "side"):
        world.before[world.name(short)] = world.inspect(short)
    for inspect in world.before.values():
        world.volumes |= {m["Name"] for m in inspect["Mounts"] if m["Type"] == "volume"}


def test_every_workspace_is_recreated_on_v2(world: World) -> None:
    """One refresh recreates all six workspaces, each a new container on v2's image."""
    assert world.result is not None
    assert world.v2 is not None
    assert world.result.failed == {}
    assert sorted(world.result.recreated) == sorted(world.before)
    for name, old in world.before.items():
        new = world.stack.client.api.inspect_container(name)
        assert new["Id"] != old["Id"]
        assert new["Image"] == world.v2.image_id
        assert new["State"]["Running"] is old["State"]["Running"]


def short_id_alias(stack: Stack, inspect: dict[str, Any]) -> list[str]:
    """The alias the engine itself gives a container on a user network: its short id up
    to API 1.43; from 1.44 on the short id is in the endpoint's DNSNames instead."""
    return [inspect["Id"][:12]] if stack.api_version < (1, 44) else []


def test_static_addresses_aliases_links_and_mac_survive(world: World) -> None:
    """Same static IPv4/IPv6, user aliases, link, MAC and networks; no old short-id alias."""
    old, new = world.old("net"), world.inspect("net")
    p = world.prefix
    old_nets, new_nets = old["NetworkSettings"]["Networks"], new["NetworkSettings"]["Networks"]
    assert set(new_nets) == set(old_nets) == {f"{p}front", f"{p}back"}
    front = new_nets[f"{p}front"]
    assert front["IPAMConfig"] == old_nets[f"{p}front"]["IPAMConfig"]
    assert front["IPAddress"] == old_nets[f"{p}front"]["IPAddress"]
    assert front["IPAddress"].endswith(".10")
    assert front["GlobalIPv6Address"] == old_nets[f"{p}front"]["GlobalIPv6Address"]
    assert front["GlobalIPv6Address"].endswith("::10")
    assert front["MacAddress"] == world.mac
    assert new["Config"]["MacAddress"] == world.mac
    assert front["Links"] == [f"{world.aux_prefix}db:database"]
    assert front["Aliases"] == ["workspace", *short_id_alias(world.stack, new)]
    back = new_nets[f"{p}back"]
    assert back["Aliases"] == ["backend", *short_id_alias(world.stack, new)]
    for endpoint in (front, back):
        names = set(endpoint["Aliases"]) | set(endpoint.get("DNSNames") or ())
        assert old["Id"][:12] not in names
    assert back["DriverOpts"] == {"com.example.endpoint": "on"}
    assert back["IPAMConfig"] is None


def test_data_in_named_bind_and_anonymous_volumes_is_still_there(world: World) -> None:
    """Data written before the swap is read back in the new container, from the same volumes."""
    for path in DATA_PATHS:
        assert world.stack.read_file(world.name("vol"), f"{path}/f") == f"data{path}"

    def sources(inspect: dict[str, Any]) -> dict[str, str]:
        return {m["Destination"]: m.get("Name") or m["Source"] for m in inspect["Mounts"]}

    assert sources(world.inspect("vol")) == sources(world.old("vol"))


def test_user_hostname_is_kept_and_the_auto_one_not_copied(world: World) -> None:
    """`--hostname workbench` survives; an auto hostname becomes the new short id."""
    assert world.inspect("user")["Config"]["Hostname"] == "workbench"
    auto = world.inspect("auto")
    assert auto["Config"]["Hostname"] == auto["Id"][:12]
    assert world.stack.read_file(world.name("auto"), "/etc/hostname") == auto["Id"][:12]


def test_new_images_entrypoint_cmd_workdir_and_env_apply(world: World) -> None:
    """Without overrides, v2's entrypoint, cmd, workdir and env are in effect."""
    auto = world.inspect("auto")["Config"]
    assert auto["Entrypoint"] == V2_ENTRYPOINT
    assert auto["Cmd"] == [script(3601)]
    assert auto["WorkingDir"] == "/tmp"
    assert "X=2" in auto["Env"]
    assert auto["Labels"] == {"version": "2"}


def test_user_cmd_and_env_are_kept(world: World) -> None:
    """The user's cmd runs under v2's entrypoint and the user-only env stays; `-e X=1`, equal
    to v1's default, follows the new image (documented in receiver/spec.py)."""
    user = world.inspect("user")["Config"]
    assert user["Entrypoint"] == V2_ENTRYPOINT
    assert user["Cmd"] == USER_CMD
    assert "USER_ONLY=yes" in user["Env"]
    assert "X=2" in user["Env"]


def test_stop_settings_and_restart_policy_are_kept(world: World) -> None:
    """Stop signal and timeout and the restart policy survive; the exited one stays stopped."""
    new = world.inspect("stopped")
    assert new["Config"]["StopSignal"] == "SIGINT"
    assert new["Config"]["StopTimeout"] == 1
    assert new["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert new["State"]["Status"] == "created"


def test_container_network_mode_is_kept(world: World) -> None:
    """The sidecar is back in its owner's network namespace, with the owner's hostname."""
    owner = world.stack.client.api.inspect_container(world.owner)
    new = world.inspect("side")
    assert new["HostConfig"]["NetworkMode"] == f"container:{owner['Id']}"
    assert new["State"]["Running"] is True
    assert new["Config"]["Hostname"] == owner["Config"]["Hostname"]


def test_link_on_a_second_network_survives(world: World) -> None:
    """A link on a network connected after create (not the primary one) is kept."""
    assert world.settings is not None
    assert world.v2 is not None
    api = world.stack.client.api
    name, back = world.name("linked"), f"{world.prefix}back"
    front = f"{world.prefix}front"
    api.create_container(
        world.v2.ref,
        name=name,
        host_config=api.create_host_config(network_mode=front),
        networking_config={"EndpointsConfig": {front: api.create_endpoint_config()}},
    )
    api.connect_container_to_network(name, back, links=[(world.db, "db-back")])
    api.start(name)
    engine = build_engine(world.settings)
    try:
        Swapper(engine, world.settings.swap).swap(
            Container.from_inspect(api.inspect_container(name)),
            world.stack.client.images.get(world.v2.image_id).attrs["Config"],
            world.v2.ref,
        )
    finally:
        engine.close()
    endpoint = api.inspect_container(name)["NetworkSettings"]["Networks"][back]
    assert endpoint["Links"] == [f"{world.db}:db-back"]
