"""The swap: set the old container aside, prove the new one, restore the old on any failure."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.config import SwapSettings
from receiver.container import Container, aside_name, parse_aside
from receiver.engine import CreateSpec, Image
from receiver.errors import Cause, EngineError, SwapError
from receiver.imageref import parse
from receiver.swap import Pin, Swapper
from tests.support.fakes import FakeClock, FakeEngine, container, sidecar

REF = "ghcr.io/org/workspace-template-a:latest"
OLD, NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32


def setup(running: bool = True, **settings: Any) -> tuple[FakeEngine, Swapper, str]:
    engine = FakeEngine()
    engine.publish(REF, NEW, "sha256:" + "2" * 64)
    engine.pull(parse(REF))
    cid = engine.add(container("ws-1", REF, OLD, running=running))
    swapper = Swapper(engine, SwapSettings(**settings), FakeClock())
    engine.calls.clear()
    return engine, swapper, cid


def test_successful_swap_order() -> None:
    """Rename aside, create, stop old, start new, then remove old (volumes kept)."""
    engine, swapper, old = setup()
    new = swapper.swap(engine.container(old), {}, REF)
    assert engine.ops() == ["rename", "create", "stop", "start", "remove"]
    assert ("rename", old, "ws-1-receiver-aside") in engine.calls
    assert ("remove", old, "keep") in engine.calls
    assert engine.containers[new]["Name"] == "/ws-1"
    assert engine.containers[new]["State"]["Running"] is True


def test_stopped_container_is_recreated_stopped() -> None:
    """A stopped container's replacement is created but never started."""
    engine, swapper, old = setup(running=False)
    new = swapper.swap(engine.container(old), {}, REF)
    assert "start" not in engine.ops()
    assert "stop" not in engine.ops()
    assert engine.containers[new]["State"]["Running"] is False


def test_create_failure_restores_the_old_container() -> None:
    """If create fails, the old container gets its name back and keeps running."""
    engine, swapper, old = setup()
    engine.fail["create"] = EngineError("no such image")
    with pytest.raises(SwapError) as caught:
        swapper.swap(engine.container(old), {}, REF)
    assert caught.value.restored is True
    assert caught.value.container == "ws-1"
    assert caught.value.cause is Cause.OTHER
    assert engine.containers[old]["Name"] == "/ws-1"
    assert engine.containers[old]["State"]["Running"] is True
    assert list(engine.containers) == [old]


def test_new_container_exiting_restores_and_restarts_the_old() -> None:
    """A replacement that stops during the grace period is removed; the old one runs again."""
    engine, swapper, old = setup(grace_seconds=2)
    engine.start_state = {"Running": False, "Restarting": False, "ExitCode": 1}
    with pytest.raises(SwapError, match="exit code 1") as caught:
        swapper.swap(engine.container(old), {}, REF)
    assert caught.value.cause is Cause.IMAGE
    assert list(engine.containers) == [old]
    assert engine.containers[old]["Name"] == "/ws-1"
    assert engine.ops()[-3:] == ["remove", "rename", "start"]


def test_unhealthy_replacement_is_rolled_back() -> None:
    """A replacement whose healthcheck fails is rolled back."""
    engine, swapper, old = setup()
    engine.start_state = {"Running": True, "Restarting": False, "Health": {"Status": "unhealthy"}}
    with pytest.raises(SwapError, match="unhealthy"):
        swapper.swap(engine.container(old), {}, REF)
    assert engine.containers[old]["Name"] == "/ws-1"


def test_health_timeout_is_bounded() -> None:
    """A replacement stuck in `starting` fails after the health timeout."""
    engine, swapper, old = setup(health_timeout=3)
    engine.start_state = {"Running": True, "Restarting": False, "Health": {"Status": "starting"}}
    with pytest.raises(SwapError, match="not healthy after 3s"):
        swapper.swap(engine.container(old), {}, REF)
    assert list(engine.containers) == [old]


