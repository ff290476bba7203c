"""Swarm mode: workspaces as Swarm services, moved to a new digest by Swarm's own updates.

With ORCHESTRATOR=swarm the receiver talks to a Swarm manager. A workspace is a service
whose name starts with CONTAINER_PREFIX and whose image, without its `@digest` and
normalised, is the runtime's image reference. A refresh resolves the tag's digest once,
through the manager (with the same credentials as pulls), and updates each stale service
to `<ref>@<digest>` with registry auth, so that every node can pull a private image;
the service's own UpdateConfig drives the rolling update across the nodes (a default one
when it has none). The receiver waits, bounded, for each update's outcome:
- `completed`: the service is recreated on the digest;
- rolled back or paused after a task of the new image started and then failed or exited:
  the image is at fault (the canary rule and the quarantine of the rollout policy apply);
- rolled back after a node could not start a task (pull, create), or with no task of the
  new image failing (a node went away mid-update and came back), or still updating when
  the wait ends (a node is down): a transient failure, tried again later.
A service found mid-update is waited on, never updated again on top; one whose update is
paused is the operator's and left alone.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from . import fanout, rollout
from .clock import SYSTEM, Clock
from .config import Config
from .container import ENABLE_LABEL
from .engine import EngineInfo
from .errors import Cause, EngineError, ReceiverError
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

    @property
    def paused(self) -> bool:
        """Whether Swarm stopped at a failure and waits for the operator."""
        return self in (UpdateState.PAUSED, UpdateState.ROLLBACK_PAUSED)


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
    # Replicas asked for (None: a global service, one task per node).
    replicas: int | None = 1

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
        replicated = (spec.get("Mode") or {}).get("Replicated")
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
            replicas=int(replicated.get("Replicas") or 0) if replicated is not None else None,
        )

    def is_workspace_of(self, prefix: str, ref: ImageRef) -> bool:
        """Whether it is a workspace of the runtime whose image is `ref`."""
        return self.name.startswith(prefix) and self.configured_image == ref

    @property
    def opted_out(self) -> bool:
        """Whether its label says the receiver must leave it alone."""
        return self.labels.get(ENABLE_LABEL, "").strip().lower() == "false"

    @property
    def moving(self) -> bool:
        """Whether Swarm is in the middle of updating (or rolling back) it."""
        return self.update_state is not None and self.update_state.moving

    @property
    def paused(self) -> bool:
        """Whether its last update is paused (its failure_action says so): the operator's."""
        return self.update_state is not None and self.update_state.paused

    @property
    def runs(self) -> bool:
        """Whether it runs tasks (a service scaled to 0 is the Swarm form of a stopped
        workspace: its update changes the spec and starts nothing, so proves nothing)."""
        return self.replicas is None or self.replicas > 0


@dataclass(frozen=True)
class UpdateDefaults:
    """The UpdateConfig a service without one is updated with."""

    monitor_seconds: float
    parallelism: int = 1
    order: Literal["start-first", "stop-first"] = "stop-first"
    failure_action: Literal["pause", "continue", "rollback"] = "rollback"


class TaskEnd(enum.Enum):
    """How a failed task of an update ended."""

    RAN = "ran"  # it started and then failed or exited: the image's doing
    REJECTED = "rejected"  # it never started: its node could not pull or create it


@dataclass(frozen=True)
class TaskFailure:
    """One task of an update that did not last."""

    end: TaskEnd
    error: str


class SwarmEngine(Protocol):
    """What swarm mode needs from a Swarm manager; raises EngineError subclasses."""

    def ping(self) -> None:
        """Return if the manager answers, else raise EngineUnavailable."""

    def info(self) -> EngineInfo:
        """The manager's API version and image store."""

    def services(self, prefix: str) -> list[Service]:
        """Every service whose name may start with `prefix`; EngineUnavailable if it
        cannot list them."""

    def service(self, service_id: str) -> Service | None:
        """One service as it is now, or None when it is gone."""

    def distribution_digest(self, ref: ImageRef) -> str:
        """The digest the registry serves for `ref`'s tag, asked through the manager."""

    def update_image(
        self, service: Service, image: str, defaults: UpdateDefaults, *, force: bool = False
    ) -> None:
        """Start a rolling update of `service` to `image`, the rest of its spec kept (and
        `defaults` as its UpdateConfig when it has none), with registry auth for the nodes;
        `force` restarts its tasks even when the image is the one it has."""

    def task_failures(
        self, service: Service, image: str | None, since: str | None
    ) -> list[TaskFailure]:
        """The service's tasks of `image` (any, when None) that ended badly since `since`
        (an update's start)."""


@dataclass(frozen=True)
class _Outcome:
    """What became of one service's update."""

    recreated: bool
    failure: Failure | None = None


