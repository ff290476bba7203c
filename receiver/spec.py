"""Derive a replacement container's create request from the old one's inspect (pure).

What the replacement gets, field by field. "Old default" means the value in the `Config`
of the image the old container runs; the engine merged those defaults into the container's
own `Config` at its creation, so a value equal to one cannot be told from the user setting
it (`-e X=1` where the image says `X=1`). The rule, watchtower's, is to drop such a value
so that the new image's default applies: a template update wins over a user value that
merely repeats the old default.

| inspect field                     | rule                                                   |
|-----------------------------------|--------------------------------------------------------|
| Name                              | carried: the replacement takes the original name       |
| Config.Image                      | replaced by the new image reference                    |
| Config.Env                        | dropped: entries equal to an old default entry;        |
|                                   | carried: the rest (the engine puts them over the new   |
|                                   | image's env, key by key)                               |
| Config.Labels                     | dropped: keys whose value is the old default; carried: |
|                                   | the rest (merged over the new image's labels)          |
| Config.Entrypoint                 | dropped when equal to the old default, else carried    |
| Config.Cmd                        | dropped when equal to the old default and the          |
|                                   | entrypoint was dropped too; carried with a user        |
|                                   | entrypoint, which resets the image's Cmd, even when    |
|                                   | equal to the old default                               |
| Config.WorkingDir, User,          | dropped when equal to the old default, else carried    |
| StopSignal, Shell, OnBuild,       |                                                        |
| ArgsEscaped                       |                                                        |
| Config.Healthcheck                | merged: fields equal to the old default's dropped,     |
|                                   | the rest carried; the engine fills the missing fields  |
|                                   | (the test too) from the new image                      |
| Config.ExposedPorts, Volumes      | dropped: keys the old image declares; carried: the     |
|                                   | rest; every port of PortBindings exposed; no           |
|                                   | ExposedPorts at all in `container:` network mode (the  |
|                                   | engine refuses them there)                             |
| Config.Hostname                   | dropped when it is the short id (auto-assigned) or in  |
|                                   | `container:` mode (the owner's); a user one carried    |
| Config.MacAddress                 | carried: the user-set MAC of the primary network (API  |
|                                   | 1.41's place; newer engines fill it from the primary   |
|                                   | endpoint's desired MAC and still accept it on create)  |
| Config.StopTimeout, Domainname,   | carried                                                |
| Tty, OpenStdin, StdinOnce,        |                                                        |
| Attach*, NetworkDisabled          |                                                        |
| (old image unknown: None)         | every Config value carried, except the hostname rule   |
| HostConfig                        | carried as is (restart policy, resources, binds,       |
|                                   | mounts, ports, `container:<id>` mode ...), except:     |
| HostConfig.Links                  | inspect's `/db:/ws-1/alias` rewritten as `db:alias`    |
| HostConfig.Binds `/path` (an      | re-attached by name: `<volume>:/path`                  |
| anonymous volume, docker-py's     |                                                        |
| `volumes=["/path"]`)              |                                                        |
| HostConfig.Mounts volume without  | re-attached by name: Source = the volume's name        |
| Source (`--mount dst=/path`)      |                                                        |
| Mounts not in Binds/Mounts (image | re-attached by name: added to HostConfig.Mounts,       |
| VOLUME, `docker run -v /path`,    | read-only as before                                    |
| volumes-from)                     |                                                        |
| NetworkSettings.Networks          | the NetworkMode network goes in NetworkingConfig, the  |
|                                   | others in `extra_networks` (API 1.41 takes one network |
|                                   | at create; they are connected before start); each with |
|                                   | IPAMConfig (static IPv4/IPv6), Aliases minus the old   |
|                                   | short id, Links, DriverOpts carried; runtime fields    |
|                                   | (NetworkID, EndpointID, IPAddress, Gateway, MacAddress |
|                                   | ...) dropped                                           |
| NetworkMode none, host,           | no NetworkingConfig                                    |
| `container:`                      |                                                        |
| State                             | not part of the request: the swap starts the new       |
|                                   | container only if the old one was running              |

The new image's config is not needed: every rule undoes what the engine merged in from the
old image, and the engine merges the new image's defaults into the request by itself.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from typing import Any

from .container import SHARED_MODES, Container, Inspect
from .engine import CreateSpec

# Config keys whose value is dropped when it merely equals the old image's default, so the
# new image's default applies instead (the trap: pinning the old entrypoint forever).
_IMAGE_DEFAULT_KEYS = (
    "WorkingDir",
    "User",
    "StopSignal",
    "Shell",
    "OnBuild",
    "ArgsEscaped",
)
# Endpoint fields that are configuration; the rest of an endpoint's inspect is runtime state
# (its MacAddress too: the user-set MAC is Config.MacAddress).
_ENDPOINT_CONFIG_KEYS = ("IPAMConfig", "Aliases", "Links", "DriverOpts")


def build_create_spec(
    container: Container, old_image_config: Mapping[str, Any] | None, image: str
) -> CreateSpec:
    """The request that recreates `container` on `image`, keeping what the user set.

    `old_image_config` is the `Config` of the image the container runs now; values equal to
    its defaults are dropped so the new image's defaults win. When it is None (the old image
    is gone) nothing can be told apart from a default, so everything is kept.
    """
    inspect = container.inspect
    short_id = container.id[:12]
    known = old_image_config is not None
    config = _config(inspect, old_image_config or {}, image, short_id, known=known)
    host_config = _host_config(inspect)
    primary, extra = _networks(inspect, short_id)
    body: dict[str, Any] = {**config, "HostConfig": host_config}
    if primary:
        body["NetworkingConfig"] = {"EndpointsConfig": primary}
    return CreateSpec(name=container.name, body=body, extra_networks=extra)


def _network_mode(container: Inspect) -> str:
    return str((container.get("HostConfig") or {}).get("NetworkMode") or "")


def _config(
    container: Inspect, image_config: Mapping[str, Any], image: str, short_id: str, *, known: bool
) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(dict(container.get("Config") or {}))
    host_config = container.get("HostConfig") or {}
    config["Image"] = image
    shares_network = _network_mode(container).startswith("container:")
    # The engine sets the hostname to the short id unless the user chose one; a copied
    # auto hostname would make the new container claim its predecessor's identity. In
    # `container:` mode it is the owner's, and the engine refuses one.
    if config.get("Hostname") == short_id or shares_network:
        config.pop("Hostname", None)
    if known:
        for key in _IMAGE_DEFAULT_KEYS:
            if key in config and config[key] == image_config.get(key):
                config.pop(key)
        if config.get("Entrypoint") == image_config.get("Entrypoint"):
            config.pop("Entrypoint", None)
            # A user entrypoint resets the image's Cmd, so Cmd is a default only here.
            if config.get("Cmd") == image_config.get("Cmd"):
                config.pop("Cmd", None)
        config["Healthcheck"] = _minus_map(
            config.get("Healthcheck"), image_config.get("Healthcheck")
        )
        config["Env"] = _minus(config.get("Env"), image_config.get("Env"))
        config["Labels"] = _minus_map(config.get("Labels"), image_config.get("Labels"))
        config["Volumes"] = _minus_map(config.get("Volumes"), image_config.get("Volumes"))
        config["ExposedPorts"] = _minus_map(
            config.get("ExposedPorts"), image_config.get("ExposedPorts")
        )
    ports = dict(config.get("ExposedPorts") or {})
    for port in host_config.get("PortBindings") or {}:
        ports.setdefault(port, {})
    # Ports cannot be exposed in another container's network namespace; any there came
    # from the image, which the engine merges in after checking the request.
    config["ExposedPorts"] = ports if ports and not shares_network else None
    return {key: value for key, value in config.items() if value is not None}


def _host_config(container: Inspect) -> dict[str, Any]:
    host_config: dict[str, Any] = copy.deepcopy(dict(container.get("HostConfig") or {}))
    links = host_config.get("Links")
    if links:
        host_config["Links"] = [_short_link(link) for link in links]
    _reattach_volumes(container, host_config)
    return host_config


def _short_link(link: str) -> str:
    """Inspect shows links as `/target:/self/alias`; create wants `target:alias`."""
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/")


def _reattach_volumes(container: Inspect, host_config: dict[str, Any]) -> None:
    """Name every volume the old container had, so the engine makes no empty new ones.

    An anonymous volume appears in the request either without a source (a Binds entry
    `/path`, a volume mount without Source) or not at all (declared by the image's VOLUME
    or `docker run -v /path`): inspect's Mounts name them all.
    """
    volumes = {
        posixpath.normpath(str(mount.get("Destination"))): mount
        for mount in container.get("Mounts") or []
        if mount.get("Type") == "volume" and mount.get("Name")
    }
    claimed: set[str] = set()
    binds = []
    for bind in host_config.get("Binds") or []:
        target = _bind_target(bind)
        if ":" not in bind and target in volumes:
            bind = f"{volumes[target]['Name']}:{target}"
        binds.append(bind)
        claimed.add(target)
    if binds:
        host_config["Binds"] = binds
    mounts = []
    for mount in host_config.get("Mounts") or []:
        target = posixpath.normpath(str(mount.get("Target")))
        if mount.get("Type") == "volume" and not mount.get("Source") and target in volumes:
            mount = {**mount, "Source": volumes[target]["Name"]}
        mounts.append(mount)
        claimed.add(target)
    for target, volume in volumes.items():
        if target not in claimed:
            mounts.append(
                {
                    "Type": "volume",
                    "Source": volume["Name"],
                    "Target": target,
                    "ReadOnly": not volume.get("RW", True),
                }
            )
    if mounts:
        host_config["Mounts"] = mounts


def _bind_target(bind: str) -> str:
    """The container path of a Binds entry: `source:target[:mode]` or a bare `target`."""
    parts = bind.split(":")
    return posixpath.normpath(parts[1] if len(parts) > 1 else parts[0])


def _networks(
    container: Inspect, short_id: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The network to create with, and the ones to connect afterwards, config fields only."""
    mode = _network_mode(container)
    if mode in ("none", "host") or mode.startswith("container:"):
        return {}, {}
    endpoints: dict[str, dict[str, Any]] = {}
    networks: Mapping[str, Any] = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for network, endpoint in networks.items():
        settings = {
            key: copy.deepcopy(endpoint[key]) for key in _ENDPOINT_CONFIG_KEYS if endpoint.get(key)
        }
        # The engine adds the short id as an alias on every user-defined network; the
        # new container gets its own.
        aliases = [alias for alias in settings.get("Aliases", []) if alias != short_id]
        if aliases:
            settings["Aliases"] = aliases
        else:
            settings.pop("Aliases", None)
        endpoints[network] = settings
    primary_name = _primary_network(mode, networks)
    if primary_name is None:
        return {}, {}
    primary = {primary_name: endpoints.pop(primary_name)}
    return primary, endpoints


