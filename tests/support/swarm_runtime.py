"""A runtime on a test swarm: its template's versions in the bridge registry and its
workspace services, each pinned to a node; `env()` is what a swarm-mode receiver needs.

Each one has names of its own, so tests sharing a swarm never see each other's services.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import docker.types

from tests.support.daemons import Closing
from tests.support.deliveries import template_name
from tests.support.stack import Published, unique
from tests.support.swarm import Node, Swarm
from tests.support.workspaces import ADMIN_KEY


@dataclass
class SwarmRuntime(Closing):
    """A runtime whose template lives at `<registry>/org/workspace-template-<name>`."""

    swarm: Swarm
    name: str = field(default_factory=lambda: unique("rt"))
    prefix: str = field(default_factory=lambda: f"{unique('ws')}-")
    registry: str = ""
    auth: tuple[str, str] | None = None
    services: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry = self.registry or self.swarm.registry

    def publish(self, version: str, **kwargs: Any) -> Published:
        """Push a new version of the template under `latest` (a quick-stopping busybox
        unless `cmd` says otherwise)."""
        repository = f"org/{template_name(self.name)}"
        return self.swarm.publish(
            repository, version=version, registry=self.registry, auth=self.auth, **kwargs
        )

    def service(self, suffix: str, image: str, node: Node, **kwargs: Any) -> str:
        """Create the workspace service `<prefix><suffix>` on `image`, pinned to `node`."""
        name = f"{self.prefix}{suffix}" if suffix else suffix
        return self.named_service(name, image, node, **kwargs)

    def named_service(self, name: str, image: str, node: Node, **kwargs: Any) -> str:
        """A service called `name` (with or without the prefix), removed at `close()`."""
        kwargs.setdefault("stop_grace_period", 1)
        self.swarm.create_pinned_service(name, image, node, **kwargs)
        self.services.append(name)
        return name

    def env(self, **settings: str) -> dict[str, str]:
        """The environment of a swarm-mode receiver watching this runtime, plus `settings`."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RUNTIMES": self.name,
            "IMAGE_TEMPLATE": f"{self.registry}/org/workspace-template-{{runtime}}:latest",
            "CONTAINER_PREFIX": self.prefix,
            "ADMIN_SECRET_KEY": ADMIN_KEY,
            "ORCHESTRATOR": "swarm",
            "DOCKER_HOST": self.swarm.manager.base_url,
            "INSECURE_REGISTRIES": self.registry,
            "SWAP_GRACE_SECONDS": "1",
            "SWARM_UPDATE_TIMEOUT": "60",
            **settings,
        }

    def spec_image(self, name: str) -> str:
        """The image a service's spec names now."""
        data = self._api().inspect_service(name)
        return str(data["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])

    def spec_images(self) -> dict[str, str]:
        return {name: self.spec_image(name) for name in self.services}

    def inspect(self, name: str) -> Mapping[str, Any]:
        data: Mapping[str, Any] = self._api().inspect_service(name)
        return data

    def running_images(self) -> dict[str, set[str]]:
        """Each service's running containers' image ids, over every node that answers."""
        return {
            name: {c.image_id for c in self.swarm.service_containers(name)}
            for name in self.services
        }

    def wait_running(self, images: Mapping[str, Published], timeout: float) -> dict[str, float]:
        """Wait until each service named runs exactly one container of its image; the
        seconds each took to get there, from now."""
        started = time.monotonic()
        took: dict[str, float] = {}
        while len(took) < len(images):
            for name, image in images.items():
                running = [c.image_id for c in self.swarm.service_containers(name)]
                if name not in took and running == [image.image_id]:
                    took[name] = time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"not running their images after {timeout:.0f}s: {images}")
            time.sleep(0.1)
        return took

    def start_update(self, name: str, image: str, monitor: float) -> None:
        """Update a service by hand (as an operator would), with a monitor period."""
        config = docker.types.UpdateConfig(
            parallelism=1, failure_action="rollback", monitor=int(monitor * 1e9)
        )
        self.swarm.update_image(name, image, update_config=config)

    def close(self) -> None:
        """Remove this runtime's services."""
        api = self._api()
        for name in self.services:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_service(name)

    def _api(self) -> Any:
        return self.swarm.manager.client.api
