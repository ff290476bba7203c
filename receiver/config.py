"""Settings, read once from an environment mapping and validated with one error per problem."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import imageref
from .errors import ConfigError, ImageRefError

DEFAULT_TEMPLATE = "ghcr.io/molecule-ai/workspace-template-{runtime}:latest"
DEFAULT_DISPATCH_TYPES = ("template-image-published",)
SECRET_NAMES = (
    "GHCR_USER",
    "GHCR_TOKEN",
    "GITHUB_WEBHOOK_SECRET",
    "ADMIN_SECRET_KEY",
    "NOTIFY_URL",
)
# Settings the Docker SDK reads itself; passed through untouched.
DOCKER_ENV_NAMES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")

_RUNTIME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_PREFIX = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
# A registry host as image references name it: a name or IPv4, or a bracketed IPv6, and
# a port when it has one.
_REGISTRY_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class SwapSettings:
    """How containers are swapped onto a new image."""

    parallelism: int = 16
    grace_seconds: float = 5.0
    health_timeout: float = 60.0
    stop_timeout: int = 10


class RefreshMode(enum.StrEnum):
    """What automatic triggers (webhooks, the poller, retries) do with a new digest."""

    APPLY = "apply"  # pull it and swap the workspaces onto it
    NOTIFY = "notify"  # only report it (status `available`, NOTIFY_URL); an admin applies


class Orchestrator(enum.StrEnum):
    """What keeps the workspaces: the Docker engine itself, or a Swarm."""

    DOCKER = "docker"  # workspaces are containers on this host's engine
    SWARM = "swarm"  # workspaces are services of the Swarm whose manager DOCKER_HOST is


@dataclass(frozen=True)
class RolloutSettings:
    """How a new digest reaches a runtime's workspaces: canaries, retries, hooks, mode."""

    canary: int = 1
    retry_min: float = 10.0
    retry_max: float = 300.0
    pre_update_command: str | None = None
    pre_update_timeout: float = 30.0
    mode: RefreshMode = RefreshMode.APPLY


@dataclass(frozen=True)
class Config:
    """Everything the receiver needs to know, validated."""

    runtimes: tuple[str, ...]
    image_template: str = DEFAULT_TEMPLATE
    container_prefix: str = "ws-"
    image_platform: str | None = None
    ghcr_user: str | None = field(default=None, repr=False)
    ghcr_token: str | None = field(default=None, repr=False)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    auto_refresh: bool = False
    poll_interval: float = 300.0
    dispatch_event_types: tuple[str, ...] = DEFAULT_DISPATCH_TYPES
    notify_url: str | None = field(default=None, repr=False)
    webhook_max_body: int = 1024 * 1024
    log_level: str = "INFO"
    log_format: str = "text"
    swap: SwapSettings = SwapSettings()
    rollout: RolloutSettings = RolloutSettings()
    orchestrator: Orchestrator = Orchestrator.DOCKER
    # Registries (host:port) the receiver may reach over plain HTTP besides loopback ones.
    insecure_registries: tuple[str, ...] = ()
    # Swarm mode: how long one wait for services' rolling updates lasts, seconds.
    swarm_update_timeout: float = 300.0
    image_cleanup: bool = False
    docker_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def image_for(self, runtime: str) -> imageref.ImageRef:
        """The normalised image reference a runtime's containers run."""
        return imageref.parse(self.image_template.format(runtime=runtime))

    @property
    def registry_auth(self) -> tuple[str, str] | None:
        """Explicit registry credentials, or None to use the host's docker config."""
        if self.ghcr_user and self.ghcr_token:
            return (self.ghcr_user, self.ghcr_token)
        return None


