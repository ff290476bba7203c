"""The create-spec on `docker inspect` JSON recorded from a real engine, row by row of its table.

The recordings (tests/fixtures/inspect, made by `scripts/record-inspect`) hold a container's
inspect, the Config of its image (v1) and of the next version (v2), which changes the
entrypoint, cmd, env X, workdir, a label and the healthcheck.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver.container import Container, Inspect
from receiver.engine import CreateSpec
from receiver.spec import build_create_spec
from tests.support.record_inspect import SCENARIOS


def spec_of(inspect: Inspect, old_image: Mapping[str, Any] | None, image: str) -> CreateSpec:
    """The create-spec for the container that `inspect` describes."""
    return build_create_spec(Container.from_inspect(inspect), old_image, image)


FIXTURES = Path(__file__).parent.parent / "fixtures" / "inspect"
# Keys of the create body that are not container Config.
_NOT_CONFIG = ("HostConfig", "NetworkingConfig")
# Config values the container had that the user never touches; the spec carries them.
PLAIN = {
    "Domainname": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
}


@dataclass(frozen=True)
class Recording:
    """One recorded scenario."""

    scenario: str
    engine: Mapping[str, str]
    container: dict[str, Any]
    old_image: dict[str, Any]
    new_image: dict[str, Any]

    @property
    def short_id(self) -> str:
        return str(self.container["Id"])[:12]

    @property
    def ref(self) -> str:
        return str(self.container["Config"]["Image"])

    def spec(self, *, old_image_known: bool = True) -> CreateSpec:
        """The spec recreating the container on the same tag, now v2."""
        old = self.old_image if old_image_known else None
        return spec_of(self.container, old, self.ref)


@functools.cache
def recording(scenario: str) -> Recording:
    data = json.loads((FIXTURES / f"{scenario}.json").read_text())
    return Recording(
        data["scenario"], data["engine"], data["container"], data["old_image"], data["new_image"]
    )


ALL = [scenario.name for scenario in SCENARIOS]


def config_part(spec: CreateSpec) -> dict[str, Any]:
    return {key: value for key, value in spec.body.items() if key not in _NOT_CONFIG}


def engine_merge(body: Mapping[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """The Config the engine gives a container created from `body` on an image `image`.

    Mirrors moby's `merge()` in daemon/commit.go (20.10) for the fields the spec decides:
    the request's values win, the image fills in the rest (env and labels key by key, the
    healthcheck field by field), and a request entrypoint keeps the image's Cmd out.
    """
    config = {key: value for key, value in body.items() if key not in _NOT_CONFIG}
    env = list(config.get("Env") or [])
    keys = {entry.split("=", 1)[0] for entry in env}
    config["Env"] = env + [e for e in image.get("Env") or [] if e.split("=", 1)[0] not in keys]
    for key in ("Labels", "ExposedPorts", "Volumes"):
        config[key] = {**(image.get(key) or {}), **(config.get(key) or {})}
    if not config.get("Entrypoint"):
        config["Cmd"] = config.get("Cmd") or image.get("Cmd")
        config["Entrypoint"] = config.get("Entrypoint") or image.get("Entrypoint")
    if image.get("Healthcheck"):
        mine, theirs = config.get("Healthcheck") or {}, image["Healthcheck"]
        config["Healthcheck"] = {k: mine.get(k) or theirs.get(k) for k in {*mine, *theirs}}
    for key in ("User", "WorkingDir", "StopSignal"):
        config[key] = config.get(key) or image.get(key)
    return config


def attached(spec: CreateSpec) -> dict[str, str]:
    """What each container path gets mounted from, by the request's Binds and Mounts."""
    host = spec.body["HostConfig"]
    found = {}
    for bind in host.get("Binds") or []:
        parts = bind.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        found[target] = source
    for mount in host.get("Mounts") or []:
        found[mount["Target"]] = mount["Source"]
    return found


# -- the recordings ------------------------------------------------------------------------


def test_every_scenario_of_the_recorder_is_recorded() -> None:
    """The fixtures are exactly the recorder's scenarios, each from Debian's engine 20.10."""
    assert sorted(path.stem for path in FIXTURES.glob("*.json")) == sorted(ALL)
    for scenario in ALL:
        rec = recording(scenario)
        assert rec.scenario == scenario
        assert rec.engine["api"] == "1.41"
        assert rec.container["Name"] == f"/ws-rec-{scenario}"
        assert rec.old_image != rec.new_image


