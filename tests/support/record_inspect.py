"""Record real `docker inspect` JSON for the create-spec tests (tests/fixtures/inspect).

    python -m tests.support.record_inspect [--out tests/fixtures/inspect]

Every scenario makes containers on the test stack's engine (tests/stack.py) from v1 of one
template image; then v2 of the template is imported under the same tag, as a pull of a new
version would, and each scenario's file gets::

    {"scenario", "description", "engine": {"version", "api"},
     "container": <inspect of the container>,
     "old_image": <Config of its image, v1>, "new_image": <Config of v2>}

Names, subnets, addresses and paths are fixed, so two recordings differ only in ids, times,
the engine's data paths and the addresses the engine picks itself.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types

# The stack's image helpers are private to it; `Stack.publish` cannot set USER, EXPOSE or
# HEALTHCHECK and always pushes, which would put the registry's random port in every ref.
from tests.support.stack import Stack, _changes, check_stream, json_lines, rootfs_tar

DEFAULT_OUT = Path(__file__).parent / "fixtures" / "inspect"
TEMPLATE = "registry.test/org/workspace-template-rec:latest"
WORKSPACE = "ws-rec-"  # workspace containers: the ones recorded
AUX = "rec-aux-"  # containers the workspaces point at: link targets, network namespace owners
FRONT, BACK = "rec-front", "rec-back"
FRONT_V4, FRONT_V6, BACK_V4 = "10.231.1.0/24", "fd00:231:1::/64", "10.231.2.0/24"
NAMED, MOUNTED = "rec-named", "rec-mounted"
BIND_DIR = Path("/tmp/record-inspect-bind")


def _quick_stop(seconds: int) -> str:
    # As PID 1, sh ignores TERM and INT unless it traps them; a trap makes stops immediate.
    return f"trap 'exit 0' TERM INT; sleep {seconds} & wait"


# v1 sets every default an image can carry through `docker import --change` (STOPSIGNAL
# cannot be set that way); v2 changes the entrypoint, cmd, env, workdir, label and
# healthcheck, as a new template version would.
V1_CHANGES = [
    *_changes(
        env={"PATH": "/bin", "X": "1"},
        labels={"org.opencontainers.image.version": "1", "com.example.template": "workspace"},
        cmd=[_quick_stop(3600)],
        entrypoint=["/bin/sh", "-c"],
        workdir="/data",
        volumes=["/anon"],
    ),
    "USER 1000:1000",
    "EXPOSE 8080/tcp",
    'HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/true"]',
]
V2_CHANGES = [
    *_changes(
        env={"PATH": "/bin", "X": "2"},
        labels={"org.opencontainers.image.version": "2", "com.example.template": "workspace"},
        cmd=[_quick_stop(3601)],
        entrypoint=["/bin/sh", "-e", "-c"],
        workdir="/tmp",
        volumes=["/anon"],
    ),
    "USER 1000:1000",
    "EXPOSE 8080/tcp",
    'HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/test", "-d", "/tmp"]',
]


@dataclass
class Recorder:
    """What scenarios make their containers with."""

    stack: Stack

    @property
    def api(self) -> docker.APIClient:
        return self.stack.client.api

    def create(self, name: str, *, start: bool = True, **kwargs: Any) -> str:
        """Create (and start) a container of the template; keyword arguments as the SDK's."""
        host_config = kwargs.pop("host_config", None) or self.api.create_host_config(
            network_mode="none"
        )
        created = self.api.create_container(
            TEMPLATE, name=name, host_config=host_config, detach=True, **kwargs
        )
        if start:
            self.api.start(created["Id"])
        return name

    def host(self, **kwargs: Any) -> dict[str, Any]:
        """A create request's HostConfig; keyword arguments as the SDK's."""
        config: dict[str, Any] = self.api.create_host_config(**kwargs)
        return config

    def networking(self, network: str, **endpoint: Any) -> dict[str, Any]:
        """A create request's NetworkingConfig: one network, endpoint settings as the SDK's."""
        return {"EndpointsConfig": {network: self.api.create_endpoint_config(**endpoint)}}


Maker = Callable[[Recorder], str]


@dataclass(frozen=True)
class Scenario:
    """One recorded situation: a function making the container, documented by its docstring."""

    name: str
    description: str
    make: Maker


SCENARIOS: list[Scenario] = []


def scenario(name: str) -> Callable[[Maker], Maker]:
    """Register a scenario; the function's docstring is the file's description."""

    def register(make: Maker) -> Maker:
        SCENARIOS.append(Scenario(name, " ".join((inspect.getdoc(make) or "").split()), make))
        return make

    return register


