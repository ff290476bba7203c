"""A runtime of the test stack: its template image's versions and its workspace containers.

Each `Runtime` has names of its own (runtime and container prefix), so tests sharing one
engine and registry never see each other's containers; the stack removes its workspaces
at the end. `env()` is what a receiver needs to watch it.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from receiver import config
from tests.support.stack import QUICK_STOP_CMD, Published, Stack

ADMIN_KEY = "integration-admin-key"


def receiver_env(stack: Stack, runtime: str, prefix: str, **settings: str) -> dict[str, str]:
    """The environment of a receiver that watches `runtime` (a template in the stack's
    registry under `org/`) and its `prefix` workspaces, with quick swaps, plus `settings`."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "RUNTIMES": runtime,
        "IMAGE_TEMPLATE": f"{stack.registry}/org/workspace-template-{{runtime}}:latest",
        "CONTAINER_PREFIX": prefix,
        "ADMIN_SECRET_KEY": ADMIN_KEY,
        "DOCKER_HOST": stack.docker_host,
        "SWAP_GRACE_SECONDS": "0.5",
        "SWAP_STOP_TIMEOUT": "1",
        **settings,
    }


@dataclass(frozen=True)
class Runtime:
    """A runtime whose template lives at `<registry>/<namespace>/workspace-template-<name>`."""

    stack: Stack
    name: str
    prefix: str
    registry: str
    namespace: str = "org"
    auth: tuple[str, str] | None = None

    @classmethod
    def make(
        cls,
        stack: Stack,
        *,
        registry: str | None = None,
        namespace: str = "org",
        auth: tuple[str, str] | None = None,
    ) -> Runtime:
        """A fresh runtime on `registry` (the stack's own by default), pushed as `auth`."""
        made = cls(
            stack,
            stack.unique("rt"),
            f"{stack.unique('ws')}-",
            registry or stack.registry,
            namespace,
            auth,
        )
        stack.track_container(made.prefix)
        return made

    @property
    def repository(self) -> str:
        """The template's repository path."""
        return f"{self.namespace}/workspace-template-{self.name}"

    @property
    def image_template(self) -> str:
        """IMAGE_TEMPLATE for this runtime's registry and namespace."""
        return f"{self.registry}/{self.namespace}/workspace-template-{{runtime}}:latest"

    def publish(self, version: str, **kwargs: Any) -> Published:
        """Push a new version of the template under `latest` (see Stack.publish)."""
        kwargs.setdefault("cmd", QUICK_STOP_CMD)
        return self.stack.publish(
            self.repository, version=version, registry=self.registry, auth=self.auth, **kwargs
        )

    def workspace(self, suffix: str, image: Published | str, **kwargs: Any) -> str:
        """Run the workspace `<prefix><suffix>` on `image`; its name."""
        name = f"{self.prefix}{suffix}"
        ref = image.ref if isinstance(image, Published) else image
        self.stack.run_container(name, ref, auth=self.auth, **kwargs)
        return name

    def env(self, **settings: str) -> dict[str, str]:
        """The environment of a receiver that watches this runtime, plus `settings`."""
        settings = {"IMAGE_TEMPLATE": self.image_template, **settings}
        return receiver_env(self.stack, self.name, self.prefix, **settings)

    def settings(self, **settings: str) -> config.Config:
        """`env()` as the receiver's validated settings (for one in this process)."""
        return config.load(self.env(**settings))