def test_v2_changes_what_the_traps_need() -> None:
    """v2 differs from v1 in entrypoint, cmd, env X, workdir and healthcheck."""
    rec = recording("image-defaults")
    for key in ("Entrypoint", "Cmd", "Env", "WorkingDir", "Healthcheck", "Labels"):
        assert rec.old_image[key] != rec.new_image[key], key
    assert "X=1" in rec.old_image["Env"]
    assert "X=2" in rec.new_image["Env"]


# -- Config: old image defaults dropped, user values carried ------------------------------


def test_image_defaults_are_all_dropped() -> None:
    """With no overrides, nothing of v1's Config is left in the request but the plain flags."""
    rec = recording("image-defaults")
    assert config_part(rec.spec()) == {**PLAIN, "Image": rec.ref}


@pytest.mark.parametrize(
    "key",
    [
        *("Env", "Labels", "Cmd", "Entrypoint", "WorkingDir", "User"),
        *("ExposedPorts", "Volumes", "Healthcheck"),
    ],
)
def test_the_new_images_defaults_apply(key: str) -> None:
    """The engine fills every default from v2: none of v1's is pinned."""
    rec = recording("image-defaults")
    assert rec.container["Config"][key] == rec.old_image[key]
    assert engine_merge(rec.spec().body, rec.new_image)[key] == rec.new_image[key]


def test_changed_entrypoint_in_the_new_image_is_not_pinned() -> None:
    """Trap: the old default entrypoint and cmd are dropped, so v2's run."""
    rec = recording("image-defaults")
    body = rec.spec().body
    assert "Entrypoint" not in body
    assert "Cmd" not in body
    merged = engine_merge(body, rec.new_image)
    assert merged["Entrypoint"] == ["/bin/sh", "-e", "-c"]
    assert merged["Cmd"] == rec.new_image["Cmd"]


def test_user_values_are_carried() -> None:
    """Hostname, env, labels, cmd, user, workdir and an exposed port the user set win."""
    rec = recording("user-overrides")
    assert config_part(rec.spec()) == {
        **PLAIN,
        "Image": rec.ref,
        "Hostname": "workbench",
        "Env": ["USER_ONLY=yes"],
        "Labels": {"team": "blue", "com.example.template": "custom"},
        "Cmd": ["echo user-cmd; trap 'exit 0' TERM INT; sleep 3600 & wait"],
        "User": "0:0",
        "WorkingDir": "/srv",
        "ExposedPorts": {"9090/tcp": {}},
        "Healthcheck": {"Interval": 5_000_000_000},
    }


def test_user_cmd_runs_with_the_new_images_entrypoint() -> None:
    """A user cmd without a user entrypoint goes to v2's entrypoint, as `docker run` would."""
    rec = recording("user-overrides")
    merged = engine_merge(rec.spec().body, rec.new_image)
    assert merged["Entrypoint"] == rec.new_image["Entrypoint"]
    assert merged["Cmd"] == rec.container["Config"]["Cmd"]


def test_user_env_equal_to_an_image_default_follows_the_new_image() -> None:
    """Trap: `-e X=1` looks exactly like v1's X=1 in inspect, so it is dropped and v2's X=2
    applies; a value the user set that differs from the default is kept."""
    rec = recording("user-overrides")
    assert "X=1" in rec.container["Config"]["Env"]
    merged = engine_merge(rec.spec().body, rec.new_image)
    assert merged["Env"] == ["USER_ONLY=yes", "PATH=/bin", "X=2"]
    assert merged["Labels"] == {
        "team": "blue",
        "com.example.template": "custom",
        "org.opencontainers.image.version": "2",
    }


def test_healthcheck_is_merged_field_by_field() -> None:
    """Only the interval the user set is carried; the test and timeout come from v2."""
    rec = recording("user-overrides")
    assert rec.container["Config"]["Healthcheck"]["Test"] == rec.old_image["Healthcheck"]["Test"]
    merged = engine_merge(rec.spec().body, rec.new_image)
    assert merged["Healthcheck"] == {**rec.new_image["Healthcheck"], "Interval": 5_000_000_000}


def test_user_entrypoint_keeps_its_cmd_even_when_equal_to_the_image_cmd() -> None:
    """A user entrypoint resets the image's cmd, so the cmd is the user's: both carried."""
    rec = recording("user-entrypoint")
    assert rec.container["Config"]["Cmd"] == rec.old_image["Cmd"]
    body = rec.spec().body
    assert body["Entrypoint"] == ["/bin/sh", "-x", "-c"]
    assert body["Cmd"] == rec.old_image["Cmd"]


