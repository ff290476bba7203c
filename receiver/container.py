"""A container as the receiver sees it: one value read once from the engine's inspect JSON.

Beside it live the few answers everyone needs about a container: whether it is a
workspace of a runtime, whether it is an old container a swap set aside (and whether it
was running then), and whether it is ready (running, and healthy when it has a check).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .imageref import ImageRef, try_parse

# Raw engine JSON (container or image inspect) as the Engine API returns it. It survives
# only where it is copied faithfully: the create-spec of a replacement.
Inspect = Mapping[str, Any]

# The old container waits under `<name>-receiver-aside` until its replacement is proven.
# A crash in between leaves it recognisable for repair at the next start, and the name also
# records whether it was running (the engine renames atomically; no journal needed).
ASIDE_SUFFIX = "-receiver-aside"
STOPPED_MARK = "-stopped"
# Labels a workspace says "not me" and "not now" with (README, "Rollout policy").
ENABLE_LABEL = "workspace-image-receiver.enable"
PRE_UPDATE_LABEL = "workspace-image-receiver.pre-update"
# HostConfig modes that can name another container (`container:<id or name>`).
SHARED_MODES = ("NetworkMode", "PidMode", "IpcMode")


@dataclass(frozen=True)
class Aside:
    """What an aside name says: the container's own name and whether it was running."""

    name: str
    was_running: bool


def aside_name(name: str, *, running: bool = True) -> str:
    """The name an old container waits under while its replacement starts."""
    return f"{name}{ASIDE_SUFFIX}" + ("" if running else STOPPED_MARK)


def parse_aside(name: str) -> Aside | None:
    """The original name and run state of a container set aside by a swap, else None."""
    name = name.lstrip("/")
    for suffix, running in ((ASIDE_SUFFIX, True), (ASIDE_SUFFIX + STOPPED_MARK, False)):
        if name.endswith(suffix) and len(name) > len(suffix):
            return Aside(name[: -len(suffix)], running)
    return None


@dataclass(frozen=True)
class Healthcheck:
    """A container's HEALTHCHECK timing (the image's, with the container's overrides),
    in seconds, with the engine's defaults where neither set a value."""

    interval: float = 30.0
    timeout: float = 30.0
    start_period: float = 0.0
    retries: int = 3

    @classmethod
    def from_config(cls, config: object) -> Healthcheck | None:
        """The check of a `Config.Healthcheck`, or None without one (or `NONE`)."""
        if not isinstance(config, Mapping):
            return None
        test = config.get("Test") or []
        if not test or test[0] == "NONE":
            return None
        defaults = cls()

        def seconds(key: str, default: float) -> float:
            value = config.get(key)
            return value / 1e9 if isinstance(value, int) and value > 0 else default

        retries = config.get("Retries")
        return cls(
            interval=seconds("Interval", defaults.interval),
            timeout=seconds("Timeout", defaults.timeout),
            start_period=seconds("StartPeriod", defaults.start_period),
            retries=retries if isinstance(retries, int) and retries > 0 else defaults.retries,
        )

    @property
    def deadline(self) -> float:
        """Seconds after the start by which the engine must have judged the container: its
        start period, then `retries` failed probes `interval` apart, the last timing out."""
        return self.start_period + self.interval * self.retries + self.timeout


@dataclass(frozen=True)
class Container:
    """One container: who it is, what it runs, its state; `inspect` keeps the raw JSON."""

    id: str
    name: str
    # The reference it was created with (`Config.Image`), normalised; None for a bare id.
    configured_image: ImageRef | None
    # The image it runs (inspect's `Image`: an image id).
    image_id: str
    running: bool = False
    restarting: bool = False
    paused: bool = False
    dead: bool = False
    exit_code: int = 0
    health: Health | None = None
    healthcheck: Healthcheck | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_timeout: int | None = None
    # HostConfig.AutoRemove (`docker run --rm`): it removes itself when it stops.
    auto_remove: bool = False
    # Containers whose namespaces it joins: `container:<id or name>` modes, by kind.
    joins: Mapping[str, str] = field(default_factory=dict)
    inspect: Inspect = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_inspect(cls, data: Inspect) -> Container:
        """Read the value from `docker inspect` JSON."""
        config: Mapping[str, Any] = data.get("Config") or {}
        state: Mapping[str, Any] = data.get("State") or {}
        host: Mapping[str, Any] = data.get("HostConfig") or {}
        status = (state.get("Health") or {}).get("Status")
        timeout = config.get("StopTimeout")
        return cls(
            id=str(data.get("Id", "")),
            name=str(data.get("Name", "")).lstrip("/"),
            configured_image=try_parse(str(config.get("Image") or "")),
            image_id=str(data.get("Image") or ""),
            running=bool(state.get("Running")),
            restarting=bool(state.get("Restarting")),
            paused=bool(state.get("Paused")),
            dead=bool(state.get("Dead")),
            exit_code=int(state.get("ExitCode") or 0),
            health=_health(status),
            healthcheck=Healthcheck.from_config(config.get("Healthcheck")),
            labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
            stop_timeout=timeout if isinstance(timeout, int) and timeout >= 0 else None,
            auto_remove=bool(host.get("AutoRemove")),
            joins={
                mode: str(host[mode]).removeprefix("container:")
                for mode in SHARED_MODES
                if str(host.get(mode) or "").startswith("container:")
            },
            inspect=data,
        )

    @property
    def image_name(self) -> str:
        """`Config.Image` as it was given (what a recreation on the same image names)."""
        return str((self.inspect.get("Config") or {}).get("Image") or self.image_id)

    def joins_namespaces_of(self, other: Container) -> bool:
        """Whether it runs in another container's network, PID or IPC namespace."""
        return any(target in (other.id, other.name) for target in self.joins.values())

    @property
    def aside(self) -> Aside | None:
        """What its name says when a swap set it aside, else None."""
        return parse_aside(self.name)

    def is_workspace_of(self, prefix: str, ref: ImageRef) -> bool:
        """Tell whether it is a workspace of the runtime whose image is `ref` (not one aside)."""
        return self.name.startswith(prefix) and self.aside is None and self.configured_image == ref

    def was_set_aside_from(self, prefix: str, ref: ImageRef) -> Aside | None:
        """Its aside record when a swap of a workspace of `ref` set it aside, else None."""
        aside = self.aside
        if aside is None or not aside.name.startswith(prefix) or self.configured_image != ref:
            return None
        return aside

    @property
    def opted_out(self) -> bool:
        """Whether its label says the receiver must leave it alone."""
        return self.labels.get(ENABLE_LABEL, "").strip().lower() == "false"

    def pre_update_command(self, default: str | None) -> str | None:
        """The command to ask it with before its swap: its label's, else `default`."""
        return self.labels.get(PRE_UPDATE_LABEL, "").strip() or default

    def ready(self) -> bool:
        """Running steadily, and healthy when it has a health check."""
        return self.running and not self.restarting and self.health in (None, Health.HEALTHY)


class Health(enum.StrEnum):
    """A container's HEALTHCHECK status, as the engine reports it."""

    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


def _health(status: object) -> Health | None:
    """The health status, or None without a health check (or one the engine calls `none`)."""
    try:
        return Health(str(status))
    except ValueError:
        return None
