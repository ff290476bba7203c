"""Replace one container by a new one on a new image, restoring the old one on any failure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .clock import SYSTEM, Clock
from .config import SwapSettings
from .container import Container, Health, aside_name
from .engine import CreateSpec, Engine
from .errors import Cause, EngineError, NotReady, ReceiverError, SwapError
from .spec import build_create_spec, rejoin

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2
# A failed replacement waits under this name while an AutoRemove container is recreated.
_FAILED_SUFFIX = "-receiver-failed"
_CLOSE_ENOUGH = 0.001
# The status the engine refuses an invalid create or start with (errdefs.InvalidParameter).
_INVALID = 400


@dataclass(frozen=True)
class Pin:
    """The old image, kept by a tag of its own until the swap is decided: what an AutoRemove
    container is recreated from when its swap is undone (it removed itself at its stop).

    `ref` is the name the workspaces use (`repo:latest`), which points at `current` (the
    new image) once pulled; `tag` names the old image meanwhile.
    """

    tag: str
    ref: str
    current: str


class Swapper:
    """Performs the undoable swap of one container at a time (thread-safe); see README."""

    def __init__(self, engine: Engine, settings: SwapSettings, clock: Clock = SYSTEM) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        # Held around every create, and around the moment an undo points the workspaces'
        # tag at the old image, so that no other create sees it there.
        self._create_lock = threading.Lock()

    def swap(
        self,
        container: Container,
        old_image_config: Mapping[str, Any] | None,
        image: str,
        *,
        dependents: Sequence[Container] = (),
        pin: Pin | None = None,
    ) -> str:
        """Recreate `container` on `image` and return the new container's id, or raise SwapError.

        `dependents` are containers that join its namespaces (`--network`/`--pid`
        `container:<it>`): once the replacement is proven they are recreated joining it,
        each on its own image with its own settings; if one cannot follow, the whole swap
        is undone and they run on with the old container. `pin` keeps the old image of an
        AutoRemove container (README, "How a container is replaced").
        """
        name, old_id, was_running = container.name, container.id, container.running
        spec = build_create_spec(container, old_image_config, image)
        undo: CreateSpec | None = None
        if container.auto_remove and was_running:
            if pin is None:
                raise SwapError(
                    f"{name}: an AutoRemove container needs its old image pinned first",
                    container=name,
                    restored=True,
                    cause=Cause.OTHER,
                )
            # It removes itself when stopped: the undo must not need it.
            undo = build_create_spec(container, None, container.image_name)
        stop_timeout = _stop_timeout(container, self.settings.stop_timeout)
        old_stopped = self._set_aside(container, stop_timeout)
        new_id: str | None = None
        followed: list[tuple[Container, str]] = []
        try:
            new_id = self._create(spec)
            if was_running:
                if not old_stopped:
                    self.engine.stop(old_id, stop_timeout)
                self._start_new(new_id)
                self._wait_ready(new_id)
            for dependent in dependents:
                followed.append((dependent, self._follow(dependent, container, new_id)))
        except Exception as exc:  # anything at all: the old container must come back
            self._unfollow(followed)
            restored = self._restore(container, new_id, undo, pin)
            self._restart_dependents(dependents)
            raise SwapError(
                f"{name}: {exc}; " + ("old container restored" if restored else "RESTORE FAILED"),
                container=name,
                restored=restored,
                cause=exc.cause if isinstance(exc, ReceiverError) else Cause.OTHER,
            ) from exc
        for old in [old_id, *(dependent.id for dependent, _ in followed)]:
            try:
                self.engine.remove(old)
            except EngineError as exc:
                # The new container runs; the old one is clutter now, repaired at next start.
                log.warning(
                    "swap %s: new container runs but removing the old %s failed: %s",
                    name,
                    old[:12],
                    exc,
                )
        return new_id

    def _follow(self, dependent: Container, owner: Container, new_owner_id: str) -> str:
        """Recreate `dependent` joining the owner's replacement; the new dependent's id."""
        spec = rejoin(build_create_spec(dependent, None, dependent.image_name), owner, new_owner_id)
        stop_timeout = _stop_timeout(dependent, self.settings.stop_timeout)
        # Renamed aside under its state before the owner stopped (a PID-sharing one died
        # with it), so that a crash now leaves it recognisable for repair.
        self._set_aside(dependent, stop_timeout)
        new_id = self._create(spec)
        try:
            if dependent.running:
                self.engine.stop(dependent.id, stop_timeout)
                self._start_new(new_id)
                self._wait_ready(new_id)
        except Exception:
            self.engine.remove(new_id, force=True)
            raise
        log.info("swap %s: %s follows it", owner.name, dependent.name)
        return new_id

    def _unfollow(self, followed: Sequence[tuple[Container, str]]) -> None:
        """Undo followed dependents: each gets its old container back (started by
        `_restart_dependents` once the owner is back)."""
        for dependent, new_id in followed:
            try:
                self.engine.remove(new_id, force=True)
                self.engine.rename(dependent.id, dependent.name)
            except EngineError as exc:
                log.error("swap: could not give %s its old container back: %s", dependent.name, exc)

    def _restart_dependents(self, dependents: Sequence[Container]) -> None:
        """After an undo: start again the dependents that ran (a PID-sharing one dies with
        the container whose namespace it joined)."""
        for dependent in dependents:
            if not dependent.running:
                continue
            try:
                found = self.engine.inspect_container(dependent.id)
                if found is not None and found.aside is not None:
                    self.engine.rename(dependent.id, dependent.name)
                if found is not None and not found.running:
                    self.engine.start(dependent.id)
            except EngineError as exc:
                log.error("swap: could not start %s again: %s", dependent.name, exc)

    def _set_aside(self, container: Container, stop_timeout: int) -> bool:
        """Rename the old container aside; returns whether it had to be stopped for that."""
        name, old_id, was_running = container.name, container.id, container.running
        aside = aside_name(name, running=was_running)
        try:
            self.engine.rename(old_id, aside)
            return False
        except EngineError as exc:
            # A stopped container can always be renamed; an AutoRemove one would remove
            # itself if stopped first.
            if not was_running or container.auto_remove:
                raise SwapError(
                    f"{name}: cannot rename aside: {exc}",
                    container=name,
                    restored=True,
                    cause=exc.cause,
                ) from exc
            # Some engines cannot rename a running container (see README).
            log.info("swap %s: rename while running failed (%s); stopping first", name, exc)
        try:
            self.engine.stop(old_id, stop_timeout)
            self.engine.rename(old_id, aside)
        except EngineError as exc:
            restored = self._restart(old_id, name, was_running)
            raise SwapError(
                f"{name}: cannot rename aside: {exc}",
                container=name,
                restored=restored,
                cause=exc.cause,
            ) from exc
        return True

    def _create(self, spec: CreateSpec) -> str:
        """Create the replacement; a request the old container's settings made and the new
        image's config broke is the image's fault (400: invalid parameter)."""
        try:
            with self._create_lock:
                return self.engine.create_container(spec)
        except EngineError as exc:
            if exc.status == _INVALID:
                raise NotReady(f"the engine refused to create it: {exc}") from exc
            raise

    def _start_new(self, container_id: str) -> None:
        """Start the replacement; a start refused as invalid (400: its command is not in the
        image, say) is the image's fault, anything else is not known to be."""
        try:
            self.engine.start(container_id)
        except EngineError as exc:
            if exc.status == _INVALID:
                raise NotReady(f"new container could not start: {exc}") from exc
            raise

    def _wait_ready(self, container_id: str) -> None:
        """Wait until the new container is proven: healthy, when it has a health check
        (a check still `starting` is not a failure until its deadline); else still running
        after the grace period. The health deadline is the one its own check declares
        (start period + interval x retries + timeout), never less than SWAP_HEALTH_TIMEOUT."""
        settings = self.settings
        started = self.clock.monotonic()
        grace_ends = started + settings.grace_seconds
        health_ends: float | None = None
        while True:
            new = self._inspect(container_id)
            now = self.clock.monotonic()
            if not new.running or new.restarting:
                raise NotReady(f"new container stopped (exit code {new.exit_code})")
            if new.health is Health.UNHEALTHY:
                raise NotReady("new container is unhealthy")
            if new.health is Health.HEALTHY:
                return
            if new.health is None:
                # Without a health check the answer is due at the grace deadline: look
                # then, not up to a poll interval later (a millisecond short is enough).
                remaining = grace_ends - now
                if remaining <= _CLOSE_ENOUGH:
                    return
                self.clock.sleep(min(_POLL_SECONDS, remaining))
                continue
            if health_ends is None:
                declared = new.healthcheck.deadline if new.healthcheck else 0.0
                health_ends = started + max(declared, settings.health_timeout)
            if now >= health_ends:
                raise NotReady(f"new container not healthy after {health_ends - started:g}s")
            self.clock.sleep(min(_POLL_SECONDS, health_ends - now))

    def _inspect(self, container_id: str) -> Container:
        found = self.engine.inspect_container(container_id)
        if found is None:
            raise NotReady("new container disappeared", cause=Cause.OTHER)
        return found

    def _restore(
        self,
        container: Container,
        new_id: str | None,
        undo: CreateSpec | None,
        pin: Pin | None,
    ) -> bool:
        """Undo a swap: remove the replacement, give the old container its name and state back.

        An AutoRemove container is gone once stopped: it is recreated exactly (`undo`) on its
        pinned old image. Any other old container that is gone (removed by hand meanwhile)
        leaves the replacement as all there is of the workspace: it is kept, whatever its
        state, and the swap reported failed.
        """
        name, old_id = container.name, container.id
        try:
            if self.engine.inspect_container(old_id) is None:
                if undo is not None and pin is not None:
                    return self._recreate_old(container, new_id, undo, pin)
                log.error("swap %s: the old container vanished; keeping the new one", name)
                return False
            if new_id is not None:
                self.engine.remove(new_id, force=True)
            self.engine.rename(old_id, name)
        except EngineError as exc:
            log.error("swap %s: RESTORE FAILED, old container is %s: %s", name, old_id[:12], exc)
            return False
        return self._restart(old_id, name, container.running)

    def _recreate_old(
        self, container: Container, new_id: str | None, undo: CreateSpec, pin: Pin
    ) -> bool:
        """The undo of an AutoRemove container's swap: the old container, recreated exactly
        on its old image (the workspaces' tag points there for the create), started."""
        name = container.name
        if new_id is not None and self.engine.inspect_container(new_id) is not None:
            # Still holding the volumes (their data) until the old container has them back.
            # (An AutoRemove replacement that could not start has removed itself already;
            # it named the volumes, so the engine kept them.)
            self.engine.rename(new_id, f"{name}{_FAILED_SUFFIX}")
        with self._create_lock:
            self.engine.tag(pin.tag, pin.ref)
            try:
                restored_id = self.engine.create_container(undo)
            finally:
                self.engine.tag(pin.current, pin.ref)
        if new_id is not None:
            self.engine.remove(new_id, force=True)
        self.engine.start(restored_id)
        log.warning("swap %s: the AutoRemove container was recreated on its old image", name)
        return True

    def _restart(self, old_id: str, name: str, was_running: bool) -> bool:
        if not was_running:
            return True
        try:
            old = self.engine.inspect_container(old_id)
            if old is not None and not old.running:
                self.engine.start(old_id)
        except EngineError as exc:
            log.error("swap %s: could not start the old container again: %s", name, exc)
            return False
        return True


def _stop_timeout(container: Container, default: int) -> int:
    """The container's own StopTimeout when it set one, else the configured default."""
    return container.stop_timeout if container.stop_timeout is not None else default