def test_healthy_replacement_does_not_wait_for_the_grace_period() -> None:
    """A healthcheck that passes ends the wait at once."""
    engine, swapper, old = setup(grace_seconds=1000)
    engine.start_state = {"Running": True, "Restarting": False, "Health": {"Status": "healthy"}}
    swapper.swap(engine.container(old), {}, REF)
    assert engine.by_name("ws-1") is not None
    assert old not in engine.containers


def test_rename_of_a_running_container_falls_back_to_stop_first() -> None:
    """If the engine cannot rename a running container, the old one is stopped, then renamed."""
    engine, swapper, old = setup()
    real_rename = engine.rename
    attempts: list[str] = []

    def picky_rename(cid: str, name: str) -> None:
        attempts.append(name)
        if engine.containers[cid]["State"]["Running"]:
            raise EngineError("sandbox not found")
        real_rename(cid, name)

    engine.rename = picky_rename  # type: ignore[method-assign,assignment]
    swapper.swap(engine.container(old), {}, REF)
    assert attempts == ["ws-1-receiver-aside", "ws-1-receiver-aside"]
    assert old not in engine.containers
    assert engine.by_name("ws-1") is not None


def test_the_containers_own_stop_timeout_wins() -> None:
    """Config.StopTimeout set by the user is used instead of the default."""
    engine, swapper, old = setup(stop_timeout=10)
    engine.containers[old]["Config"]["StopTimeout"] = 42
    swapper.swap(engine.container(old), {}, REF)
    assert ("stop", old, "42") in engine.calls


def test_aside_names_are_recognisable() -> None:
    """Aside names round-trip through parse_aside, with or without the leading slash."""
    assert parse_aside("/" + aside_name("ws-x")) is not None
    assert parse_aside("ws-x") is None


def test_a_replacement_removed_by_hand_mid_swap_restores_the_old() -> None:
    """Someone removes the new container while it proves itself: the old one comes back."""
    engine, swapper, old = setup(grace_seconds=5)
    original_start = engine.start

    def start_then_vanish(container_id: str) -> None:
        original_start(container_id)
        if container_id != old:
            engine.containers.pop(container_id)  # `docker rm -f` from another terminal

    engine.start = start_then_vanish  # type: ignore[method-assign]
    with pytest.raises(SwapError, match="disappeared") as caught:
        swapper.swap(engine.container(old), {}, REF)
    assert caught.value.restored is True
    assert engine.containers[old]["Name"] == "/ws-1"
    assert engine.containers[old]["State"]["Running"] is True


def test_an_old_container_removed_by_hand_mid_swap_keeps_the_new_one() -> None:
    """If the old container is gone, the replacement is all that is left: it is kept even
    though it failed its check, and the swap reports that nothing could be restored."""
    engine, swapper, old = setup(grace_seconds=5)
    engine.start_state = {"Running": False, "Restarting": False, "ExitCode": 1}
    original_stop = engine.stop

    def stop_then_vanish(container_id: str, timeout: int) -> None:
        original_stop(container_id, timeout)
        engine.containers.pop(container_id)

    engine.stop = stop_then_vanish  # type: ignore[method-assign]
    with pytest.raises(SwapError) as caught:
        swapper.swap(engine.container(old), {}, REF)
    assert caught.value.restored is False
    kept = engine.by_name("ws-1")
    assert kept is not None
    assert kept["Image"] == NEW


@pytest.mark.parametrize(
    ("operation", "status", "cause"),
    [
        ("start", 400, Cause.IMAGE),  # its command is not in the image, say
        ("create", 400, Cause.IMAGE),  # the old settings do not fit the new image
        ("start", 500, Cause.OTHER),  # the engine failed: nothing known about the image
        ("create", 409, Cause.OTHER),
    ],
)
def test_a_refused_create_or_start_says_whose_fault_it_is(
    operation: str, status: int, cause: Cause
) -> None:
    """The engine's status for the refusal, not its words, tells an image fault."""
    engine, swapper, old = setup()
    engine.fail[operation] = EngineError("refused", status=status)
    real_start = engine.start

    def start_only_the_new(container_id: str) -> None:
        if container_id == old:
            engine.containers[old]["State"] = {"Running": True, "Restarting": False}
            return
        real_start(container_id)

    engine.start = start_only_the_new  # type: ignore[method-assign]
    with pytest.raises(SwapError) as caught:
        swapper.swap(engine.container(old), {}, REF)
    assert caught.value.cause is cause
    assert caught.value.restored is True
    assert engine.containers[old]["Name"] == "/ws-1"


