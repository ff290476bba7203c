"""Pull each runtime's image and swap the containers that run an older one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import imageref, logs
from .config import Config
from .container import Container
from .engine import Engine, Image
from .errors import EngineError, SwapError, UnknownRuntime
from .images import ImageMemory
from .outcomes import Failure
from .repair import Repair, repair
from .seeding import HostSeed, host_seeds
from .swap import Swapper

log = logging.getLogger(__name__)

# Pulls of different runtimes overlap, but not without bound: each is a registry download.
_MAX_PARALLEL_RUNTIMES = 4


@dataclass
class RefreshResult:
    """What a refresh did: pulls per runtime, swaps per container, each failure with its reason."""

    pulled: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, Failure] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, Repair] = field(default_factory=dict)
    removed_images: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def fail(self, failure: Failure) -> None:
        """Record a failure under its subject (a runtime or a container)."""
        self.failed[failure.subject] = failure

    def merge(self, other: RefreshResult) -> None:
        """Add another result's entries to this one."""
        self.pulled += other.pulled
        self.recreated += other.recreated
        self.unchanged += other.unchanged
        self.failed.update(other.failed)
        self.digests.update(other.digests)
        self.repaired.update(other.repaired)
        self.removed_images += other.removed_images

    def as_json(self) -> dict[str, Any]:
        """The contract's JSON shape, lists sorted so answers are stable."""
        return {
            "pulled": sorted(self.pulled),
            "recreated": sorted(self.recreated),
            "unchanged": sorted(self.unchanged),
            "failed": {name: self.failed[name].reason for name in sorted(self.failed)},
            "digests": dict(sorted(self.digests.items())),
            "repaired": {name: str(self.repaired[name]) for name in sorted(self.repaired)},
            "removed_images": sorted(self.removed_images),
        }


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
        """Refresh the runtimes; one runtime's failure never stops another.

        Raises EngineUnavailable when containers cannot be listed at all.
        """
        names = self.check_runtimes(runtimes)
        containers = self.engine.list_containers(self.config.container_prefix) if recreate else []
        result = RefreshResult()
        if not names:
            return result
        workers = min(len(names), _MAX_PARALLEL_RUNTIMES)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
            outcomes = pool.map(
                lambda runtime: self.refresh_runtime(
                    runtime, recreate=recreate, force=force, containers=containers
                ),
                names,
            )
            for outcome in outcomes:
                result.merge(outcome)
        return result

    def refresh_runtime(
        self,
        runtime: str,
        *,
        recreate: bool = True,
        force: bool = False,
        containers: Sequence[Container] | None = None,
    ) -> RefreshResult:
        """Refresh one runtime; failures are reported in the result, never raised.

        Raises EngineUnavailable only when `containers` is None and listing them fails.
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
            try:
                # The old images' configs first: the pull may make them unreadable (the
                # containerd image store forgets an image as soon as no tag names it).
                self.images.learn(c.image_id for c in mine)
                image = self.engine.pull(ref)
            except EngineError as exc:
                log.warning("runtime %s: %s", runtime, exc)
                result.fail(Failure.of(runtime, exc))
                return result
            self.images.remember(image)
            result.pulled.append(runtime)
            digest = imageref.digest_for(list(image.repo_digests), ref)
            if digest:
                result.digests[runtime] = digest
            log.info("runtime %s: pulled %s (%s)", runtime, ref, digest or image.id)
            if recreate:
                self._recreate(runtime, mine, image, ref, force, result)
            return result

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
        force: bool,
        result: RefreshResult,
    ) -> None:
        stale = [c for c in containers if force or c.image_id != image.id]
        result.unchanged += [c.name for c in containers if c not in stale]
        if not stale:
            return
        log.info("runtime %s: recreating %d container(s) on %s", runtime, len(stale), image.id[:19])
        old_configs: dict[str, Any] = {}
        lock = threading.Lock()

        tags = logs.current_context()  # pool threads start with an empty context

        def swap_one(container: Container) -> None:
            with logs.context(**tags, container=container.name):
                swap_tagged(container, container.name)

        def swap_tagged(container: Container, name: str) -> None:
            # An engine error reading this container (the engine went away meanwhile) fails
            # this container only: the others' outcomes, swapped or failed, still count.
            try:
                fresh = self.engine.inspect_container(container.id)
                if fresh is None:
                    log.info("runtime %s: %s vanished before its swap; skipped", runtime, name)
                    return
                if not force and fresh.image_id == image.id:
                    with lock:
                        result.unchanged.append(name)
                    return
                old_image_id = fresh.image_id
                with lock:
                    if old_image_id not in old_configs:
                        old = self.images.recover(old_image_id, ref)
                        if old is None:
                            log.warning(
                                "runtime %s: the config of image %s is unknown; %s keeps "
                                "every setting it has",
                                runtime,
                                old_image_id[:19],
                                name,
                            )
                        old_configs[old_image_id] = old.config if old is not None else None
                    old_config = old_configs[old_image_id]
                self.swapper.swap(fresh, old_config, str(ref))
            except (SwapError, EngineError) as exc:
                log.error("runtime %s: recreate %s failed: %s", runtime, name, exc)
                with lock:
                    result.fail(Failure.of(name, exc))
                return
            log.info("runtime %s: recreated %s", runtime, name)
            with lock:
                result.recreated.append(name)

        workers = min(len(stale), self.config.swap.parallelism)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"swap-{runtime}") as pool:
            list(pool.map(swap_one, stale))
        if self.config.image_cleanup:
            self._remove_images(runtime, set(old_configs) - {image.id}, result)

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
