"""Crash repair: finish or undo a swap that a crash or SIGKILL cut short.

A swap renames the old container to `<name>-receiver-aside[-stopped]` before it creates the
replacement, so after a crash the engine itself says what was going on:
- the replacement runs (and is healthy, when it has a healthcheck), and the old container
  was running: the swap had done its work; the old container is removed, volumes kept;
- otherwise (no replacement, or one that is stopped, restarting, unhealthy or still
  starting, or the old container was a stopped one): the replacement is removed and the
  old container gets its name back, and is started again if it was running.
The next refresh then redoes what was undone. Nothing is lost either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from . import imageref
from .engine import Engine, Inspect, configured_image, container_name
from .errors import EngineError
from .swap import parse_aside

log = logging.getLogger(__name__)

KEPT_REPLACEMENT, RESTORED, FAILED = "kept the replacement", "restored the old container", "failed"


@dataclass(frozen=True)
class Repair:
    """What was done about one container left aside."""

    name: str
    action: str
    detail: str = ""


def _proven(replacement: Inspect) -> bool:
    state = replacement.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    return (
        bool(state.get("Running")) and not state.get("Restarting") and health in (None, "healthy")
    )


def repair(
    engine: Engine, containers: Sequence[Inspect], prefix: str, ref: imageref.ImageRef
) -> list[Repair]:
    """Repair every container of `ref`'s runtime that a swap left aside."""
    by_name = {container_name(c): c for c in containers}
    done: list[Repair] = []
    for aside in containers:
        parsed = parse_aside(container_name(aside))
        if parsed is None:
            continue
        name, was_running = parsed
        if not name.startswith(prefix) or configured_image(aside) != ref:
            continue
        done.append(_repair_one(engine, aside, name, was_running, by_name.get(name)))
    return done


def _repair_one(
    engine: Engine, aside: Inspect, name: str, was_running: bool, replacement: Inspect | None
) -> Repair:
    aside_id = str(aside["Id"])
    try:
        if replacement is not None and was_running and _proven(replacement):
            engine.remove(aside_id)
            log.warning("repair %s: the swap had finished; removed the old container", name)
            return Repair(name, KEPT_REPLACEMENT)
        if replacement is not None:
            engine.remove(str(replacement["Id"]), force=True)
        engine.rename(aside_id, name)
        if was_running and not (aside.get("State") or {}).get("Running"):
            engine.start(aside_id)
    except EngineError as exc:
        log.error("repair %s: failed, old container is %s: %s", name, aside_id[:12], exc)
        return Repair(name, FAILED, str(exc))
    log.warning("repair %s: an unfinished swap was undone; the old container is back", name)
    return Repair(name, RESTORED)
