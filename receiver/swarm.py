"""Swarm mode: workspaces as Swarm services, moved to a new digest by Swarm's own updates.

With ORCHESTRATOR=swarm the receiver talks to a Swarm manager. A workspace is a service
whose name starts with CONTAINER_PREFIX and whose image, without its `@digest` and
normalised, is the runtime's image reference. A refresh resolves the tag's digest once,
through the manager (with the same credentials as pulls), and updates each stale service
to `<ref>@<digest>` with registry auth, so that every node can pull a private image;
the service's own UpdateConfig drives the rolling update across the nodes (a default one
when it has none). The receiver waits, bounded, for each update's outcome:
- `completed`: the service is recreated on the digest;
- rolled back or paused with a task error: the image is at fault (the canary rule and
  the quarantine of the rollout policy apply);
- rolled back with no task error (a node went away mid-update and came back), or still
  updating when the wait ends (a node is down): a transient failure, tried again later;
  a service found mid-update is waited on, never updated again on top.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from . import rollout
from .clock import SYSTEM, Clock
from .config import Config
from .container import ENABLE_LABEL
from .engine import EngineInfo
from .errors import Cause, EngineError, ReceiverError, UnknownRuntime
from .imageref import ImageRef, try_parse
from .outcomes import Failure
from .result import RefreshResult
from .seeding import HostSeed, decide

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5


class UpdateState(enum.StrEnum):
    """A service's `UpdateStatus.State`."""

    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"

    @property
    def moving(self) -> bool:
        """Whether Swarm is still working at it."""
        return self in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED)


@dataclass(frozen=True)
class Service:
    """One Swarm service as the receiver sees it, read once from `docker service inspect`."""

    id: str
    name: str
    version: int
    image: str
    # Its image without the digest, normalised (what matches a runtime); None if unusable.
    configured_image: ImageRef | None
    # The digest its image is pinned to, if any.
    digest: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    update_state: UpdateState | None = None
    # When its last update began (to tell a new update's outcome from an older one's).
    update_started: str | None = None
    update_message: str = ""
    has_update_config: bool = False

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> Service:
        """Read the value from `docker service inspect` JSON."""
        spec: Mapping[str, Any] = data.get("Spec") or {}
        container: Mapping[str, Any] = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        image = str(container.get("Image") or "")
        parsed = try_parse(image)
        status: Mapping[str, Any] = data.get("UpdateStatus") or {}
        try:
            state: UpdateState | None = UpdateState(str(status.get("State")))
        except ValueError:
            state = None
        labels = {**(container.get("Labels") or {}), **(spec.get("Labels") or {})}
        return cls(
            id=str(data.get("ID", "")),
            name=str(spec.get("Name", "")),
            version=int((data.get("Version") or {}).get("Index") or 0),
            image=image,
            configured_image=dataclasses.replace(parsed, digest=None) if parsed else None,
            digest=parsed.digest if parsed else None,
            labels={str(k): str(v) for k, v in labels.items()},
            update_state=state,
            update_started=str(status["StartedAt"]) if status.get("StartedAt") else None,
            update_message=str(status.get("Message") or ""),
            has_update_config=bool(spec.get("UpdateConfig")),
        )

    def is_workspace_of(self, prefix: str, ref: ImageRef) -> bool:
        """Whether it is a workspace of the runtime whose image is `ref`."""
        return self.name.startswith(prefix) and self.configured_image == ref

    @property
    def opted_out(self) -> bool:
        """Whether its label says the receiver must leave it alone."""
        return self.labels.get(ENABLE_LABEL, "").strip().lower() == "false"


@dataclass(frozen=True)
class UpdateDefaults:
    """The UpdateConfig a service without one is updated with."""

    monitor_seconds: float
    parallelism: int = 1
    order: Literal["start-first", "stop-first"] = "stop-first"
    failure_action: Literal["pause", "continue", "rollback"] = "rollback"


class SwarmEngine(Protocol):
    """What swarm mode needs from a Swarm manager; raises EngineError subclasses."""

    def ping(self) -> None:
        """Return if the manager answers, else raise EngineUnavailable."""

    def info(self) -> EngineInfo:
        """The manager's API version and image store."""

    def services(self, prefix: str) -> list[Service]:
        """Every service whose name may start with `prefix`."""

    def service(self, service_id: str) -> Service | None:
        """One service as it is now, or None when it is gone."""

    def distribution_digest(self, ref: ImageRef) -> str:
        """The digest the registry serves for `ref`'s tag, asked through the manager."""

    def update_image(self, service: Service, image: str, defaults: UpdateDefaults) -> None:
        """Start a rolling update of `service` to `image`, the rest of its spec kept (and
        `defaults` as its UpdateConfig when it has none), with registry auth for the nodes."""

    def task_errors(self, service: Service, since: str | None) -> list[str]:
        """The errors of the service's tasks that failed since `since` (an update's start)."""