class BoundedClock(FakeClock):
    """A fake clock that fails a test instead of letting a wait spin forever."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.sleeps) > 1000:
            raise AssertionError(f"still waiting after 1000 sleeps (last {seconds!r} s)")


def test_the_grace_wait_ends_whatever_the_clock_reads() -> None:
    """The grace deadline is met even where adding the time left to the clock's reading
    no longer moves it (float rounding): a wait that spun forever there did hang a run."""
    engine, _, old = setup()
    clock = BoundedClock(start=9391.670189485865)
    swapper = Swapper(engine, SwapSettings(grace_seconds=0.3), clock)
    swapper.swap(engine.container(old), {}, REF)
    assert len(clock.sleeps) <= 3


@pytest.mark.parametrize(
    ("healthcheck", "ready_at", "proven"),
    [
        # A 90 s start period: healthy at 65 s is inside it, past SWAP_HEALTH_TIMEOUT (60).
        ({"StartPeriod": 90 * 10**9, "Interval": 10**9, "Retries": 3}, 65.0, True),
        # The same check still `starting` after its whole deadline (90 + 3 x 1 + 30 s).
        ({"StartPeriod": 90 * 10**9, "Interval": 10**9, "Retries": 3}, None, False),
        # A quick check: SWAP_HEALTH_TIMEOUT is the floor (60 s, not 1 + 3 + 1).
        ({"Interval": 10**9, "Timeout": 10**9, "Retries": 3}, 50.0, True),
    ],
)
def test_the_health_deadline_is_the_checks_own_with_the_setting_as_floor(
    healthcheck: dict[str, int], ready_at: float | None, proven: bool
) -> None:
    """A check still `starting` within its declared period is not a failure."""
    engine, _, old = setup()
    clock = FakeClock()
    swapper = Swapper(engine, SwapSettings(health_timeout=60), clock)
    real_inspect = engine.inspect_container

    def judged(container_id: str) -> Container | None:
        found = engine.containers.get(container_id)
        if found is not None and container_id != old:
            healthy = ready_at is not None and clock.now >= ready_at
            found["Config"]["Healthcheck"] = {"Test": ["CMD", "probe"], **healthcheck}
            found["State"]["Health"] = {"Status": "healthy" if healthy else "starting"}
        return real_inspect(container_id)

    engine.inspect_container = judged  # type: ignore[method-assign]
    if proven:
        swapper.swap(engine.container(old), {}, REF)
        assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]
    else:
        with pytest.raises(SwapError, match="not healthy after 123s"):
            swapper.swap(engine.container(old), {}, REF)
        assert engine.containers[old]["Name"] == "/ws-1"


def auto_remove_setup() -> tuple[FakeEngine, Swapper, str, Pin]:
    """ws-1 runs OLD with AutoRemove; the tag has moved to NEW, a pin keeps OLD."""
    engine, swapper, old = setup()
    engine.containers[old]["HostConfig"]["AutoRemove"] = True
    engine.images["ghcr.io/org/workspace-template-a:receiver-keep-0a"] = Image(OLD)
    engine.images[OLD] = Image(OLD)
    pin = Pin("ghcr.io/org/workspace-template-a:receiver-keep-0a", REF, NEW)
    return engine, swapper, old, pin


def test_an_auto_remove_container_is_replaced_without_an_old_one_to_remove() -> None:
    """--rm: the old container removed itself at its stop; the replacement keeps AutoRemove."""
    engine, swapper, old, pin = auto_remove_setup()
    new = swapper.swap(engine.container(old), {}, REF, pin=pin)
    assert old not in engine.containers
    assert engine.containers[new]["Name"] == "/ws-1"
    assert engine.containers[new]["HostConfig"]["AutoRemove"] is True
    assert engine.containers[new]["State"]["Running"] is True


def test_a_failed_swap_of_an_auto_remove_container_recreates_the_old_one() -> None:
    """Its replacement exits: the old container (gone at its stop) is recreated exactly, on
    the pinned old image, under its name, running; the workspaces' tag is back on NEW."""
    engine, swapper, old, pin = auto_remove_setup()
    engine.start_state = {"Running": False, "Restarting": False, "ExitCode": 1}
    real_start = engine.start

    def start(container_id: str) -> None:
        real_start(container_id)
        if engine.containers[container_id]["Image"] == OLD:
            engine.containers[container_id]["State"] = {"Running": True}

    engine.start = start  # type: ignore[method-assign]
    with pytest.raises(SwapError) as caught:
        swapper.swap(engine.container(old), {}, REF, pin=pin)
    assert caught.value.restored is True
    assert caught.value.cause is Cause.IMAGE
    back = engine.by_name("ws-1")
    assert back is not None
    assert back["Image"] == OLD
    assert back["State"]["Running"] is True
    assert back["Config"]["Image"] == REF  # still a workspace of its runtime
    assert [c["Name"] for c in engine.containers.values()] == ["/ws-1"]
    assert engine.images[REF].id == NEW
    assert [c[1:] for c in engine.calls if c[0] == "tag"] == [(pin.tag, REF), (NEW, REF)]


