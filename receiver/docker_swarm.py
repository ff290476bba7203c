"""SwarmEngine over the Docker SDK: services of the Swarm whose manager DOCKER_HOST is."""

from __future__ import annotations

import datetime
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import docker.types

from .docker_engine import DockerEngine
from .engine import EngineInfo
from .errors import EngineError, EngineUnavailable
from .imageref import ImageRef, is_digest
from .swarm import Service, TaskEnd, TaskFailure, UpdateDefaults

log = logging.getLogger(__name__)

_NS = 1_000_000_000
# How a task that did not last ended, by its terminal state: one that started and then
# failed or exited (Swarm rolls back on "failure or early termination"), or one its node
# could not prepare (pull, create) and so rejected.
_TASK_ENDS = {"failed": TaskEnd.RAN, "complete": TaskEnd.RAN, "rejected": TaskEnd.REJECTED}
# RFC 3339 with up to nanoseconds, as Swarm writes its timestamps.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def instant(text: str | None) -> datetime.datetime | None:
    """A Swarm timestamp as an aware datetime (to the microsecond), None if unreadable."""
    match = _RFC3339.fullmatch(text or "")
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    return datetime.datetime.fromisoformat(f"{seconds}.{micro}{zone}")


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
        """Every service whose name contains `prefix`; the caller anchors the match.
        EngineUnavailable when the manager cannot list them (down, or not a manager)."""
        try:
            rows = self.engine.call(lambda api: api.services(filters={"name": prefix}))
        except EngineUnavailable:
            raise
        except EngineError as exc:
            raise EngineUnavailable(f"cannot list services: {exc}") from exc
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

    def update_image(
        self, service: Service, image: str, defaults: UpdateDefaults, *, force: bool = False
    ) -> None:
        """Update to `image` keeping the rest of the spec (fetched fresh, with its version);
        the nodes get registry auth when credentials are set. `force` bumps ForceUpdate,
        so the tasks are replaced even when the image is the one they run."""
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
            template = current["Spec"].get("TaskTemplate") or {}
            bump = int(template.get("ForceUpdate") or 0) + 1 if force else None
            return api.update_service(
                current["ID"],
                version=current["Version"]["Index"],
                task_template=docker.types.TaskTemplate(
                    container_spec=docker.types.ContainerSpec(image=image), force_update=bump
                ),
                update_config=update_config,
                fetch_current_spec=True,
            )

        self.engine.call(update)

    def task_failures(
        self, service: Service, image: str | None, since: str | None
    ) -> list[TaskFailure]:
        """The service's tasks of `image` (any, when None) that ended badly at or after
        `since` (an update's start), each with the error Swarm gives."""
        tasks = self.engine.call(lambda api: api.tasks(filters={"service": service.id}))
        start = instant(since)
        found = []
        for task in tasks:
            status: Mapping[str, Any] = task.get("Status") or {}
            end = _TASK_ENDS.get(str(status.get("State")))
            if end is None:
                continue
            spec_image = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image")
            if image is not None and spec_image != image:
                continue
            when = instant(str(status.get("Timestamp") or ""))
            if start is not None and (when is None or when < start):
                continue
            error = str(status.get("Err") or status.get("Message") or "task ended")
            found.append(TaskFailure(end, error))
        return found

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
