"""A recording fake of swarm.SwarmEngine: services whose updates end as each digest's fate
says, on the next look after they begin (or never, for a fate that hangs)."""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Mapping

from receiver.engine import EngineInfo
from receiver.errors import EngineError, EngineUnavailable
from receiver.imageref import ImageRef, parse
from receiver.swarm import Service, TaskEnd, TaskFailure, UpdateDefaults, UpdateState


class Fate(enum.Enum):
    """How Swarm ends an update to a digest."""

    COMPLETES = "completes"
    ROLLS_BACK = "rolls back"  # a task of the new image failed; Swarm rolled back
    EXITS = "exits"  # a task of the new image exited 0 at once; Swarm rolled back
    NOT_PULLED = "not pulled"  # a node could not pull it (task rejected); rolled back
    NODE_LOST = "node lost"  # rolled back, no task failed (its node went away and came back)
    PAUSES = "pauses"  # failure_action=pause after a task failed
    HANGS = "hangs"  # still updating (its node is down)
    REFUSED = "refused"  # the manager refuses the update


@dataclasses.dataclass(frozen=True)
class Update:
    """One update_image call."""

    service: str
    image: str
    defaults: UpdateDefaults | None
    force: bool = False


_ENDED = {
    Fate.COMPLETES: UpdateState.COMPLETED,
    Fate.ROLLS_BACK: UpdateState.ROLLBACK_COMPLETED,
    Fate.EXITS: UpdateState.ROLLBACK_COMPLETED,
    Fate.NOT_PULLED: UpdateState.ROLLBACK_COMPLETED,
    Fate.NODE_LOST: UpdateState.ROLLBACK_COMPLETED,
    Fate.PAUSES: UpdateState.PAUSED,
}


class FakeSwarm:
    """Services by id; `digests` is what the registry serves per tag; `fates` per digest."""

    def __init__(self) -> None:
        self.services_by_id: dict[str, Service] = {}
        self.digests: dict[ImageRef, str] = {}
        self.fates: dict[str, Fate] = {}
        self.updates: list[Update] = []
        self.calls: list[str] = []
        self.down = False
        self._failures: dict[str, list[tuple[str, str, TaskFailure]]] = {}
        # Updates begun but not yet seen: service id to the image it goes back to.
        self._begun: dict[str, str] = {}
        self._clock = itertools.count(1)

    # -- setting up ----------------------------------------------------------------------

    def add(
        self,
        name: str,
        image: str,
        *,
        labels: Mapping[str, str] | None = None,
        update_config: bool = False,
        state: UpdateState | None = None,
        replicas: int | None = 1,
    ) -> Service:
        """A service running `image` (a reference, with or without @digest)."""
        ref = parse(image)
        service = Service(
            id=f"id-{name}",
            name=name,
            version=1,
            image=image,
            configured_image=dataclasses.replace(ref, digest=None),
            digest=ref.digest,
            labels=dict(labels or {}),
            update_state=state,
            update_started=self._now() if state else None,
            has_update_config=update_config,
            replicas=replicas,
        )
        self.services_by_id[service.id] = service
        return service

    def by_name(self, name: str) -> Service:
        return next(s for s in self.services_by_id.values() if s.name == name)

    def finish(self, name: str, fate: Fate = Fate.COMPLETES, digest: str | None = None) -> None:
        """End an update that is under way (one added mid-update, or one that hangs)."""
        service = self.by_name(name)
        image = service.image if digest is None else f"{service.configured_image}@{digest}"
        self._end(service, image, fate)

    def updated_names(self) -> list[str]:
        return [update.service for update in self.updates]

    # -- SwarmEngine ---------------------------------------------------------------------

    def ping(self) -> None:
        self._call("ping")

    def info(self) -> EngineInfo:
        self._call("info")
        return EngineInfo(api_version=(1, 45))

    def services(self, prefix: str) -> list[Service]:
        self._call("services")
        return [s for s in self.services_by_id.values() if prefix in s.name]

    def service(self, service_id: str) -> Service | None:
        self._call("service")
        service = self.services_by_id.get(service_id)
        if service is None:
            return None
        if service_id in self._begun:
            # First look after the update began: Swarm has finished with it (or not).
            previous = self._begun.pop(service_id)
            fate = self.fates.get(service.digest or "", Fate.COMPLETES)
            if fate is Fate.HANGS:
                return self.services_by_id[service_id]
            self._end(service, previous, fate)
        return self.services_by_id[service_id]

    def distribution_digest(self, ref: ImageRef) -> str:
        self._call("distribution")
        try:
            return self.digests[ref]
        except KeyError:
            raise EngineError(f"{ref}: manifest unknown") from None

    def update_image(
        self, service: Service, image: str, defaults: UpdateDefaults, *, force: bool = False
    ) -> None:
        self._call("update")
        current = self.services_by_id[service.id]
        digest = parse(image).digest or ""
        if self.fates.get(digest) is Fate.REFUSED:
            raise EngineError(f"{service.name}: update out of sequence")
        self.updates.append(
            Update(service.name, image, None if current.has_update_config else defaults, force)
        )
        # As Swarm does: the status is cleared, and an update begins only if a task changes.
        changed = (image != current.image or force) and current.runs
        if changed:
            self._begun[service.id] = current.image
        self.services_by_id[service.id] = dataclasses.replace(
            current,
            version=current.version + 1,
            image=image,
            digest=digest,
            update_state=UpdateState.UPDATING if changed else None,
            update_started=self._now() if changed else None,
        )

    def task_failures(
        self, service: Service, image: str | None, since: str | None
    ) -> list[TaskFailure]:
        self._call("tasks")
        return [
            failure
            for when, task_image, failure in self._failures.get(service.id, [])
            if (since is None or when >= since) and (image is None or task_image == image)
        ]

    # -- inside --------------------------------------------------------------------------

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise EngineUnavailable("the manager does not answer")

    def _now(self) -> str:
        return f"2026-12-01T00:{next(self._clock):05d}Z"

    def _end(self, service: Service, previous: str, fate: Fate) -> None:
        state = _ENDED[fate]
        image = service.image
        failure = {
            Fate.ROLLS_BACK: TaskFailure(TaskEnd.RAN, 'starting container failed: "/missing"'),
            Fate.PAUSES: TaskFailure(TaskEnd.RAN, 'starting container failed: "/missing"'),
            Fate.EXITS: TaskFailure(TaskEnd.RAN, "finished"),
            Fate.NOT_PULLED: TaskFailure(TaskEnd.REJECTED, "No such image"),
        }.get(fate)
        if failure is not None:
            self._failures.setdefault(service.id, []).append((self._now(), image, failure))
        if state is UpdateState.ROLLBACK_COMPLETED:
            image = previous
        ref = parse(image)
        self.services_by_id[service.id] = dataclasses.replace(
            service, image=image, digest=ref.digest, update_state=state
        )
