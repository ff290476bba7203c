"""The container-engine interface the core depends on, and the values that cross it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .container import Container
from .imageref import ImageRef


@dataclass(frozen=True)
class Image:
    """A local image: its id, the registry digests it is known by, and its config."""

    id: str
    repo_digests: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineInfo:
    """What the receiver needs to know about the engine it talks to.

    `api_version` is the negotiated Engine API version; `containerd_store` tells that the
    engine keeps images in the containerd image store (every fresh Docker 29 install),
    where an image's id is its manifest (or index) digest, the one in `RepoDigests`, and
    an image the tag no longer names cannot be inspected even while containers run it.
    """

    api_version: tuple[int, int]
    containerd_store: bool = False


@dataclass(frozen=True)
class CreateSpec:
    """A container create request: the body for POST /containers/create and what follows."""

    name: str
    body: Mapping[str, Any]
    # Networks the engine cannot take at create time (API < 1.44): connected before start.
    extra_networks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class Engine(Protocol):
    """What the receiver needs from a container engine; raises EngineError subclasses."""

    def ping(self) -> None:
        """Return if the engine answers, else raise EngineUnavailable."""

    def info(self) -> EngineInfo:
        """The engine's API version and image store (asked once, then remembered)."""

    def pull(self, ref: ImageRef) -> Image:
        """Pull `ref` and return the pulled image; raise PullError on any failure."""

    def image(self, ref_or_id: str) -> Image | None:
        """Inspect a local image, or None when there is none."""

    def list_containers(self, prefix: str) -> list[Container]:
        """Every container (running or not) whose name may start with `prefix`."""

    def inspect_container(self, container_id: str) -> Container | None:
        """One container as it is now, or None when it no longer exists."""

    def create_container(self, spec: CreateSpec) -> str:
        """Create a container (not started) from `spec`, connect its extra networks; its id."""

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container."""

    def start(self, container_id: str) -> None:
        """Start a container."""

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop a container, killing it after `timeout` seconds."""

    def remove(self, container_id: str, *, force: bool = False) -> None:
        """Remove a container, always keeping its volumes; nothing if it is already gone."""

    def exec(self, container_id: str, command: Sequence[str], timeout: float) -> int | None:
        """Run `command` in a running container; its exit status, or None if it took
        longer than `timeout` seconds (it is left running: the API cannot stop it)."""

    def tag(self, image: str, ref: str) -> None:
        """Make `ref` (`repo:tag`) name `image` (an id or another reference)."""

    def untag(self, ref: str) -> None:
        """Remove the name `ref`; the image itself stays while a container uses it."""

    def remove_image(self, image_id: str) -> bool:
        """Remove an image no container uses (never forced); True when it is gone (removed
        now, or already gone), False when the engine keeps it (in use, or tagged)."""
