"""Pull each runtime's image and swap the containers that run an older one."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import fanout, imageref, logs, preupdate, rollout
from .config import Config
from .container import ENABLE_LABEL, Container
from .engine import Engine, Image
from .errors import EngineError, ReceiverError
from .images import ImageMemory
from .outcomes import Failure
from .repair import repair
from .result import RefreshResult
from .seeding import HostSeed, host_seeds
from .swap import Pin, Swapper

log = logging.getLogger(__name__)

# The tag that keeps an AutoRemove container's old image while its swap is undecided.
PIN_TAG_PREFIX = "receiver-keep-"


class RefreshService:
    """Refreshes runtimes: pull, match containers, swap the stale ones. Thread-safe."""

    def __init__(self, config: Config, engine: Engine, swapper: Swapper | None = None) -> None:
        self.config = config
        self.engine = engine
        self.swapper = swapper or Swapper(engine, config.swap)
        self.images = ImageMemory(engine)
        self._locks = {runtime: threading.Lock() for runtime in config.runtimes}

    def check_runtimes(self, runtimes: Iterable[str] | None) -> list[str]:
        """The runtimes to refresh (all when None); raise UnknownRuntime for a stranger."""
        return fanout.check_runtimes(self.config.runtimes, runtimes)

    def refresh(
        self, runtimes: Sequence[str] | None = None, *, recreate: bool = True, force: bool = False
    ) -> RefreshResult:  # the command line's: no quarantine to hold
        """Refresh the runtimes; one runtime's failure never stops another.

        Raises EngineUnavailable when containers cannot be listed at all.
        """
        names = self.check_runtimes(runtimes)
        containers = self.engine.list_containers(self.config.container_prefix) if recreate else []
        return fanout.each_runtime(
            names,
            lambda runtime: self.refresh_runtime(
                runtime, recreate=recreate, force=force, containers=containers
            ),
        )

    def refresh_runtime(
        self,
        runtime: str,
        *,
        recreate: bool = True,
        force: bool = False,
        hold: str | None = None,
        containers: Sequence[Container] | None = None,
    ) -> RefreshResult:
        """Refresh one runtime; failures are reported in the result, never raised.

        `hold` is a quarantined digest: when the tag still points at it nothing is
        swapped. Raises EngineUnavailable only when `containers` is None and listing
        them fails.
        """
        self.check_runtimes([runtime])
        with self._locks[runtime], logs.context(runtime=runtime):
            ref = self.config.image_for(runtime)
            result = RefreshResult()
            mine: list[Container] = []
            if recreate:
                containers = self._repair(runtime, containers, result)
                prefix = self.config.container_prefix
                mine = [c for c in containers if c.is_workspace_of(prefix, ref)]
            pins: dict[str, str] = {}
            try:
                # The old images' configs first: the pull may make them unreadable (the
                # containerd image store forgets an image as soon as no tag names it).
                self.images.learn(c.image_id for c in mine)
                pins = self._pin(ref, mine)
                image = self.engine.pull(ref)
            except EngineError as exc:
                log.warning("runtime %s: %s", runtime, exc)
                result.fail(Failure.of(runtime, exc))
                _unpin(self.engine, pins.values())
                return result
            self.images.remember(image)
            result.pulled.append(runtime)
            digest = imageref.digest_for(list(image.repo_digests), ref)
            if digest:
                result.digests[runtime] = digest
            log.info("runtime %s: pulled %s (%s)", runtime, ref, digest or image.id)
            try:
                if recreate:
                    plan = Plan(force=force, hold=hold, pins=pins)
                    self._recreate(runtime, mine, image, ref, plan, result)
            finally:
                # The swaps are decided: the old images need their pins no more.
                _unpin(self.engine, pins.values())
            return result

    def _pin(self, ref: imageref.ImageRef, containers: Sequence[Container]) -> dict[str, str]:
        """Tag, before the pull, the old image of each running AutoRemove container: its
        swap's undo recreates it from that image, which must outlive the tag's move."""
        pins: dict[str, str] = {}
        for container in containers:
            image_id = container.image_id
            if not (container.auto_remove and container.running) or image_id in pins:
                continue
            pin = f"{ref.name}:{PIN_TAG_PREFIX}{image_id.removeprefix('sha256:')[:12]}"
            # An image no tag names is gone from the containerd image store (its container
            # runs on): pulled again by its digest, it can be pinned.
            if self.images.get(image_id) is None:
                self.images.recover(image_id, ref)
            try:
                self.engine.tag(image_id, pin)
            except EngineError as exc:
                log.warning("could not pin %s for %s: %s", image_id[:19], container.name, exc)
                continue
            pins[image_id] = pin
        return pins

    def interrupt(self) -> None:
        """Nothing to cut short: a swap in flight is let finish (drain waits for it)."""

    def host_seeds(self, runtimes: Sequence[str]) -> dict[str, HostSeed]:
        """What the host runs for each runtime (boot seeding); the images read are kept."""
        return host_seeds(self.engine, self.config, runtimes, self.images)

    def repair(self, runtimes: Sequence[str] | None = None) -> RefreshResult:
        """Finish or undo swaps a crash cut short (see repair.py); run at start.

        Raises EngineUnavailable when containers cannot be listed.
        """
        names = self.check_runtimes(runtimes)
        containers = self.engine.list_containers(self.config.container_prefix)
        result = RefreshResult()
        for runtime in names:
            with self._locks[runtime]:
                self._repair(runtime, containers, result)
        return result

    def _repair(
        self, runtime: str, containers: Sequence[Container] | None, result: RefreshResult
    ) -> Sequence[Container]:
        """Repair the runtime's containers left aside; the container list as it is after."""
        prefix = self.config.container_prefix
        if containers is None:
            containers = self.engine.list_containers(prefix)
        done = repair(self.engine, containers, prefix, self.config.image_for(runtime))
        for item in done:
            result.repaired[item.name] = item
        return self.engine.list_containers(prefix) if done else containers

    def _recreate(
        self,
        runtime: str,
        containers: list[Container],
        image: Image,
        ref: imageref.ImageRef,
        plan: Plan,
        result: RefreshResult,
    ) -> None:
        stale = [c for c in containers if plan.force or c.image_id != image.id]
        result.unchanged += [c.name for c in containers if c not in stale]
        for container in [c for c in stale if c.opted_out]:
            result.skipped[container.name] = f"opted out ({ENABLE_LABEL}=false)"
        stale = [c for c in stale if not c.opted_out]
        if not stale:
            return
        digest = result.digests.get(runtime)
        if plan.hold is not None and digest == plan.hold:
            log.info("runtime %s: %s is quarantined; nothing swapped", runtime, digest)
            result.held[runtime] = digest
            for container in stale:
                result.deferred[container.name] = f"held: {digest[:19]} is quarantined"
            return
        log.info("runtime %s: recreating %d container(s) on %s", runtime, len(stale), image.id[:19])
        swaps = _Swaps(self, runtime, image, ref, plan, result)
        swaps.dependents = _dependents(self.engine.list_containers(""), stale)
        followers = {d.id for ds in swaps.dependents.values() for d in ds}
        # A workspace that joins another's namespaces follows that one's swap.
        stale = [c for c in stale if c.id not in followers]
        swaps.all(swaps.canaries(stale, self.config.rollout.canary))
        if self.config.image_cleanup:
            self._remove_images(runtime, set(swaps.old_configs) - {image.id}, result)

    def _remove_images(self, runtime: str, image_ids: set[str], result: RefreshResult) -> None:
        """IMAGE_CLEANUP: remove replaced images; the engine keeps any a container still uses."""
        for image_id in sorted(image_ids):
            try:
                removed = self.engine.remove_image(image_id)
            except EngineError as exc:
                log.warning("runtime %s: cleanup of %s failed: %s", runtime, image_id[:19], exc)
                continue
            if removed:
                log.info("runtime %s: removed the replaced image %s", runtime, image_id[:19])
                result.removed_images.append(image_id)