def _primary_network(mode: str, networks: Mapping[str, Any]) -> str | None:
    """The network NetworkMode names (by name, id or `default`), where a MAC address applies."""
    if mode in networks:
        return mode
    if mode == "default" and "bridge" in networks:
        return "bridge"
    by_id = [name for name, ep in networks.items() if str(ep.get("NetworkID")).startswith(mode)]
    return next(iter(by_id or networks), None)


def _minus(values: list[str] | None, defaults: list[str] | None) -> list[str] | None:
    drop = set(defaults or [])
    remaining = [value for value in values or [] if value not in drop]
    return remaining or None


def _minus_map(
    values: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    base = defaults or {}
    remaining = {
        key: value for key, value in (values or {}).items() if key not in base or base[key] != value
    }
    return remaining or None


def rejoin(spec: CreateSpec, owner: Container, new_owner_id: str) -> CreateSpec:
    """`spec` with every namespace it shared with `owner` (`container:<id or name>`) now
    shared with the container `new_owner_id` that replaced it."""
    host_config = dict(spec.body.get("HostConfig") or {})
    for mode in SHARED_MODES:
        target = str(host_config.get(mode) or "")
        if target.removeprefix("container:") in (owner.id, owner.name):
            host_config[mode] = f"container:{new_owner_id}"
    return CreateSpec(spec.name, {**spec.body, "HostConfig": host_config}, spec.extra_networks)
