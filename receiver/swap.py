"""Replace one container by a new one on a new image, restoring the old one on any failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import SwapSettings
from .engine import Engine, Inspect
from .errors import EngineError, SwapError
from .spec import build_create_spec

log = logging.getLogger(__name__)

# The old container waits under `<name>-receiver-aside` until its replacement is proven.
# A crash in between leaves it recognisable for repair at the next start, and the name also
# records whether it was running (the engine renames atomically; no journal needed).
ASIDE_SUFFIX = "-receiver-aside"
STOPPED_MARK = "-stopped"
_POLL_SECONDS = 0.2


def aside_name(name: str, *, running: bool = True) -> str:
    """The name an old container waits under while its replacement starts."""
    return f"{name}{ASIDE_SUFFIX}" + ("" if running else STOPPED_MARK)


def parse_aside(name: str) -> tuple[str, bool] | None:
    """(original name, was running) of a container set aside by a swap, else None."""
    name = name.lstrip("/")
    for suffix, running in ((ASIDE_SUFFIX, True), (ASIDE_SUFFIX + STOPPED_MARK, False)):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], running
    return None


def is_aside(name: str) -> bool:
    """Tell whether a container name is an old container set aside by a swap."""
    return parse_aside(name) is not None


@dataclass(frozen=True)
class Clock:
    """Time as the swap sees it; tests pass a fake that does not sleep."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


class Swapper:
    """Performs the undoable swap of DESIGN.md for one container at a time (thread-safe)."""

    def __init__(self, engine: Engine, settings: SwapSettings, clock: Clock | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock or Clock()

    def swap(
        self, container: Inspect, old_image_config: Mapping[str, Any] | None, image: str
    ) -> str:
        """Recreate `container` on `image` and return the new container's id, or raise SwapError."""
        name = str(container["Name"]).lstrip("/")
        old_id = str(container["Id"])
        was_running = bool((container.get("State") or {}).get("Running"))
        spec = build_create_spec(container, old_image_config, image)
        stop_timeout = _stop_timeout(container, self.settings.stop_timeout)
        old_stopped = self._set_aside(old_id, name, was_running, stop_timeout)
        new_id: str | None = None
        try:
            new_id = self.engine.create_container(spec)
            if was_running:
                if not old_stopped:
                    self.engine.stop(old_id, stop_timeout)
                self.engine.start(new_id)
                self._wait_ready(new_id)
        except Exception as exc:  # anything at all: the old container must come back
            restored = self._restore(old_id, name, new_id, was_running)
            raise SwapError(
                f"{name}: {exc}; " + ("old container restored" if restored else "RESTORE FAILED"),
                container=name,
                restored=restored,
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
                    f"{name}: cannot rename aside: {exc}", container=name, restored=True
                ) from exc
            # Some engines cannot rename a running container (see DESIGN.md); a stopped one
            # always can.
            log.info("swap %s: rename while running failed (%s); stopping first", name, exc)
        try:
            self.engine.stop(old_id, stop_timeout)
            self.engine.rename(old_id, aside)
        except EngineError as exc:
            restored = self._restart(old_id, name, was_running)
            raise SwapError(
                f"{name}: cannot rename aside: {exc}", container=name, restored=restored
            ) from exc
        return True

    def _wait_ready(self, container_id: str) -> None:
        """Wait until healthy (with a healthcheck) or still running after the grace period."""
        settings = self.settings
        started = self.clock.monotonic()
        while True:
            state = self._state(container_id)
            health = (state.get("Health") or {}).get("Status")
            elapsed = self.clock.monotonic() - started
            if not state.get("Running") or state.get("Restarting"):
                raise SwapError(
                    f"new container stopped (exit code {state.get('ExitCode')})",
                    container=container_id,
                    restored=False,
                )
            if health == "unhealthy":
                raise SwapError(
                    "new container is unhealthy", container=container_id, restored=False
                )
            if health == "healthy" or (health is None and elapsed >= settings.grace_seconds):
                return
            if health is not None and elapsed >= settings.health_timeout:
                raise SwapError(
                    f"new container not healthy after {settings.health_timeout:g}s",
                    container=container_id,
                    restored=False,
                )
            wait = _POLL_SECONDS
            if health is None:
                # Without a healthcheck the answer is due at the grace deadline: look then,
                # not up to a poll interval later.
                wait = min(wait, max(settings.grace_seconds - elapsed, 0.0))
            self.clock.sleep(wait)

    def _state(self, container_id: str) -> Mapping[str, Any]:
        inspect = self.engine.inspect_container(container_id)
        if inspect is None:
            raise SwapError("new container disappeared", container=container_id, restored=False)
        state: Mapping[str, Any] = inspect.get("State") or {}
        return state

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
            inspect = self.engine.inspect_container(old_id)
            if inspect is not None and not (inspect.get("State") or {}).get("Running"):
                self.engine.start(old_id)
        except EngineError as exc:
            log.error("swap %s: could not start the old container again: %s", name, exc)
            return False
        return True


def _stop_timeout(container: Inspect, default: int) -> int:
    """The container's own StopTimeout when it set one, else the configured default."""
    value = (container.get("Config") or {}).get("StopTimeout")
    return int(value) if isinstance(value, int) and value >= 0 else default