@scenario("image-defaults")
def _image_defaults(rec: Recorder) -> str:
    """Run with no overrides at all: every Config value (Env, Labels, Cmd, Entrypoint,
    WorkingDir, User, ExposedPorts, Volumes, Healthcheck) is the image's default and the
    hostname is the auto-assigned short id. v2 changes the entrypoint, cmd, env X, workdir,
    label and healthcheck: none of v1's may be pinned."""
    return rec.create(f"{WORKSPACE}image-defaults")


@scenario("user-overrides")
def _user_overrides(rec: Recorder) -> str:
    """The user set a hostname, env X=1 equal to the image's default plus USER_ONLY=yes,
    labels team=blue and com.example.template=custom (overriding the image's), a cmd for
    the image's entrypoint, user 0:0, workdir /srv, an extra exposed port 9090 and only
    the healthcheck interval (the engine fills in the image's test)."""
    return rec.create(
        f"{WORKSPACE}user-overrides",
        hostname="workbench",
        environment={"X": "1", "USER_ONLY": "yes"},
        labels={"team": "blue", "com.example.template": "custom"},
        command=[f"echo user-cmd; {_quick_stop(3600)}"],
        user="0:0",
        working_dir="/srv",
        ports=[9090],
        healthcheck=docker.types.Healthcheck(interval=5_000_000_000),
    )


@scenario("user-entrypoint")
def _user_entrypoint(rec: Recorder) -> str:
    """The user replaced the entrypoint (/bin/sh -x -c) and gave a cmd equal to the image's
    default cmd: with a user entrypoint that cmd is the user's and must be kept."""
    return rec.create(
        f"{WORKSPACE}user-entrypoint",
        entrypoint=["/bin/sh", "-x", "-c"],
        command=[_quick_stop(3600)],
    )


@scenario("networks")
def _networks(rec: Recorder) -> str:
    """On rec-front (IPv4+IPv6 ULA) with static 10.231.1.10 and fd00:231:1::10, alias
    workspace, MAC 02:42:0a:e7:01:0a and a link rec-aux-db:database; then connected to
    rec-back with alias backend, a link rec-aux-db:db-back, an endpoint driver option and a
    dynamic address. The engine adds the short id to each network's aliases."""
    db = rec.create(
        f"{AUX}db",
        start=False,
        host_config=rec.host(network_mode=FRONT),
        networking_config=rec.networking(FRONT),
    )
    rec.api.connect_container_to_network(db, BACK)
    rec.api.start(db)
    name = rec.create(
        f"{WORKSPACE}networks",
        start=False,
        mac_address="02:42:0a:e7:01:0a",
        host_config=rec.host(network_mode=FRONT),
        networking_config=rec.networking(
            FRONT,
            aliases=["workspace"],
            links={db: "database"},
            ipv4_address="10.231.1.10",
            ipv6_address="fd00:231:1::10",
        ),
    )
    rec.api.connect_container_to_network(
        name,
        BACK,
        aliases=["backend"],
        links=[(db, "db-back")],
        driver_opt={"com.example.endpoint": "on"},
    )
    rec.api.start(name)
    return name


@scenario("volumes")
def _volumes(rec: Recorder) -> str:
    """Named volume rec-named:/named (Binds), read-only bind of /tmp/record-inspect-bind on
    /bind, the image's anonymous /anon, an anonymous /cli-anon as `docker run -v /cli-anon`
    sends it (Config.Volumes), an anonymous /sdk-anon as docker-py's `volumes=["/sdk-anon"]`
    sends it (a Binds entry without a source), an anonymous `--mount type=volume,dst=
    /mount-anon` (a Mounts entry without a source) and a read-only named mount
    rec-mounted on /mounted with nocopy."""
    return rec.create(
        f"{WORKSPACE}volumes",
        volumes=["/cli-anon"],
        host_config=rec.host(
            network_mode="none",
            binds=[f"{NAMED}:/named", f"{BIND_DIR}:/bind:ro", "/sdk-anon"],
            mounts=[
                docker.types.Mount("/mount-anon", None, type="volume"),
                docker.types.Mount(
                    "/mounted", MOUNTED, type="volume", read_only=True, no_copy=True
                ),
            ],
        ),
    )


@scenario("container-network-mode")
def _container_network_mode(rec: Recorder) -> str:
    """Joins the network namespace of rec-aux-owner (on rec-front): the engine records
    `container:<full id>` and the owner's hostname, and no networks of its own."""
    owner = rec.create(
        f"{AUX}owner",
        host_config=rec.host(network_mode=FRONT),
        networking_config=rec.networking(FRONT),
    )
    return rec.create(
        f"{WORKSPACE}container-network-mode",
        host_config=rec.host(network_mode=f"container:{owner}"),
    )