def test_an_auto_remove_container_without_a_pin_is_left_alone() -> None:
    """No way to undo: it is not stopped at all."""
    engine, swapper, old, _ = auto_remove_setup()
    with pytest.raises(SwapError, match="pinned") as caught:
        swapper.swap(engine.container(old), {}, REF)
    assert caught.value.restored is True
    assert engine.ops() == []


@pytest.mark.parametrize("mode", ["network", "pid"])
def test_dependents_follow_the_container_they_share(mode: str) -> None:
    """Once the replacement is proven, a container in its network or PID namespace is
    recreated joining the replacement, on its own image, still running."""
    engine, swapper, old = setup()
    side = sidecar(engine, old, mode)
    new = swapper.swap(engine.container(old), {}, REF, dependents=[engine.container(side)])
    follower = engine.by_name("side")
    assert follower is not None
    assert follower["Id"] != side
    assert follower["HostConfig"][{"network": "NetworkMode", "pid": "PidMode"}[mode]] == (
        f"container:{new}"
    )
    assert follower["Image"] == "sha256:" + "5c" * 32
    assert follower["State"]["Running"] is True
    assert side not in engine.containers
    assert old not in engine.containers


def test_a_dependent_that_cannot_follow_undoes_the_whole_swap() -> None:
    """The sidecar's recreation fails: the owner's swap is undone, and both run on as they
    were, the sidecar joined to the old owner again."""
    engine, swapper, old = setup()
    side = sidecar(engine, old, "pid")
    real_create = engine.create_container

    def create(spec: CreateSpec) -> str:
        if spec.name == "side":
            raise EngineError("no room", status=500)
        return real_create(spec)

    engine.create_container = create  # type: ignore[method-assign]
    engine.containers[side]["State"]["Running"] = True
    with pytest.raises(SwapError) as caught:
        swapper.swap(engine.container(old), {}, REF, dependents=[engine.container(side)])
    assert caught.value.restored is True
    assert engine.containers[old]["Name"] == "/ws-1"
    assert engine.containers[old]["State"]["Running"] is True
    assert engine.containers[side]["Name"] == "/side"
    assert engine.containers[side]["State"]["Running"] is True
    assert sorted(engine.containers) == sorted([old, side])
