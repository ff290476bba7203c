"""Crash repair: a swap cut short is finished when its replacement is proven, else undone."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.container import Aside, aside_name, parse_aside
from receiver.errors import EngineError
from receiver.imageref import parse
from receiver.outcomes import RepairAction
from receiver.repair import repair
from tests.support import wiring
from tests.support.fakes import FakeEngine, container

FAILED, KEPT_REPLACEMENT, RESTORED = (
    RepairAction.FAILED,
    RepairAction.KEPT_REPLACEMENT,
    RepairAction.RESTORED,
)

REF = "ghcr.io/org/workspace-template-a:latest"
OTHER = "ghcr.io/org/workspace-template-b:latest"
OLD, NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32


def left_aside(engine: FakeEngine, name: str, *, was_running: bool, running: bool) -> str:
    """An old container a crash left under its aside name."""
    return engine.add(container(aside_name(name, running=was_running), REF, OLD, running=running))


def replacement(engine: FakeEngine, name: str, *, running: bool, health: str | None = None) -> str:
    inspect: dict[str, Any] = container(name, REF, NEW, running=running)
    if health is not None:
        inspect["State"]["Health"] = {"Status": health}
    return engine.add(inspect)


def run_repair(engine: FakeEngine) -> dict[str, RepairAction]:
    done = repair(engine, engine.list_containers("ws-"), "ws-", parse(REF))
    return {item.name: item.action for item in done}


def state(engine: FakeEngine, name: str) -> tuple[str, bool] | None:
    found = engine.by_name(name)
    return (found["Image"], found["State"]["Running"]) if found else None


def test_no_replacement_gives_the_old_container_back_running() -> None:
    """Killed between rename and create (or create failed): rename back, start again."""
    engine = FakeEngine()
    left_aside(engine, "ws-1", was_running=True, running=False)
    assert run_repair(engine) == {"ws-1": RESTORED}
    assert state(engine, "ws-1") == (OLD, True)
    assert state(engine, aside_name("ws-1")) is None


def test_a_running_replacement_is_kept_and_the_old_removed_with_its_volumes() -> None:
    """Killed after the new container was proven: only the removal was left to do."""
    engine = FakeEngine()
    old = left_aside(engine, "ws-1", was_running=True, running=False)
    replacement(engine, "ws-1", running=True)
    assert run_repair(engine) == {"ws-1": KEPT_REPLACEMENT}
    assert state(engine, "ws-1") == (NEW, True)
    assert ("remove", old, "keep") in engine.calls  # never with v=True


@pytest.mark.parametrize(
    ("running", "health"),
    [(False, None), (True, "unhealthy"), (True, "starting")],
)
def test_a_replacement_not_proven_is_removed_and_the_old_restored(
    running: bool, health: str | None
) -> None:
    """Stopped, unhealthy or still starting: undo; the next refresh tries again."""
    engine = FakeEngine()
    left_aside(engine, "ws-1", was_running=True, running=False)
    new = replacement(engine, "ws-1", running=running, health=health)
    assert run_repair(engine) == {"ws-1": RESTORED}
    assert state(engine, "ws-1") == (OLD, True)
    assert new not in engine.containers


def test_a_stopped_container_comes_back_stopped() -> None:
    """The `-stopped` aside name says the old container was not running: keep it so."""
    engine = FakeEngine()
    left_aside(engine, "ws-1", was_running=False, running=False)
    replacement(engine, "ws-1", running=False)
    assert run_repair(engine) == {"ws-1": RESTORED}
    assert state(engine, "ws-1") == (OLD, False)
    assert not [call for call in engine.calls if call[0] == "start"]


def test_other_runtimes_prefixes_and_ordinary_containers_are_left_alone() -> None:
    """Only asides of this runtime's image and prefix are touched."""
    engine = FakeEngine()
    engine.add(container(aside_name("ws-b"), OTHER, OLD, running=False))
    engine.add(container(aside_name("db-1"), REF, OLD, running=False))
    engine.add(container("ws-2", REF, OLD))
    assert run_repair(engine) == {}
    assert engine.ops() == []


def test_an_engine_error_is_reported_and_the_others_still_repaired() -> None:
    """A failure on one container is recorded; the next one is still repaired."""
    engine = FakeEngine()
    left_aside(engine, "ws-1", was_running=True, running=False)
    left_aside(engine, "ws-2", was_running=True, running=False)
    original = engine.rename
    calls = 0

    def flaky_rename(container_id: str, name: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise EngineError("engine busy")
        original(container_id, name)

    engine.rename = flaky_rename  # type: ignore[method-assign]
    done = repair(engine, engine.list_containers("ws-"), "ws-", parse(REF))
    assert sorted((item.name, item.action, item.detail) for item in done) == [
        ("ws-1", FAILED, "engine busy"),
        ("ws-2", RESTORED, ""),
    ]


def test_a_refresh_repairs_first_then_swaps_onto_the_new_image() -> None:
    """The refresh path repairs under the runtime's lock, then recreates as usual."""
    engine = FakeEngine()
    engine.publish(REF, NEW, "sha256:" + "2" * 64)
    left_aside(engine, "ws-1", was_running=True, running=False)
    service = wiring.service(engine, wiring.settings())
    result = service.refresh(["a"])
    assert {name: done.action for name, done in result.repaired.items()} == {"ws-1": RESTORED}
    assert result.recreated == ["ws-1"]
    assert state(engine, "ws-1") == (NEW, True)
    assert [c for c in engine.containers.values() if parse_aside(c["Name"])] == []
    assert service.repair().repaired == {}


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("/ws-1-receiver-aside", ("ws-1", True)),
        ("ws-1-receiver-aside-stopped", ("ws-1", False)),
        ("ws-1", None),
        ("-receiver-aside", None),
        ("ws-1-receiver-aside-x", None),
    ],
)
def test_parse_aside(name: str, parsed: tuple[str, bool] | None) -> None:
    """Aside names carry the original name and whether it was running."""
    assert parse_aside(name) == (Aside(*parsed) if parsed else None)
