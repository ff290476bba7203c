"""Replace one container by a new one on a new image, restoring the old one on any failure."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .clock import SYSTEM, Clock
from .config import SwapSettings
from .container import Container, Health, aside_name
from .engine import CreateSpec, Engine
from .errors import Cause, EngineError, NotReady, ReceiverError, SwapError
from .spec import build_create_spec

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2
_CLOSE_ENOUGH = 0.001
# The status the engine refuses an invalid create or start with (errdefs.InvalidParameter).
_INVALID = 400


class Swapper:
    """Performs the undoable swap of one container at a time (thread-safe); see README."""

    def __init__(self, engine: Engine, settings: SwapSettings, clock: Clock = SYSTEM) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    def swap(
        self, container: Container, old_image_config: Mapping[str, Any] | None, image: str
    ) -> str:
        """Recreate `container` on `image` and return the new container's id, or raise SwapError."""
        name, old_id, was_running = container.name, container.id, container.running
        spec = build_create_spec(container, old_image_config, image)
        stop_timeout = _stop_timeout(container, self.settings.stop_timeout)
        old_stopped = self._set_aside(old_id, name, was_running, stop_timeout)
        new_id: str | None = None
        try:
            new_id = self._create(spec)
            if was_running:
                if not old_stopped:
                    self.engine.stop(old_id, stop_timeout)
                self._start_new(new_id)
                self._wait_ready(new_id)
        except Exception as exc:  # anything at all: the old container must come back
            restored = self._restore(old_id, name, new_id, was_running)
            raise SwapError(
                f"{name}: {exc}; " + ("old container restored" if restored else "RESTORE FAILED"),
                container=name,
                restored=restored,
                cause=exc.cause if isinstance(exc, ReceiverError) else Cause.OTHER,
            ) from exc
        try:
            self.engine.remove(old_id)
        except EngineError as exc:
            # The new container runs; the old one is only clutter now, repaired at next start.
            log.warning(
                "swap %s: new container runs but removing the old one failed: %s", name, exc
            )
        return new_id

    def _set_aside(self, old_id: str, name: str, was_running: bool, stop_timeout: int) -> bool:
        """Rename the old container aside; returns whether it had to be stopped for that."""
        aside = aside_name(name, running=was_running)
        try:
            self.engine.rename(old_id, aside)
            return False
        except EngineError as exc:
            if not was_running:
                raise SwapError(
                    f"{name}: cannot rename aside: {exc}",
                    container=name,
                    restored=True,
                    cause=exc.cause,
                ) from exc
            # Some engines cannot rename a running container (see README); a stopped one
            # always can.
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

    def _restore(self, old_id: str, name: str, new_id: str | None, was_running: bool) -> bool:
        """Undo a swap: remove the replacement, give the old container its name and state back.

        If the old container is gone (removed by hand meanwhile), the replacement is all that
        is left of the workspace: it is kept, whatever its state, and the swap reported failed.
        """
        try:
            if self.engine.inspect_container(old_id) is None:
                log.error("swap %s: the old container vanished; keeping the new one", name)
                return False
            if new_id is not None:
                self.engine.remove(new_id, force=True)
            self.engine.rename(old_id, name)
        except EngineError as exc:
            log.error("swap %s: RESTORE FAILED, old container is %s: %s", name, old_id[:12], exc)
            return False
        return self._restart(old_id, name, was_running)

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