def test_auto_hostname_is_dropped_and_a_user_hostname_kept() -> None:
    """The short id the engine chose is not copied; `--hostname workbench` is."""
    auto = recording("image-defaults")
    assert auto.container["Config"]["Hostname"] == auto.short_id
    assert "Hostname" not in auto.spec().body
    assert recording("user-overrides").spec().body["Hostname"] == "workbench"


def test_unknown_old_image_carries_the_whole_config() -> None:
    """Without v1's config nothing can be called a default: all kept but the auto hostname
    (and nulls, which the engine reads as unset anyway)."""
    rec = recording("image-defaults")
    config = {k: v for k, v in rec.container["Config"].items() if v is not None}
    del config["Hostname"]
    assert config_part(rec.spec(old_image_known=False)) == {**config, "Image": rec.ref}


def test_stop_signal_and_timeout_are_carried() -> None:
    """`--stop-signal SIGINT --stop-timeout 2` survive (the swap stops with that timeout)."""
    body = recording("stopped").spec().body
    assert body["StopSignal"] == "SIGINT"
    assert body["StopTimeout"] == 2


def test_published_port_stays_exposed() -> None:
    """A port published with -p is exposed in the request even though v1 exposes it too."""
    body = recording("stopped").spec().body
    assert body["ExposedPorts"] == {"8080/tcp": {}}
    assert body["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
    }


# -- HostConfig: carried as is, volumes named ---------------------------------------------


@pytest.mark.parametrize("scenario", ALL)
def test_host_config_is_carried_as_is(scenario: str) -> None:
    """Every HostConfig field but Binds and Mounts is copied unchanged (Links is null on 20.10
    for user networks: links live on the endpoints)."""
    rec = recording(scenario)
    body = rec.spec().body

    def rest(host: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in host.items() if key not in ("Binds", "Mounts")}

    assert rest(body["HostConfig"]) == rest(rec.container["HostConfig"])
    assert rec.container["HostConfig"]["Links"] is None


@pytest.mark.parametrize(
    ("scenario", "policy"),
    [
        ("stopped", {"Name": "unless-stopped", "MaximumRetryCount": 0}),
        ("created", {"Name": "on-failure", "MaximumRetryCount": 3}),
    ],
)
def test_restart_policy_is_carried(scenario: str, policy: dict[str, Any]) -> None:
    """The restart policy of an exited and of a never-started container is kept."""
    assert recording(scenario).spec().body["HostConfig"]["RestartPolicy"] == policy


@pytest.mark.parametrize("scenario", ALL)
def test_every_volume_is_attached_again_by_its_name(scenario: str) -> None:
    """Each volume and bind of the old container is mounted from the same source."""
    rec = recording(scenario)
    found = attached(rec.spec())
    for mount in rec.container["Mounts"]:
        source = mount["Name"] if mount["Type"] == "volume" else mount["Source"]
        assert found[mount["Destination"]] == source


@pytest.mark.parametrize(
    ("target", "how"),
    [
        ("/anon", "declared by the image's VOLUME"),
        ("/cli-anon", "docker run -v /cli-anon: Config.Volumes"),
        ("/sdk-anon", "docker-py volumes=['/sdk-anon']: a Binds entry without a source"),
        ("/mount-anon", "--mount type=volume,dst=/mount-anon: a Mounts entry without Source"),
    ],
)
def test_anonymous_volume_is_reattached_by_name(target: str, how: str) -> None:
    """Trap: an anonymous volume given to the engine again without its name comes back empty."""
    rec = recording("volumes")
    (name,) = [m["Name"] for m in rec.container["Mounts"] if m["Destination"] == target]
    assert len(name) == 64, how
    assert attached(rec.spec())[target] == name, how


def test_named_volumes_and_binds_keep_their_options() -> None:
    """Binds stay as given (a bare anonymous one gains its name); mounts keep read-only/nocopy."""
    rec = recording("volumes")
    host = rec.spec().body["HostConfig"]
    sdk_anon = next(m["Name"] for m in rec.container["Mounts"] if m["Destination"] == "/sdk-anon")
    assert host["Binds"] == [
        "rec-named:/named",
        "/tmp/record-inspect-bind:/bind:ro",
        f"{sdk_anon}:/sdk-anon",
    ]
    mounted = next(m for m in host["Mounts"] if m["Target"] == "/mounted")
    assert mounted == {
        "Type": "volume",
        "Source": "rec-mounted",
        "Target": "/mounted",
        "ReadOnly": True,
        "VolumeOptions": {"NoCopy": True},
    }
    image_volume = next(m for m in host["Mounts"] if m["Target"] == "/anon")
    assert image_volume["ReadOnly"] is False