@dataclass
class _Watch:
    """A service whose update the receiver waits on."""

    service: Service
    image: str | None  # what it is updated to (None: an update found under way)
    previous: str | None  # when its update before this one began (that status is stale)
    fresh_only: bool  # only a status of an update begun since counts


class SwarmService:
    """Refreshes runtimes whose workspaces are Swarm services. Thread-safe."""

    def __init__(self, config: Config, swarm: SwarmEngine, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.engine = swarm
        self.clock = clock
        self._locks = {runtime: threading.Lock() for runtime in config.runtimes}
        self._stopping = threading.Event()

    def check_runtimes(self, runtimes: Iterable[str] | None) -> list[str]:
        """The runtimes to refresh (all when None); raise UnknownRuntime for a stranger."""
        return fanout.check_runtimes(self.config.runtimes, runtimes)

    def refresh(
        self, runtimes: Sequence[str] | None = None, *, recreate: bool = True, force: bool = False
    ) -> RefreshResult:
        """Refresh the runtimes (the command line's); one's failure never stops another."""
        return fanout.each_runtime(
            self.check_runtimes(runtimes),
            lambda runtime: self.refresh_runtime(runtime, recreate=recreate, force=force),
        )

    def repair(self, runtimes: Sequence[str] | None = None) -> RefreshResult:
        """Nothing to repair: Swarm itself finishes or rolls back what an update began."""
        self.check_runtimes(runtimes)
        return RefreshResult()

    def interrupt(self) -> None:
        """Shutdown: end the waits on updates now (Swarm finishes the updates by itself)."""
        self._stopping.set()

    def host_seeds(self, runtimes: Sequence[str]) -> dict[str, HostSeed]:
        """The digests the runtimes' services are pinned to (boot seeding). A service in
        the middle of an update, or whose update is paused, counts as stale: the first
        observation then refreshes, which waits on an update under way instead of
        starting another."""
        services = self.engine.services(self.config.container_prefix)
        seeds: dict[str, HostSeed] = {}
        for runtime in runtimes:
            ref = self.config.image_for(runtime)
            mine = [s for s in services if s.is_workspace_of(self.config.container_prefix, ref)]
            pinned = [None if s.moving or s.paused else s.digest for s in mine]
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
        first); failures are reported in the result. Raises EngineUnavailable only when
        the services cannot be listed at the start (as on one host)."""
        self.check_runtimes([runtime])
        with self._locks[runtime]:
            ref = self.config.image_for(runtime)
            result = RefreshResult()
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
                try:
                    self._update_services(runtime, ref, listed, digest, force, hold, result)
                except EngineError as exc:
                    log.warning("runtime %s: %s", runtime, exc)
                    result.fail(Failure.of(runtime, exc))
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
        moving = [_Watch(s, None, s.update_started, fresh_only=False) for s in listed if s.moving]
        mine = list(listed)
        if moving:
            self._record(self._watch([], moving, ""), result, count_recreated=False)
            mine = self._workspaces(ref)
        mine = [s for s in mine if s.name not in result.failed]
        for service in mine:
            if service.opted_out:
                result.skipped[service.name] = f"opted out ({ENABLE_LABEL}=false)"
            elif service.paused:
                result.skipped[service.name] = (
                    f"its last update is {service.update_state}: left to the operator "
                    "(docker service update --rollback, or update it again)"
                )
        mine = [s for s in mine if s.name not in result.skipped]
        stale = sorted((s for s in mine if force or s.digest != digest), key=lambda s: s.name)
        result.unchanged += [s.name for s in mine if s not in stale]
        if not stale:
            return
        if hold is not None and digest == hold:
            result.held[runtime] = digest
            for service in stale:
                result.deferred[service.name] = f"held: {digest[:19]} is quarantined"
            return
        pinned = f"{ref}@{digest}"
        # Canaries are services that run tasks; with none, there is nothing to disturb.
        canaries = [s for s in stale if s.runs][: max(self.config.rollout.canary, 0)]
        rest = [s for s in stale if s not in canaries]
        if canaries:
            outcomes = self._update(canaries, pinned, force)
            self._record(outcomes, result)
            failures = [o.failure for o in outcomes.values() if o.failure is not None]
            if failures:
                fault = next((f for f in failures if rollout.is_image_fault(f)), None)
                if fault is not None:
                    result.quarantine[runtime] = fault
                for service in rest:
                    result.deferred[service.name] = f"held: the canary {failures[0].subject} failed"
                return
        self._record(self._update(rest, pinned, force), result)

    def _update(self, services: Sequence[Service], image: str, force: bool) -> dict[str, _Outcome]:
        """Update each service to `image`, SWAP_PARALLELISM under way at a time."""
        return self._watch(list(services), [], image, force=force)

    def _watch(
        self, to_start: list[Service], watching: list[_Watch], image: str, *, force: bool = False
    ) -> dict[str, _Outcome]:
        """Start the updates of `to_start` as slots free up (SWAP_PARALLELISM at once) and
        wait on them and on `watching`, all within one SWARM_UPDATE_TIMEOUT."""
        deadline = self.clock.monotonic() + self.config.swarm_update_timeout
        slots = max(self.config.swap.parallelism, 1)
        defaults = UpdateDefaults(monitor_seconds=self.config.swap.grace_seconds)
        queue = list(to_start)
        outcomes: dict[str, _Outcome] = {}
        while True:
            while queue and len(watching) < slots and not self._stopping.is_set():
                service = queue.pop(0)
                try:
                    self.engine.update_image(service, image, defaults, force=force)
                except ReceiverError as exc:
                    log.error("service %s: update refused: %s", service.name, exc)
                    outcomes[service.name] = _Outcome(False, Failure.of(service.name, exc))
                    continue
                log.info("service %s: updating to %s", service.name, image)
                if not service.runs and not force:
                    # No task to replace: Swarm changes the spec and begins no update.
                    outcomes[service.name] = _Outcome(True)
                    continue
                watching.append(_Watch(service, image, service.update_started, fresh_only=True))
            watching = [w for w in watching if not self._look(w, outcomes)]
            if not watching and not queue:
                break
            if self._stopping.is_set() or self.clock.monotonic() >= deadline:
                break
            self.clock.sleep(_POLL_SECONDS)
        why = (
            "the receiver is stopping"
            if self._stopping.is_set()
            else (f"still updating after {self.config.swarm_update_timeout:g}s (a node down?)")
        )
        for watch in watching:
            outcomes[watch.service.name] = _Outcome(
                False,
                Failure(
                    watch.service.name, f"{why}; waited on again at the next try", Cause.TRANSIENT
                ),
            )
        for service in queue:
            outcomes[service.name] = _Outcome(
                False, Failure(service.name, f"not started: {why}", Cause.TRANSIENT)
            )
        return outcomes

    def _look(self, watch: _Watch, outcomes: dict[str, _Outcome]) -> bool:
        """Look at one watched update; record its outcome and return True once it ended."""
        name = watch.service.name
        try:
            now = self.engine.service(watch.service.id)
        except EngineError as exc:
            # Fail fast: the retry finds the update still under way and waits on it.
            outcomes[name] = _Outcome(False, Failure.of(name, exc))
            return True
        if now is None:
            outcomes[name] = _Outcome(False, Failure(name, "the service was removed", Cause.OTHER))
            return True
        # The status of the update before lingers until this one's shows.
        stale = watch.fresh_only and now.update_started == watch.previous
        if now.update_state is None or now.moving or stale:
            return False
        outcomes[name] = self._ended(now, watch.image)
        return True

    def _ended(self, service: Service, image: str | None) -> _Outcome:
        """The outcome of an update that Swarm has finished with."""
        state = service.update_state
        if state is UpdateState.COMPLETED:
            log.info("service %s: update completed", service.name)
            return _Outcome(True)
        try:
            failures = self.engine.task_failures(service, image, service.update_started)
        except EngineError as exc:
            log.warning("service %s: cannot read its tasks (%s)", service.name, exc)
            failures = []  # unknown, so not the image's fault
        what = f"update {state}: {service.update_message or 'no message'}"
        if service.paused:
            what += "; left paused, as its failure_action says"
        restored = state is UpdateState.ROLLBACK_COMPLETED
        ran = [f for f in failures if f.end is TaskEnd.RAN]
        rejected = [f for f in failures if f.end is TaskEnd.REJECTED]
        if ran:
            # A task of the new image started and did not last: that is the image.
            reason = f"{what}; a task of the new image ended: {ran[0].error}"
            cause = Cause.IMAGE
        elif rejected:
            # A node could not pull or create it (the registry, credentials, the node).
            reason = f"{what}; a node could not start the task: {rejected[0].error}"
            cause = Cause.TRANSIENT
        else:
            # No task of the new image failed: they went away with a node (it stopped
            # mid-update, then came back). Nothing says the image is bad.
            reason = f"{what}; no task failed (a node went away?)"
            cause = Cause.TRANSIENT
        (log.error if cause is Cause.IMAGE else log.warning)("service %s: %s", service.name, reason)
        return _Outcome(False, Failure(service.name, reason, cause, restored=restored))

    def _record(
        self, outcomes: Mapping[str, _Outcome], result: RefreshResult, count_recreated: bool = True
    ) -> None:
        for name, outcome in sorted(outcomes.items()):
            if outcome.failure is not None:
                result.fail(outcome.failure)
            elif outcome.recreated and count_recreated:
                result.recreated.append(name)
