"""The create-spec keeps what the user set and lets the new image's defaults through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.container import Container, Inspect
from receiver.engine import CreateSpec
from receiver.spec import build_create_spec


def spec_of(inspect: Inspect, old_image: Mapping[str, Any] | None, image: str) -> CreateSpec:
    """The create-spec for the container that `inspect` describes."""
    return build_create_spec(Container.from_inspect(inspect), old_image, image)


CID = "4f78426954469b574cd837fd3ea997cdae38df51d09bbca45be4cc7d26ff505a"
ANON = "9" * 64
OLD_IMAGE: dict[str, Any] = {
    "Env": ["PATH=/bin", "MODE=old"],
    "Cmd": ["/bin/sleep", "3600"],
    "Entrypoint": None,
    "WorkingDir": "/",
    "Labels": {"org.opencontainers.image.version": "1"},
    "Volumes": {"/data": {}},
}


def inspect(**config: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Hostname": CID[:12],
        "Env": ["PATH=/bin", "MODE=old", "USER_SET=yes"],
        "Cmd": ["/bin/sleep", "3600"],
        "Entrypoint": None,
        "WorkingDir": "/",
        "Image": "ghcr.io/o/a:latest",
        "Labels": {"org.opencontainers.image.version": "1", "team": "blue"},
        "Volumes": {"/data": {}},
    }
    base.update(config)
    return {
        "Id": CID,
        "Name": "/ws-1",
        "Config": base,
        "HostConfig": {"NetworkMode": "none", "Binds": ["named:/named"], "Memory": 1 << 28},
        "NetworkSettings": {"Networks": {"none": {"NetworkID": "x", "IPAddress": ""}}},
        "Mounts": [
            {"Type": "volume", "Name": "named", "Destination": "/named", "RW": True},
            {"Type": "volume", "Name": ANON, "Destination": "/data", "RW": True},
        ],
    }


def test_image_defaults_are_dropped_and_user_values_kept() -> None:
    """Env/Labels/Cmd/WorkingDir/Volumes equal to the old image's defaults go; user ones stay."""
    body = spec_of(inspect(), OLD_IMAGE, "ghcr.io/o/a:latest").body
    assert body["Env"] == ["USER_SET=yes"]
    assert body["Labels"] == {"team": "blue"}
    assert "Cmd" not in body
    assert "WorkingDir" not in body
    assert "Volumes" not in body
    assert "Hostname" not in body
    assert body["Image"] == "ghcr.io/o/a:latest"


def test_user_entrypoint_and_cmd_are_kept() -> None:
    """A user entrypoint keeps its Cmd even when that Cmd equals the image's."""
    body = spec_of(inspect(Entrypoint=["/bin/sh", "-c"]), OLD_IMAGE, "ghcr.io/o/a:latest").body
    assert body["Entrypoint"] == ["/bin/sh", "-c"]
    assert body["Cmd"] == ["/bin/sleep", "3600"]


def test_user_hostname_is_kept() -> None:
    """Only the auto-assigned hostname (the short id) is dropped."""
    body = spec_of(inspect(Hostname="box"), OLD_IMAGE, "x:latest").body
    assert body["Hostname"] == "box"


def test_unknown_old_image_keeps_everything() -> None:
    """Without the old image's config nothing can be called a default, so all is kept."""
    body = spec_of(inspect(), None, "x:latest").body
    assert body["Env"] == ["PATH=/bin", "MODE=old", "USER_SET=yes"]
    assert body["Cmd"] == ["/bin/sleep", "3600"]


def test_host_config_is_copied_and_anonymous_volumes_reattached() -> None:
    """HostConfig is kept as is; an anonymous volume is mounted again by its name."""
    body = spec_of(inspect(), OLD_IMAGE, "x:latest").body
    host = body["HostConfig"]
    assert host["Binds"] == ["named:/named"]
    assert host["Memory"] == 1 << 28
    assert host["Mounts"] == [
        {"Type": "volume", "Source": ANON, "Target": "/data", "ReadOnly": False}
    ]
    assert "NetworkingConfig" not in body