@scenario("stopped")
def _stopped(rec: Recorder) -> str:
    """Stop signal SIGINT, stop timeout 2 s, restart policy unless-stopped and a published
    port 127.0.0.1::8080 (engine-chosen host port) on rec-front; started, then stopped, so
    it is recorded exited."""
    name = rec.create(
        f"{WORKSPACE}stopped",
        stop_signal="SIGINT",
        stop_timeout=2,
        host_config=rec.host(
            network_mode=FRONT,
            restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},
            port_bindings={8080: ("127.0.0.1",)},
        ),
        networking_config=rec.networking(FRONT),
    )
    rec.api.stop(name, timeout=5)
    return name


@scenario("created")
def _created(rec: Recorder) -> str:
    """Created and never started, on rec-front with alias fresh and restart policy
    on-failure:3; before a start the engine has not added the short-id alias."""
    return rec.create(
        f"{WORKSPACE}created",
        start=False,
        host_config=rec.host(
            network_mode=FRONT,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        ),
        networking_config=rec.networking(FRONT, aliases=["fresh"]),
    )


def import_template(stack: Stack, version: str, changes: list[str]) -> str:
    """Import a busybox image as TEMPLATE (taking the tag from any older one); its id."""
    repository, tag = TEMPLATE.rsplit(":", 1)
    result = stack.client.api.import_image(
        src=rootfs_tar(version), repository=repository, tag=tag, changes=changes
    )
    check_stream(json_lines(result), f"import of {TEMPLATE}")
    image_id = stack.client.images.get(TEMPLATE).id
    assert image_id is not None
    return image_id


def image_config(stack: Stack, image_id: str) -> dict[str, Any]:
    """An image's Config, as `docker image inspect` shows it."""
    config: dict[str, Any] = stack.client.images.get(image_id).attrs["Config"]
    return config


def _remove_leftovers(stack: Stack) -> None:
    for prefix in (WORKSPACE, AUX):
        stack.cleanup_containers(prefix)
    api = stack.client.api
    for network in (FRONT, BACK):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_network(network)
    for volume in (NAMED, MOUNTED):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_volume(volume)
    shutil.rmtree(BIND_DIR, ignore_errors=True)


@contextlib.contextmanager
def _world(stack: Stack) -> Iterator[list[str]]:
    """The networks, volumes and bind directory the scenarios use; all removed afterwards,
    with the images whose ids are added to the list yielded."""
    _remove_leftovers(stack)
    api = stack.client.api
    images: list[str] = []
    try:
        BIND_DIR.mkdir(parents=True)
        api.create_network(
            FRONT,
            driver="bridge",
            enable_ipv6=True,
            ipam=docker.types.IPAMConfig(
                pool_configs=[
                    docker.types.IPAMPool(subnet=FRONT_V4),
                    docker.types.IPAMPool(subnet=FRONT_V6),
                ]
            ),
        )
        api.create_network(
            BACK,
            driver="bridge",
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=BACK_V4)]),
        )
        api.create_volume(NAMED)
        api.create_volume(MOUNTED)
        yield images
    finally:
        _remove_leftovers(stack)
        for image in images:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_image(image, force=True)


def record(stack: Stack, out: Path) -> list[Path]:
    """Make every scenario's container, import v2 and write one file per scenario."""
    version = stack.client.api.version()
    engine = {"version": version.get("Version"), "api": version.get("ApiVersion")}
    api = stack.client.api
    written = []
    with _world(stack) as images:
        images.append(import_template(stack, "v1", V1_CHANGES))
        made = [(scenario, scenario.make(Recorder(stack))) for scenario in SCENARIOS]
        new_id = import_template(stack, "v2", V2_CHANGES)
        images.append(new_id)
        new_image = image_config(stack, new_id)
        out.mkdir(parents=True, exist_ok=True)
        for scenario, name in made:
            container = api.inspect_container(name)
            # The engine lists mounts in map order, different on every run; sorted, two
            # recordings can be diffed.
            container["Mounts"].sort(key=lambda mount: mount["Destination"])
            recording = {
                "scenario": scenario.name,
                "description": scenario.description,
                "engine": engine,
                "container": container,
                "old_image": image_config(stack, container["Image"]),
                "new_image": new_image,
            }
            path = out / f"{scenario.name}.json"
            path.write_text(json.dumps(recording, indent=2) + "\n")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.record_inspect",
        description="Record docker inspect JSON of real containers for the create-spec tests.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"directory to write to ({DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with Stack.start() as stack:
        written = record(stack, args.out)
    for path in written:
        print(path)
    print(f"recorded {len(written)} scenarios in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