@dataclass(frozen=True)
class Plan:
    """How to refresh: `force` recreates containers already on the image (and skips their
    pre-update hooks); `hold` is a quarantined digest that must not be applied; `pins`
    name, by image id, the tags keeping AutoRemove containers' old images."""

    force: bool = False
    hold: str | None = None
    pins: Mapping[str, str] = field(default_factory=dict)


def _dependents(
    everything: Sequence[Container], stale: Sequence[Container]
) -> dict[str, list[Container]]:
    """For each stale container, the containers that join its namespaces."""
    return {
        owner.id: [c for c in everything if c.aside is None and c.joins_namespaces_of(owner)]
        for owner in stale
    }


def _unpin(engine: Engine, pins: Iterable[str]) -> None:
    for pin in pins:
        try:
            engine.untag(pin)
        except EngineError as exc:
            log.warning("could not remove the tag %s: %s", pin, exc)


class SwapOutcome(enum.Enum):
    """What became of one container's turn."""

    RECREATED = enum.auto()
    UNCHANGED = enum.auto()
    DEFERRED = enum.auto()
    FAILED = enum.auto()
    GONE = enum.auto()


class _Swaps:
    """One runtime's swaps onto a pulled image: canaries alone, then the rest in parallel."""

    def __init__(
        self,
        service: RefreshService,
        runtime: str,
        image: Image,
        ref: imageref.ImageRef,
        plan: Plan,
        result: RefreshResult,
    ) -> None:
        self.service = service
        self.runtime = runtime
        self.image = image
        self.ref = ref
        self.plan = plan
        self.result = result
        self.old_configs: dict[str, Any] = {}
        self.dependents: dict[str, list[Container]] = {}
        self.lock = threading.Lock()
        # Pool threads start with an empty logging context: carry this one over.
        self.tags = logs.current_context()

    def canaries(self, stale: list[Container], wanted: int) -> list[Container]:
        """Swap canaries one by one until `wanted` are proven; the containers left to swap,
        or none when a canary failed or none could prove the image (the rest wait)."""
        candidates = rollout.canary_candidates(stale)
        if wanted <= 0 or not candidates:
            return stale
        tried: set[str] = set()
        proven = 0
        for canary in candidates:
            if proven >= wanted:
                break
            tried.add(canary.id)
            outcome = self.one(canary)
            if outcome is SwapOutcome.FAILED:
                failure = self.result.failed[canary.name]
                if rollout.is_image_fault(failure):
                    self.result.quarantine[self.runtime] = failure
                self._hold(stale, tried, f"held: the canary {canary.name} failed")
                return []
            if outcome is SwapOutcome.RECREATED:
                proven += 1
        if proven == 0:
            self._hold(stale, tried, "waiting for a canary to prove the image")
            return []
        return [c for c in stale if c.id not in tried]

    def all(self, containers: list[Container]) -> None:
        """Swap `containers` with the runtime's bounded parallelism."""
        if not containers:
            return
        workers = min(len(containers), self.service.config.swap.parallelism)
        prefix = f"swap-{self.runtime}"
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix) as pool:
            list(pool.map(self.one, containers))

    def _hold(self, stale: list[Container], tried: set[str], reason: str) -> None:
        with self.lock:
            for container in stale:
                if container.id not in tried:
                    self.result.deferred[container.name] = reason

    def one(self, container: Container) -> SwapOutcome:
        """One container's turn: look again, ask it, swap it; what became of it."""
        with logs.context(**self.tags, container=container.name):
            # An engine error reading this container (the engine went away meanwhile)
            # fails this container only: the others' outcomes still count.
            try:
                outcome = self._one(container.id, container.name)
            except ReceiverError as exc:
                log.error("runtime %s: recreate %s failed: %s", self.runtime, container.name, exc)
                self._record(container.name, failure=Failure.of(container.name, exc))
                return SwapOutcome.FAILED
            return outcome

    def _one(self, container_id: str, name: str) -> SwapOutcome:
        service, runtime = self.service, self.runtime
        fresh = service.engine.inspect_container(container_id)
        if fresh is None:
            log.info("runtime %s: %s vanished before its swap; skipped", runtime, name)
            return SwapOutcome.GONE
        if not self.plan.force and fresh.image_id == self.image.id:
            self._record(name, unchanged=True)
            return SwapOutcome.UNCHANGED
        if fresh.dead:
            # Half removed already: a swap would only make matters worse; report it.
            raise ReceiverError(f"{name}: the container is dead; not swapped")
        waiting = self._not_now(fresh)
        if waiting is not None:
            log.info("runtime %s: %s deferred: %s", runtime, name, waiting)
            self._record(name, deferred=waiting)
            return SwapOutcome.DEFERRED
        pin = self.plan.pins.get(fresh.image_id)
        service.swapper.swap(
            fresh,
            self._old_config(fresh),
            str(self.ref),
            dependents=self.dependents.get(fresh.id, ()),
            pin=Pin(pin, str(self.ref), self.image.id) if pin else None,
        )
        log.info("runtime %s: recreated %s", runtime, name)
        self._record(name, recreated=True)
        return SwapOutcome.RECREATED

    def _not_now(self, container: Container) -> str | None:
        """Why `container` must wait, or None; raises PreUpdateFailed when its hook fails.

        A paused workspace waits until it is unpaused (swapping it would end processes its
        owner froze on purpose); one the engine is restarting waits until it settles."""
        if container.paused:
            return "paused"
        if container.restarting:
            return "restarting"
        if self.plan.force or not container.running:
            return None
        settings = self.service.config.rollout
        command = container.pre_update_command(settings.pre_update_command)
        if command is None:
            return None
        return preupdate.ask(self.service.engine, container, command, settings.pre_update_timeout)

    def _old_config(self, container: Container) -> Mapping[str, Any] | None:
        """The config of the image `container` runs (read before the pull, or again)."""
        image_id = container.image_id
        with self.lock:
            if image_id not in self.old_configs:
                old = self.service.images.recover(image_id, self.ref)
                if old is None:
                    log.warning(
                        "runtime %s: the config of image %s is unknown; %s keeps every "
                        "setting it has",
                        self.runtime,
                        image_id[:19],
                        container.name,
                    )
                self.old_configs[image_id] = old.config if old is not None else None
            config: Mapping[str, Any] | None = self.old_configs[image_id]
            return config

    def _record(
        self,
        name: str,
        *,
        recreated: bool = False,
        unchanged: bool = False,
        deferred: str | None = None,
        failure: Failure | None = None,
    ) -> None:
        with self.lock:
            if recreated:
                self.result.recreated.append(name)
            if unchanged:
                self.result.unchanged.append(name)
            if deferred is not None:
                self.result.deferred[name] = deferred
            if failure is not None:
                self.result.fail(failure)