def test_networks_keep_config_and_drop_the_short_id_alias() -> None:
    """The primary network goes in the create body, others are connected later."""
    container = inspect()
    container["HostConfig"]["NetworkMode"] = "front"
    container["NetworkSettings"]["Networks"] = {
        "front": {
            "Aliases": [CID[:12], "web"],
            "IPAMConfig": {"IPv4Address": "10.9.0.5"},
            "IPAddress": "10.9.0.5",
            "NetworkID": "n1",
        },
        "back": {"Aliases": [CID[:12]], "NetworkID": "n2"},
    }
    spec = spec_of(container, OLD_IMAGE, "x:latest")
    assert spec.body["NetworkingConfig"] == {
        "EndpointsConfig": {
            "front": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}}
        }
    }
    assert spec.extra_networks == {"back": {}}


def test_container_network_mode_drops_hostname() -> None:
    """`container:` network mode cannot take a hostname; none is sent."""
    container = inspect(Hostname="box")
    container["HostConfig"]["NetworkMode"] = "container:abc"
    spec = spec_of(container, OLD_IMAGE, "x:latest")
    assert "Hostname" not in spec.body
    assert "NetworkingConfig" not in spec.body


def test_published_ports_are_exposed() -> None:
    """Every bound port is exposed, as docker run -p does."""
    container = inspect()
    container["HostConfig"]["PortBindings"] = {"8080/tcp": [{"HostPort": "18080"}]}
    body = spec_of(container, OLD_IMAGE, "x:latest").body
    assert body["ExposedPorts"] == {"8080/tcp": {}}


def test_links_are_rewritten_for_create() -> None:
    """Inspect's `/db:/ws-1/database` becomes create's `db:database`."""
    container = inspect()
    container["HostConfig"]["Links"] = ["/db:/ws-1/database"]
    assert spec_of(container, OLD_IMAGE, "x:latest").body["HostConfig"]["Links"] == ["db:database"]


def networked(mode: str, networks: dict[str, Any]) -> dict[str, Any]:
    container = inspect()
    container["HostConfig"]["NetworkMode"] = mode
    container["NetworkSettings"]["Networks"] = networks
    return container


def test_default_network_mode_means_the_bridge_network() -> None:
    """`default` is the bridge network, even when another network sorts first."""
    spec = spec_of(
        networked("default", {"a-net": {"Aliases": ["a"]}, "bridge": {}}), OLD_IMAGE, "x:latest"
    )
    assert spec.body["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}
    assert spec.extra_networks == {"a-net": {"Aliases": ["a"]}}


def test_network_mode_by_id_picks_that_network() -> None:
    """`docker run --network <id>` records the id; the MAC and create go to that network."""
    networks = {"a": {"NetworkID": "1" * 64}, "b": {"NetworkID": "2" * 64}}
    spec = spec_of(networked("2" * 12, networks), OLD_IMAGE, "x:latest")
    assert list(spec.body["NetworkingConfig"]["EndpointsConfig"]) == ["b"]
    assert list(spec.extra_networks) == ["a"]


def test_no_recorded_network_sends_no_networking_config() -> None:
    """A container whose networks are gone gets NetworkMode only."""
    spec = spec_of(networked("front", {}), OLD_IMAGE, "x:latest")
    assert "NetworkingConfig" not in spec.body
    assert spec.extra_networks == {}


def test_no_volumes_adds_no_mounts() -> None:
    """Without volumes the request gets no Mounts key at all."""
    container = inspect(Volumes=None)
    container["HostConfig"] = {"NetworkMode": "none"}
    container["Mounts"] = []
    assert spec_of(container, OLD_IMAGE, "x:latest").body["HostConfig"] == {"NetworkMode": "none"}


def test_bind_target_is_compared_normalised() -> None:
    """`vol:/named/` claims inspect's `/named`: no second mount on the same path."""
    container = inspect()
    container["HostConfig"]["Binds"] = ["named:/named/"]
    host = spec_of(container, OLD_IMAGE, "x:latest").body["HostConfig"]
    assert host["Binds"] == ["named:/named/"]
    assert [mount["Target"] for mount in host["Mounts"]] == ["/data"]


def test_healthcheck_equal_to_the_image_is_dropped_whole() -> None:
    """A healthcheck the image set is not pinned; a user `--no-healthcheck` is kept."""
    image = {**OLD_IMAGE, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}}
    inherited = spec_of(inspect(Healthcheck=image["Healthcheck"]), image, "x").body
    assert "Healthcheck" not in inherited
    disabled = spec_of(inspect(Healthcheck={"Test": ["NONE"]}), image, "x").body
    assert disabled["Healthcheck"] == {"Test": ["NONE"]}
