"""Derive a replacement container's create request from the old one's inspect (pure)."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from .engine import CreateSpec, Inspect

# Config keys whose value is dropped when it merely equals the old image's default, so the
# new image's default applies instead (the trap: pinning the old entrypoint forever).
_IMAGE_DEFAULT_KEYS = ("WorkingDir", "User", "Healthcheck", "StopSignal", "Shell", "OnBuild")
# Endpoint fields that are configuration; the rest of an endpoint's inspect is runtime state.
_ENDPOINT_CONFIG_KEYS = ("IPAMConfig", "Aliases", "Links", "DriverOpts")
_ANONYMOUS_NAME = re.compile(r"^[a-f0-9]{64}$")


def build_create_spec(
    container: Inspect, old_image_config: Mapping[str, Any] | None, image: str
) -> CreateSpec:
    """The request that recreates `container` on `image`, keeping what the user set.

    `old_image_config` is the `Config` of the image the container runs now; values equal to
    its defaults are dropped so the new image's defaults win. When it is None (the old image
    is gone) nothing can be told apart from a default, so everything is kept.
    """
    name = str(container["Name"]).lstrip("/")
    config = _config(container, old_image_config or {}, image, known=old_image_config is not None)
    host_config = _host_config(container)
    primary, extra = _networks(container)
    body: dict[str, Any] = {**config, "HostConfig": host_config}
    if primary:
        body["NetworkingConfig"] = {"EndpointsConfig": primary}
    return CreateSpec(name=name, body=body, extra_networks=extra)


def _config(
    container: Inspect, image_config: Mapping[str, Any], image: str, *, known: bool
) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(dict(container.get("Config") or {}))
    host_config = container.get("HostConfig") or {}
    config["Image"] = image
    short_id = str(container.get("Id", ""))[:12]
    network_mode = str(host_config.get("NetworkMode") or "")
    # The engine sets the hostname to the short id unless the user chose one; a copied
    # auto hostname would make the new container claim its predecessor's identity.
    if config.get("Hostname") == short_id or network_mode.startswith("container:"):
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
        config["Env"] = _minus(config.get("Env"), image_config.get("Env"))
        config["Labels"] = _minus_map(config.get("Labels"), image_config.get("Labels"))
        config["Volumes"] = _minus_map(config.get("Volumes"), image_config.get("Volumes"))
        config["ExposedPorts"] = _minus_map(
            config.get("ExposedPorts"), image_config.get("ExposedPorts")
        )
    ports = dict(config.get("ExposedPorts") or {})
    for port in host_config.get("PortBindings") or {}:
        ports.setdefault(port, {})
    config["ExposedPorts"] = ports or None
    return {key: value for key, value in config.items() if value is not None}


def _host_config(container: Inspect) -> dict[str, Any]:
    host_config: dict[str, Any] = copy.deepcopy(dict(container.get("HostConfig") or {}))
    links = host_config.get("Links")
    if links:
        host_config["Links"] = [_short_link(link) for link in links]
    anonymous = _anonymous_volumes(container, host_config)
    if anonymous:
        host_config["Mounts"] = [*(host_config.get("Mounts") or []), *anonymous]
    return host_config


def _short_link(link: str) -> str:
    """Inspect shows links as `/target:/self/alias`; create wants `target:alias`."""
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/")


def _anonymous_volumes(container: Inspect, host_config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Anonymous volumes, re-attached by name: the engine would otherwise make empty new ones."""
    claimed = {_bind_target(bind) for bind in host_config.get("Binds") or []}
    claimed |= {str(mount.get("Target")) for mount in host_config.get("Mounts") or []}
    mounts = []
    for mount in container.get("Mounts") or []:
        name = str(mount.get("Name") or "")
        target = str(mount.get("Destination") or "")
        if (
            mount.get("Type") == "volume"
            and _ANONYMOUS_NAME.fullmatch(name)
            and target not in claimed
        ):
            mounts.append(
                {
                    "Type": "volume",
                    "Source": name,
                    "Target": target,
                    "ReadOnly": not mount.get("RW", True),
                }
            )
    return mounts


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _networks(container: Inspect) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The network to create with, and the ones to connect afterwards, config fields only."""
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode in ("none", "host") or mode.startswith("container:"):
        return {}, {}
    short_id = str(container.get("Id", ""))[:12]
    endpoints: dict[str, dict[str, Any]] = {}
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    for network, endpoint in networks.items():
        settings = {
            key: copy.deepcopy(endpoint[key]) for key in _ENDPOINT_CONFIG_KEYS if endpoint.get(key)
        }
        aliases = [alias for alias in settings.get("Aliases", []) if alias != short_id]
        if aliases:
            settings["Aliases"] = aliases
        else:
            settings.pop("Aliases", None)
        endpoints[network] = settings
    primary_name = mode if mode in endpoints else next(iter(endpoints), None)
    if primary_name is None:
        return {}, {}
    primary = {primary_name: endpoints.pop(primary_name)}
    extra = endpoints
    return primary, extra


def _minus(values: list[str] | None, defaults: list[str] | None) -> list[str] | None:
    remaining = [value for value in values or [] if value not in set(defaults or [])]
    return remaining or None


def _minus_map(
    values: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    base = defaults or {}
    remaining = {
        key: value for key, value in (values or {}).items() if key not in base or base[key] != value
    }
    return remaining or None