class _Reader:
    """Collects values and problems from an environment mapping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value.strip() if value is not None else None

    def secret(self, name: str) -> str | None:
        """Read NAME or the file NAME_FILE points at (never both)."""
        direct, path = self.env.get(name), self.env.get(f"{name}_FILE")
        if direct and path:
            self.problems.append(f"{name} and {name}_FILE are both set; set one")
            return None
        if path:
            try:
                return Path(path).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                self.problems.append(f"{name}_FILE: cannot read {path}: {exc.strerror or exc}")
                return None
            except UnicodeDecodeError:
                self.problems.append(f"{name}_FILE: {path} is not UTF-8 text")
                return None
        return direct.strip() if direct and direct.strip() else None

    def number(self, name: str, default: float, *, minimum: float, integer: bool = False) -> float:
        text = self.raw(name)
        if not text:
            return default
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            self.problems.append(f"{name}: {text!r} is not {kind}")
            return default
        if value < minimum:
            self.problems.append(f"{name}: {text} is below the minimum of {minimum:g}")
            return default
        return value

    def flag(self, name: str) -> bool:
        text = (self.raw(name) or "").lower()
        if text in _TRUE:
            return True
        if text not in _FALSE:
            self.problems.append(f"{name}: {text!r} is not a boolean (use true or false)")
        return False


def split_list(text: str | None) -> tuple[str, ...]:
    """Split a comma- or newline-separated list, dropping blanks."""
    if not text:
        return ()
    return tuple(item.strip() for item in re.split(r"[,\n]", text) if item.strip())


def admin_keys_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """Read only the admin signing keys (for `admin-token`, which needs nothing else)."""
    reader = _Reader(env)
    keys = split_list(reader.secret("ADMIN_SECRET_KEY"))
    if reader.problems:
        raise ConfigError(reader.problems)
    return keys


def load(env: Mapping[str, str]) -> Config:
    """Build a Config from an environment mapping; raise ConfigError listing every problem."""
    r = _Reader(env)
    runtimes = split_list(r.raw("RUNTIMES"))
    if not runtimes:
        r.problems.append("RUNTIMES: required (comma-separated runtime names, e.g. claude-code)")
    for runtime in runtimes:
        if not _RUNTIME.fullmatch(runtime):
            r.problems.append(
                f"RUNTIMES: {runtime!r} is not a valid runtime name "
                "(lower-case letters, digits, '.', '_' and '-', at most 64)"
            )
    if len(set(runtimes)) != len(runtimes):
        r.problems.append("RUNTIMES: a runtime is listed twice")

    template = r.raw("IMAGE_TEMPLATE") or DEFAULT_TEMPLATE
    _check_template(template, r.problems)

    prefix = r.raw("CONTAINER_PREFIX") or "ws-"
    if not _PREFIX.fullmatch(prefix):
        r.problems.append(f"CONTAINER_PREFIX: {prefix!r} is not a valid container name prefix")

    platform = r.raw("IMAGE_PLATFORM") or None
    if platform and not _PLATFORM.fullmatch(platform):
        r.problems.append(f"IMAGE_PLATFORM: {platform!r} is not os/arch[/variant]")

    user, token = r.secret("GHCR_USER"), r.secret("GHCR_TOKEN")
    if bool(user) != bool(token):
        r.problems.append("GHCR_USER and GHCR_TOKEN: set both or neither")

    log_level = (r.raw("LOG_LEVEL") or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        r.problems.append(f"LOG_LEVEL: {log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    log_format = (r.raw("LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        r.problems.append(f"LOG_FORMAT: {log_format!r} is not text or json")

    mode_text = (r.raw("REFRESH_MODE") or RefreshMode.APPLY).lower()
    if mode_text not in tuple(RefreshMode):
        r.problems.append(f"REFRESH_MODE: {mode_text!r} is not apply or notify")
        mode_text = RefreshMode.APPLY
    retry_min = r.number("RETRY_MIN_SECONDS", 10.0, minimum=0.1)
    retry_max = r.number("RETRY_MAX_SECONDS", 300.0, minimum=0.1)
    if retry_max < retry_min:
        r.problems.append("RETRY_MAX_SECONDS: below RETRY_MIN_SECONDS")

    orchestrator_text = (r.raw("ORCHESTRATOR") or Orchestrator.DOCKER).lower()
    if orchestrator_text not in tuple(Orchestrator):
        r.problems.append(f"ORCHESTRATOR: {orchestrator_text!r} is not docker or swarm")
        orchestrator_text = Orchestrator.DOCKER
    insecure = split_list(r.raw("INSECURE_REGISTRIES"))
    for entry in insecure:
        if not _REGISTRY_HOST.fullmatch(entry):
            r.problems.append(f"INSECURE_REGISTRIES: {entry!r} is not host or host:port")

    notify_url = r.secret("NOTIFY_URL")
    if notify_url and not notify_url.startswith(("http://", "https://")):
        r.problems.append("NOTIFY_URL: must be an http:// or https:// URL")

    config = Config(
        runtimes=runtimes,
        image_template=template,
        container_prefix=prefix,
        image_platform=platform,
        ghcr_user=user,
        ghcr_token=token,
        webhook_secrets=split_list(r.secret("GITHUB_WEBHOOK_SECRET")),
        admin_keys=split_list(r.secret("ADMIN_SECRET_KEY")),
        auto_refresh=r.flag("IMAGE_AUTO_REFRESH"),
        poll_interval=r.number("POLL_INTERVAL", 300.0, minimum=10),
        dispatch_event_types=split_list(r.raw("DISPATCH_EVENT_TYPES")) or DEFAULT_DISPATCH_TYPES,
        notify_url=notify_url,
        webhook_max_body=int(r.number("WEBHOOK_MAX_BODY", 1024 * 1024, minimum=1024, integer=True)),
        log_level=log_level,
        log_format=log_format,
        swap=SwapSettings(
            parallelism=int(r.number("SWAP_PARALLELISM", 16, minimum=1, integer=True)),
            grace_seconds=r.number("SWAP_GRACE_SECONDS", 5.0, minimum=0),
            health_timeout=r.number("SWAP_HEALTH_TIMEOUT", 60.0, minimum=1),
            stop_timeout=int(r.number("SWAP_STOP_TIMEOUT", 10, minimum=0, integer=True)),
        ),
        rollout=RolloutSettings(
            canary=int(r.number("ROLLOUT_CANARY", 1, minimum=0, integer=True)),
            retry_min=retry_min,
            retry_max=retry_max,
            pre_update_command=r.raw("PRE_UPDATE_COMMAND") or None,
            pre_update_timeout=r.number("PRE_UPDATE_TIMEOUT", 30.0, minimum=1),
            mode=RefreshMode(mode_text),
        ),
        orchestrator=Orchestrator(orchestrator_text),
        insecure_registries=tuple(entry.lower() for entry in insecure),
        swarm_update_timeout=r.number("SWARM_UPDATE_TIMEOUT", 300.0, minimum=1),
        image_cleanup=r.flag("IMAGE_CLEANUP"),
        docker_env={name: env[name] for name in DOCKER_ENV_NAMES if env.get(name)},
    )
    if r.problems:
        raise ConfigError(r.problems)
    return config


def _check_template(template: str, problems: list[str]) -> None:
    if "{runtime}" not in template:
        problems.append(f"IMAGE_TEMPLATE: {template!r} must contain {{runtime}}")
        return
    try:
        rendered = template.format(runtime="sample")
    except (KeyError, IndexError, ValueError):
        problems.append(f"IMAGE_TEMPLATE: {template!r} may hold no placeholder but {{runtime}}")
        return
    try:
        ref = imageref.parse(rendered)
    except ImageRefError as exc:
        problems.append(f"IMAGE_TEMPLATE: {template!r} does not give an image reference ({exc})")
        return
    if ref.digest:
        problems.append(f"IMAGE_TEMPLATE: {template!r} pins a digest; name a tag to follow")