@dataclass(frozen=True)
class _Outcome:
    """What became of one service's update."""

    recreated: bool
    failure: Failure | None = None


class SwarmService:
    """Refreshes runtimes whose workspaces are Swarm services. Thread-safe."""

    def __init__(self, config: Config, swarm: SwarmEngine, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.engine = swarm
        self.clock = clock
        self._locks = {runtime: threading.Lock() for runtime in config.runtimes}

    def check_runtimes(self, runtimes: Iterable[str] | None) -> list[str]:
        """The runtimes to refresh (all when None); raise UnknownRuntime for a stranger."""
        if runtimes is None:
            return list(self.config.runtimes)
        names = list(dict.fromkeys(runtimes))
        unknown = [name for name in names if name not in self._locks]
        if unknown:
            raise UnknownRuntime(f"unknown runtime(s): {', '.join(unknown)}", runtime=unknown[0])
        return names

    def refresh(
        self, runtimes: Sequence[str] | None = None, *, recreate: bool = True, force: bool = False
    ) -> RefreshResult:
        """Refresh the runtimes (the command line's); one's failure never stops another."""
        names = self.check_runtimes(runtimes)
        result = RefreshResult()
        if names:
            with ThreadPoolExecutor(max_workers=min(len(names), 4)) as pool:
                for outcome in pool.map(
                    lambda r: self.refresh_runtime(r, recreate=recreate, force=force), names
                ):
                    result.merge(outcome)
        return result

    def repair(self, runtimes: Sequence[str] | None = None) -> RefreshResult:
        """Nothing to repair: Swarm itself finishes or rolls back what an update began."""
        self.check_runtimes(runtimes)
        return RefreshResult()

    def host_seeds(self, runtimes: Sequence[str]) -> dict[str, HostSeed]:
        """The digests the runtimes' services are pinned to (boot seeding). A service in
        the middle of an update counts as stale: the first observation then refreshes,
        which waits on that update instead of starting another."""
        services = self.engine.services(self.config.container_prefix)
        seeds: dict[str, HostSeed] = {}
        for runtime in runtimes:
            ref = self.config.image_for(runtime)
            mine = [s for s in services if s.is_workspace_of(self.config.container_prefix, ref)]
            pinned = [None if s.update_state and s.update_state.moving else s.digest for s in mine]
            seeds[runtime] = decide(pinned, None)
        return seeds

    def refresh_runtime(
        self,
        runtime: str,
        *,
        recreate: bool = True,
        force: bool = False,
        hold: str | None = None,
    ) -> RefreshResult:
        """Resolve the tag's digest and update every stale service onto it (canaries
        first); failures are reported in the result, never raised."""
        self.check_runtimes([runtime])
        with self._locks[runtime]:
            ref = self.config.image_for(runtime)
            result = RefreshResult()
            # As on one host, workspaces that cannot be listed raise (EngineUnavailable).
            listed = self._workspaces(ref) if recreate else []
            try:
                digest = self.engine.distribution_digest(ref)
            except EngineError as exc:
                log.warning("runtime %s: %s", runtime, exc)
                result.fail(Failure.of(runtime, exc))
                return result
            result.pulled.append(runtime)
            result.digests[runtime] = digest
            if recreate:
                self._update_services(runtime, ref, listed, digest, force, hold, result)
            return result

    def _workspaces(self, ref: ImageRef) -> list[Service]:
        prefix = self.config.container_prefix
        return [s for s in self.engine.services(prefix) if s.is_workspace_of(prefix, ref)]

    def _update_services(
        self,
        runtime: str,
        ref: ImageRef,
        listed: Sequence[Service],
        digest: str,
        force: bool,
        hold: str | None,
        result: RefreshResult,
    ) -> None:
        # An update already under way (before a restart, or one that outlived the last
        # wait) is waited on, never started again on top.
        moving = [s for s in listed if s.update_state is not None and s.update_state.moving]
        mine = list(listed)
        if moving:
            self._record(self._wait(moving, previous=None), result, count_recreated=False)
            mine = self._workspaces(ref)
        stale = [s for s in mine if force or s.digest != digest]
        result.unchanged += [s.name for s in mine if s not in stale and s.name not in result.failed]
        for service in [s for s in stale if s.opted_out]:
            result.skipped[service.name] = f"opted out ({ENABLE_LABEL}=false)"
        stale = sorted((s for s in stale if not s.opted_out), key=lambda s: s.name)
        stale = [s for s in stale if s.name not in result.failed]
        if not stale:
            return
        if hold is not None and digest == hold:
            result.held[runtime] = digest
            for service in stale:
                result.deferred[service.name] = f"held: {digest[:19]} is quarantined"
            return
        pinned = f"{ref}@{digest}"
        canaries = stale[: max(self.config.rollout.canary, 0)]
        if canaries:
            outcomes = self._update(canaries, pinned)
            self._record(outcomes, result)
            failures = [o.failure for o in outcomes.values() if o.failure is not None]
            if failures:
                fault = next((f for f in failures if rollout.is_image_fault(f)), None)
                if fault is not None:
                    result.quarantine[runtime] = fault
                for service in stale[len(canaries) :]:
                    result.deferred[service.name] = f"held: the canary {failures[0].subject} failed"
                return
        self._record(self._update(stale[len(canaries) :], pinned), result)

    def _update(self, services: Sequence[Service], image: str) -> dict[str, _Outcome]:
        """Start each service's update to `image`, then wait for all of them."""
        defaults = UpdateDefaults(monitor_seconds=self.config.swap.grace_seconds)
        started: list[Service] = []
        outcomes: dict[str, _Outcome] = {}
        for service in services:
            try:
                self.engine.update_image(service, image, defaults)
            except ReceiverError as exc:
                log.error("service %s: update refused: %s", service.name, exc)
                outcomes[service.name] = _Outcome(False, Failure.of(service.name, exc))
                continue
            log.info("service %s: updating to %s", service.name, image)
            started.append(service)
        # The status of each one's previous update lingers until its new one shows.
        outcomes.update(self._wait(started, previous={s.id: s.update_started for s in started}))
        return outcomes

    def _wait(
        self, services: Sequence[Service], previous: Mapping[str, str | None] | None
    ) -> dict[str, _Outcome]:
        """Wait, bounded by SWARM_UPDATE_TIMEOUT, for the updates of `services` to end;
        with `previous` (service id to when its last update began), only for a status
        of an update that began since."""
        if not services:
            return {}
        deadline = self.clock.monotonic() + self.config.swarm_update_timeout
        waiting = {s.id: s for s in services}
        outcomes: dict[str, _Outcome] = {}
        while waiting:
            for service_id, known in list(waiting.items()):
                try:
                    now = self.engine.service(service_id)
                except EngineError as exc:
                    # Fail fast: the retry finds the update still under way and waits on it.
                    outcomes[known.name] = _Outcome(False, Failure.of(known.name, exc))
                    del waiting[service_id]
                    continue
                if now is None:
                    outcomes[known.name] = _Outcome(
                        False, Failure(known.name, "the service was removed", Cause.OTHER)
                    )
                    del waiting[service_id]
                    continue
                state = now.update_state
                fresh = previous is None or now.update_started != previous.get(service_id)
                if state is None or state.moving or not fresh:
                    continue
                outcomes[known.name] = self._ended(now)
                del waiting[service_id]
            if not waiting or self.clock.monotonic() >= deadline:
                break
            self.clock.sleep(_POLL_SECONDS)
        for known in waiting.values():
            outcomes[known.name] = _Outcome(
                False,
                Failure(
                    known.name,
                    f"still updating after {self.config.swarm_update_timeout:g}s "
                    "(a node down?); waited on again at the next try",
                    Cause.TRANSIENT,
                ),
            )
        return outcomes

    def _ended(self, service: Service) -> _Outcome:
        """The outcome of an update that Swarm has finished with."""
        if service.update_state is UpdateState.COMPLETED:
            log.info("service %s: update completed", service.name)
            return _Outcome(True)
        try:
            errors = self.engine.task_errors(service, service.update_started)
        except EngineError as exc:
            log.warning("service %s: cannot read its tasks (%s)", service.name, exc)
            errors = []  # unknown, so not the image's fault
        what = f"update {service.update_state}: {service.update_message or 'no message'}"
        if errors:
            # A task of the new image failed: that is the image.
            reason = f"{what}; task error: {errors[0]}"
            log.error("service %s: %s", service.name, reason)
            return _Outcome(False, Failure(service.name, reason, Cause.IMAGE, restored=True))
        # Rolled back with no task of the new image failing: the tasks went away with a
        # node (it stopped mid-update, then came back). Nothing says the image is bad.
        reason = f"{what}; no task failed (a node went away?)"
        log.warning("service %s: %s", service.name, reason)
        return _Outcome(False, Failure(service.name, reason, Cause.TRANSIENT, restored=True))

    def _record(
        self, outcomes: Mapping[str, _Outcome], result: RefreshResult, count_recreated: bool = True
    ) -> None:
        for name, outcome in sorted(outcomes.items()):
            if outcome.failure is not None:
                result.fail(outcome.failure)
            elif outcome.recreated and count_recreated:
                result.recreated.append(name)