def test_user_declared_anonymous_volume_stays_declared() -> None:
    """`-v /cli-anon` is not an image default: Config.Volumes keeps it, v1's /anon goes."""
    assert recording("volumes").spec().body["Volumes"] == {"/cli-anon": {}}


# -- networks ------------------------------------------------------------------------------


def test_static_addresses_alias_and_links_on_the_primary_network() -> None:
    """Trap: static IPv4/IPv6, the user alias (not the short id) and the link are kept."""
    rec = recording("networks")
    front = rec.container["NetworkSettings"]["Networks"]["rec-front"]
    assert rec.short_id in front["Aliases"]
    assert rec.spec().body["NetworkingConfig"] == {
        "EndpointsConfig": {
            "rec-front": {
                "IPAMConfig": {"IPv4Address": "10.231.1.10", "IPv6Address": "fd00:231:1::10"},
                "Aliases": ["workspace"],
                "Links": ["rec-aux-db:database"],
            }
        }
    }


def test_second_network_is_connected_with_alias_link_and_driver_options() -> None:
    """API 1.41 takes one network at create: the other is connected before start, its
    dynamic address not pinned and its short-id alias dropped."""
    rec = recording("networks")
    back = rec.container["NetworkSettings"]["Networks"]["rec-back"]
    assert back["IPAMConfig"] is None
    assert rec.short_id in back["Aliases"]
    assert rec.spec().extra_networks == {
        "rec-back": {
            "Aliases": ["backend"],
            "Links": ["rec-aux-db:db-back"],
            "DriverOpts": {"com.example.endpoint": "on"},
        }
    }


def test_mac_address_is_carried_in_config() -> None:
    """The user MAC is Config.MacAddress on API 1.41; endpoint MacAddress is runtime state."""
    rec = recording("networks")
    spec = rec.spec()
    assert spec.body["MacAddress"] == "02:42:0a:e7:01:0a"
    assert rec.container["NetworkSettings"]["Networks"]["rec-back"]["MacAddress"]
    assert all("MacAddress" not in endpoint for endpoint in spec.extra_networks.values())


@pytest.mark.parametrize("scenario", ALL)
def test_only_endpoint_configuration_is_carried(scenario: str) -> None:
    """No runtime endpoint field (NetworkID, EndpointID, IPAddress, Gateway, MacAddress...)."""
    spec = recording(scenario).spec()
    endpoints = {
        **spec.body.get("NetworkingConfig", {}).get("EndpointsConfig", {}),
        **spec.extra_networks,
    }
    for endpoint in endpoints.values():
        assert set(endpoint) <= {"IPAMConfig", "Aliases", "Links", "DriverOpts"}


@pytest.mark.parametrize("old_image_known", [True, False])
def test_container_network_mode(old_image_known: bool) -> None:
    """Trap: `container:<id>` is kept, with no hostname (the owner's), no networking config
    and no exposed ports, which the engine would all refuse in that mode."""
    rec = recording("container-network-mode")
    assert rec.container["Config"]["Hostname"] != rec.short_id  # the owner's
    assert rec.container["NetworkSettings"]["Networks"] == {}
    spec = rec.spec(old_image_known=old_image_known)
    assert spec.body["HostConfig"]["NetworkMode"] == rec.container["HostConfig"]["NetworkMode"]
    assert spec.body["HostConfig"]["NetworkMode"].startswith("container:")
    for key in ("Hostname", "NetworkingConfig", "ExposedPorts", "MacAddress"):
        assert key not in spec.body
    assert spec.extra_networks == {}


def test_exited_container_keeps_its_network() -> None:
    """Stopped, it still lists its network (only the short-id alias, which is dropped)."""
    rec = recording("stopped")
    assert rec.container["State"]["Status"] == "exited"
    assert rec.container["NetworkSettings"]["Networks"]["rec-front"]["Aliases"] == [rec.short_id]
    assert rec.spec().body["NetworkingConfig"] == {"EndpointsConfig": {"rec-front": {}}}


def test_never_started_container_keeps_its_alias() -> None:
    """Created only: the engine has added no short-id alias yet; the user's is carried."""
    rec = recording("created")
    assert rec.container["State"]["Status"] == "created"
    assert rec.spec().body["NetworkingConfig"] == {
        "EndpointsConfig": {"rec-front": {"Aliases": ["fresh"]}}
    }
