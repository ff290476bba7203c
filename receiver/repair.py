"""Crash repair: finish or undo a swap that a crash or SIGKILL cut short.

A swap renames the old container to `<name>-receiver-aside[-stopped]` before it creates the
replacement, so after a crash the engine itself says what was going on:
- the replacement is ready (running, and healthy when it has a healthcheck), and the old
  container was running: the swap had done its work; the old container is removed,
  volumes kept;
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
from .container import Aside, Container
from .engine import Engine
from .errors import EngineError
from .outcomes import RepairAction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repair:
    """What was done about one container left aside."""

    name: str
    action: RepairAction
    detail: str = ""

    def __str__(self) -> str:
        return self.action + (f": {self.detail}" if self.detail else "")


def repair(
    engine: Engine, containers: Sequence[Container], prefix: str, ref: imageref.ImageRef
) -> list[Repair]:
    """Repair every container of `ref`'s runtime that a swap left aside."""
    by_name = {c.name: c for c in containers}
    done: list[Repair] = []
    for old in containers:
        aside = old.was_set_aside_from(prefix, ref)
        if aside is not None:
            done.append(_repair_one(engine, old, aside, by_name.get(aside.name)))
    return done


def _repair_one(
    engine: Engine, old: Container, aside: Aside, replacement: Container | None
) -> Repair:
    name = aside.name
    try:
        if replacement is not None and aside.was_running and replacement.ready():
            engine.remove(old.id)
            log.warning("repair %s: the swap had finished; removed the old container", name)
            return Repair(name, RepairAction.KEPT_REPLACEMENT)
        if replacement is not None:
            engine.remove(replacement.id, force=True)
        engine.rename(old.id, name)
        if aside.was_running and not old.running:
            engine.start(old.id)
    except EngineError as exc:
        log.error("repair %s: failed, old container is %s: %s", name, old.id[:12], exc)
        return Repair(name, RepairAction.FAILED, str(exc))
    log.warning("repair %s: an unfinished swap was undone; the old container is back", name)
    return Repair(name, RepairAction.RESTORED)
