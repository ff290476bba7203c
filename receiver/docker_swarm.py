"""SwarmEngine over the Docker SDK: services of the Swarm whose manager DOCKER_HOST is."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import docker.types

from .docker_engine import DockerEngine
from .engine import EngineInfo
from .errors import EngineError
from .imageref import ImageRef, is_digest
from .swarm import Service, UpdateDefaults

log = logging.getLogger(__name__)

_NS = 1_000_000_000
# Task states of a task that ended in failure (its `Status.Err` says why).
_FAILED_TASK_STATES = frozenset({"failed", "rejected"})


class DockerSwarm:
    """Talks to a Swarm manager through a DockerEngine's SDK client and error mapping."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self._logged_in: set[str] = set()
        self._lock = threading.Lock()

    def ping(self) -> None:
        """Return if the manager answers, else raise EngineUnavailable."""
        self.engine.ping()

    def info(self) -> EngineInfo:
        """The manager's API version and image store."""
        return self.engine.info()

    def services(self, prefix: str) -> list[Service]:
        """Every service whose name contains `prefix`; the caller anchors the match."""
        rows = self.engine.call(lambda api: api.services(filters={"name": prefix}))
        return [Service.from_inspect(row) for row in rows]

    def service(self, service_id: str) -> Service | None:
        """One service as it is now, or None when it is gone."""
        data = self.engine.call(lambda api: api.inspect_service(service_id), missing_ok=True)
        return Service.from_inspect(data) if data is not None else None

    def distribution_digest(self, ref: ImageRef) -> str:
        """`GET /distribution/{ref}/json` on the manager, with the pull credentials."""
        auth = self._auth(ref)
        data = self.engine.call(lambda api: api.inspect_distribution(str(ref), auth_config=auth))
        digest = str((data.get("Descriptor") or {}).get("digest") or "")
        if not is_digest(digest):
            raise EngineError(f"{ref}: the manager told no digest")
        return digest

    def update_image(self, service: Service, image: str, defaults: UpdateDefaults) -> None:
        """Update to `image` keeping the rest of the spec (fetched fresh, with its version);
        the nodes get registry auth when credentials are set."""
        self._login_for(image)
        update_config = None
        if not service.has_update_config:
            update_config = docker.types.UpdateConfig(
                parallelism=defaults.parallelism,
                order=defaults.order,
                failure_action=defaults.failure_action,
                monitor=int(defaults.monitor_seconds * _NS),
            )

        def update(api: Any) -> Any:
            current = api.inspect_service(service.id)
            return api.update_service(
                current["ID"],
                version=current["Version"]["Index"],
                task_template=docker.types.TaskTemplate(
                    container_spec=docker.types.ContainerSpec(image=image)
                ),
                update_config=update_config,
                fetch_current_spec=True,
            )

        self.engine.call(update)

    def task_errors(self, service: Service, since: str | None) -> list[str]:
        """Errors of the service's tasks that failed since `since` (RFC 3339, as Swarm
        writes it, so later strings sort later)."""
        tasks = self.engine.call(lambda api: api.tasks(filters={"service": service.id}))
        errors = []
        for task in tasks:
            status: Mapping[str, Any] = task.get("Status") or {}
            when = str(status.get("Timestamp") or "")
            if status.get("State") in _FAILED_TASK_STATES and (since is None or when >= since):
                errors.append(str(status.get("Err") or status.get("Message") or "task failed"))
        return errors

    def _auth(self, ref: ImageRef) -> dict[str, str] | None:
        credentials = self.engine.registry_auth
        if credentials is None:
            return None
        user, password = credentials
        return {"username": user, "password": password, "serveraddress": ref.registry}

    def _login_for(self, image: str) -> None:
        """docker-py sends X-Registry-Auth with a service update only for a registry it has
        credentials for: log in to the image's registry once (the manager checks them)."""
        credentials = self.engine.registry_auth
        if credentials is None:
            return
        registry = image.split("/", 1)[0]
        with self._lock:
            if registry in self._logged_in:
                return
            self.engine.call(
                lambda api: api.login(credentials[0], credentials[1], registry=registry)
            )
            self._logged_in.add(registry)
