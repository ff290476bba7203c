"""Swarm mode over a recording fake of the Swarm manager: which services are workspaces,
which are stale, how their updates are started, waited on and judged, and how the
coordinator's rollout policy (canary, quarantine, retries) rides on top."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from receiver.book import DigestBook
from receiver.container import ENABLE_LABEL
from receiver.coordinator import Coordinator
from receiver.errors import Cause, EngineUnavailable, UnknownRuntime
from receiver.imageref import parse
from receiver.outcomes import ADMIN, TriggerOutcome, webhook
from receiver.result import RefreshResult
from receiver.seeding import HostSeed
from receiver.swarm import Service, SwarmService, UpdateDefaults, UpdateState
from tests.support import wiring
from tests.support.fake_swarm import FakeSwarm, Fate
from tests.support.fakes import FakeClock, ManualClock

pytestmark = pytest.mark.anyio

REF = parse("ghcr.io/org/workspace-template-a:latest")
REF_B = parse("ghcr.io/org/workspace-template-b:latest")
OLD, NEW, NEWER = ("sha256:" + c * 64 for c in "abc")
NAMES = ("ws-1", "ws-2", "ws-3")


def pinned(digest: str, ref: str = str(REF)) -> str:
    return f"{ref}@{digest}"


def fleet(new: str = NEW, fate: Fate = Fate.COMPLETES) -> FakeSwarm:
    """ws-1..3 pinned to OLD; the tag now points at `new`, whose updates end as `fate`."""
    swarm = FakeSwarm()
    swarm.digests[REF] = new
    swarm.fates[new] = fate
    for name in NAMES:
        swarm.add(name, pinned(OLD))
    return swarm


def refresher(swarm: FakeSwarm, clock: FakeClock | None = None, **env: str) -> SwarmService:
    settings = wiring.settings(ORCHESTRATOR="swarm", **env)
    return SwarmService(settings, swarm, clock or FakeClock())


def images(swarm: FakeSwarm) -> dict[str, str]:
    return {s.name: s.image for s in swarm.services_by_id.values()}


# -- which services are workspaces -----------------------------------------------------


def inspect(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "ID": f"id-{name}",
        "Version": {"Index": 7},
        "Spec": {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": image}}, **spec},
    }


def test_a_service_is_read_with_its_image_unpinned_and_normalised() -> None:
    service = Service.from_inspect(
        inspect("ws-x", "GHCR.io/Org/workspace-template-a:latest@" + OLD, UpdateConfig={"P": 1})
    )
    assert service.configured_image == REF
    assert service.digest == OLD
    assert service.version == 7
    assert service.has_update_config
    assert service.is_workspace_of("ws-", REF)
    assert not service.is_workspace_of("ws-", REF_B)
    assert not service.is_workspace_of("job-", REF)


def test_a_service_without_the_prefix_or_with_another_image_is_not_a_workspace() -> None:
    assert not Service.from_inspect(inspect("db", pinned(OLD))).is_workspace_of("ws-", REF)
    other = Service.from_inspect(inspect("ws-y", "ghcr.io/org/other:latest"))
    assert not other.is_workspace_of("ws-", REF)
    unusable = Service.from_inspect(inspect("ws-z", "sha256:" + "f" * 64))
    assert unusable.configured_image is None
    assert not unusable.is_workspace_of("ws-", REF)


def test_an_update_status_and_labels_are_read() -> None:
    data = inspect(
        "ws-x",
        str(REF),
        Labels={ENABLE_LABEL: "false"},
    )
    data["UpdateStatus"] = {"State": "rollback_started", "StartedAt": "2026-12-01T00:00:01Z"}
    service = Service.from_inspect(data)
    assert service.update_state is UpdateState.ROLLBACK_STARTED
    assert service.update_state.moving
    assert service.update_started == "2026-12-01T00:00:01Z"
    assert service.opted_out
    assert service.digest is None


def test_an_unknown_update_state_is_read_as_none() -> None:
    data = inspect("ws-x", str(REF))
    data["UpdateStatus"] = {"State": "something new"}
    assert Service.from_inspect(data).update_state is None


# -- one refresh -------------------------------------------------------------------------


def test_stale_services_are_updated_to_the_tag_digest_and_the_rest_left_alone() -> None:
    swarm = fleet()
    swarm.add("ws-current", pinned(NEW))
    swarm.add("db", pinned(OLD))
    swarm.add("ws-other", pinned(OLD, str(REF_B)))
    result = refresher(swarm).refresh_runtime("a")
    assert sorted(result.recreated) == list(NAMES)
    assert result.unchanged == ["ws-current"]
    assert result.digests == {"a": NEW}
    assert result.pulled == ["a"]
    assert images(swarm) == {
        **{name: pinned(NEW) for name in NAMES},
        "ws-current": pinned(NEW),
        "db": pinned(OLD),
        "ws-other": pinned(OLD, str(REF_B)),
    }
    assert swarm.calls.count("distribution") == 1  # resolved once for every service


def test_the_canary_goes_alone_before_the_rest() -> None:
    swarm = fleet()
    refresher(swarm).refresh_runtime("a")
    first_wait = swarm.calls.index("service")
    assert swarm.calls[:first_wait].count("update") == 1  # the canary, proven alone
    assert swarm.updated_names() == list(NAMES)


def test_a_service_without_update_config_gets_the_defaults_and_one_with_keeps_its_own() -> None:
    swarm = FakeSwarm()
    swarm.digests[REF] = NEW
    swarm.add("ws-1", pinned(OLD))
    swarm.add("ws-2", pinned(OLD), update_config=True)
    refresher(swarm, SWAP_GRACE_SECONDS="7").refresh_runtime("a")
    defaults = {update.service: update.defaults for update in swarm.updates}
    assert defaults == {
        "ws-1": UpdateDefaults(
            monitor_seconds=7.0, parallelism=1, order="stop-first", failure_action="rollback"
        ),
        "ws-2": None,
    }


def test_no_recreate_only_resolves() -> None:
    swarm = fleet()
    assert refresher(swarm).refresh_runtime("a", recreate=False).digests == {"a": NEW}
    assert swarm.updates == []
    assert swarm.calls == ["distribution"]


def test_an_opted_out_service_is_skipped() -> None:
    swarm = fleet()
    swarm.add("ws-4", pinned(OLD), labels={ENABLE_LABEL: "false"})
    result = refresher(swarm).refresh_runtime("a")
    assert "ws-4" in result.skipped
    assert "ws-4" not in swarm.updated_names()


def test_a_digest_the_manager_cannot_tell_fails_the_runtime_and_updates_nothing() -> None:
    swarm = fleet()
    del swarm.digests[REF]
    result = refresher(swarm).refresh_runtime("a")
    assert list(result.failed) == ["a"]
    assert swarm.updates == []


def test_a_manager_that_cannot_list_services_raises_for_the_caller() -> None:
    """As on one host: the admin route answers 500 when the workspaces cannot be listed."""
    swarm = fleet()
    service = refresher(swarm)
    swarm.down = True
    with pytest.raises(EngineUnavailable):
        service.refresh_runtime("a")


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(UnknownRuntime):
        refresher(fleet()).refresh(["nope"])


def test_repair_has_nothing_to_do() -> None:
    swarm = fleet()
    assert refresher(swarm).repair() == RefreshResult()
    assert swarm.updates == []


# -- judging an update -------------------------------------------------------------------


def test_a_rollback_with_a_failed_task_is_an_image_fault_on_the_canary_only() -> None:
    swarm = fleet(fate=Fate.ROLLS_BACK)
    result = refresher(swarm).refresh_runtime("a")
    assert swarm.updated_names() == ["ws-1"]
    failure = result.failed["ws-1"]
    assert failure.cause is Cause.IMAGE
    assert failure.restored
    assert '"/missing"' in failure.reason  # the task's error is told
    assert result.quarantine["a"].subject == "ws-1"
    assert result.deferred == {n: "held: the canary ws-1 failed" for n in NAMES[1:]}
    assert set(images(swarm).values()) == {pinned(OLD)}


def test_a_paused_update_is_an_image_fault_left_paused_for_the_operator() -> None:
    """failure_action=pause: the image is at fault, nothing was restored, and the paused
    service is the operator's from then on (skipped, never counted as current)."""
    swarm = fleet(fate=Fate.PAUSES)
    result = refresher(swarm).refresh_runtime("a")
    failure = result.failed["ws-1"]
    assert failure.cause is Cause.IMAGE
    assert not failure.restored
    assert "a" in result.quarantine
    swarm.fates[NEW] = Fate.COMPLETES
    again = refresher(swarm).refresh_runtime("a")
    assert "ws-1" in again.skipped
    assert "ws-1" not in again.unchanged
    assert swarm.updated_names() == ["ws-1", "ws-2", "ws-3"]  # ws-1 not again
    seeds = refresher(swarm).host_seeds(["a"])
    assert seeds["a"].stale  # a paused service does not seed its pinned digest


def test_a_task_that_exits_at_once_is_an_image_fault() -> None:
    """Swarm rolls back on early termination too (exit 0): the image's doing."""
    swarm = fleet(fate=Fate.EXITS)
    result = refresher(swarm).refresh_runtime("a")
    assert result.failed["ws-1"].cause is Cause.IMAGE
    assert "a" in result.quarantine


def test_a_task_no_node_could_pull_is_transient() -> None:
    """A rejected task (its node could not pull or create it) says nothing of the image."""
    swarm = fleet(fate=Fate.NOT_PULLED)
    result = refresher(swarm).refresh_runtime("a")
    assert result.failed["ws-1"].cause is Cause.TRANSIENT
    assert result.quarantine == {}


def test_force_restarts_the_tasks_of_a_current_service() -> None:
    """Swarm begins no update for an unchanged spec: force bumps ForceUpdate instead of
    waiting for an update that never comes."""
    swarm = FakeSwarm()
    swarm.digests[REF] = NEW
    swarm.add("ws-1", pinned(NEW))
    clock = FakeClock()
    result = refresher(swarm, clock).refresh_runtime("a", force=True)
    assert result.recreated == ["ws-1"]
    assert [u.force for u in swarm.updates] == [True]
    assert clock.now < 5


def test_a_service_scaled_to_zero_is_updated_without_a_wait_and_is_no_canary() -> None:
    swarm = fleet(fate=Fate.ROLLS_BACK)
    swarm.add("ws-0", pinned(OLD), replicas=0)
    clock = FakeClock()
    result = refresher(swarm, clock).refresh_runtime("a")
    assert swarm.updated_names() == ["ws-1"]  # the running canary, not ws-0 (first by name)
    assert "ws-0" in result.deferred
    only_stopped = FakeSwarm()
    only_stopped.digests[REF] = NEW
    only_stopped.add("ws-0", pinned(OLD), replicas=0)
    stopped = refresher(only_stopped, clock).refresh_runtime("a")
    assert stopped.recreated == ["ws-0"]  # nothing runs: nothing to disturb, no wait
    assert clock.now < 5


def test_shutdown_ends_the_waits_at_once() -> None:
    swarm = fleet(fate=Fate.HANGS)
    clock = FakeClock()
    service = refresher(swarm, clock, ROLLOUT_CANARY="0")
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        service.interrupt()

    clock.sleep = sleep  # type: ignore[method-assign]
    result = service.refresh_runtime("a")
    assert all("stopping" in result.failed[n].reason for n in NAMES)
    assert clock.now < 2


def test_a_rollback_without_a_failed_task_is_transient_and_quarantines_nothing() -> None:
    """A node that went away mid-update and came back: nothing says the image is bad."""
    swarm = fleet(fate=Fate.NODE_LOST)
    result = refresher(swarm).refresh_runtime("a")
    assert result.failed["ws-1"].cause is Cause.TRANSIENT
    assert result.quarantine == {}
    assert swarm.updated_names() == ["ws-1"]  # the rest wait for the next try


def test_an_update_that_never_ends_is_bounded_and_transient() -> None:
    swarm = fleet(fate=Fate.HANGS)
    clock = FakeClock()
    result = refresher(swarm, clock, SWARM_UPDATE_TIMEOUT="20").refresh_runtime("a")
    failure = result.failed["ws-1"]
    assert failure.cause is Cause.TRANSIENT
    assert "20s" in failure.reason
    assert 20 <= clock.now <= 21
    assert result.quarantine == {}


def test_a_refused_update_fails_that_service_only() -> None:
    swarm = fleet(fate=Fate.REFUSED)
    result = refresher(swarm, ROLLOUT_CANARY="0").refresh_runtime("a")
    assert sorted(result.failed) == list(NAMES)
    assert all(f.cause is not Cause.IMAGE for f in result.failed.values())
    assert result.quarantine == {}


def test_with_no_canary_a_broken_image_fails_every_service_and_is_not_quarantined() -> None:
    swarm = fleet(fate=Fate.ROLLS_BACK)
    result = refresher(swarm, ROLLOUT_CANARY="0").refresh_runtime("a")
    assert sorted(result.failed) == list(NAMES)
    assert set(images(swarm).values()) == {pinned(OLD)}


def test_a_service_removed_mid_update_is_reported() -> None:
    swarm = fleet()

    def vanish(service_id: str) -> Service | None:
        swarm.services_by_id.pop(service_id, None)
        return None

    swarm.service = vanish  # type: ignore[method-assign]
    result = refresher(swarm).refresh_runtime("a")
    assert "removed" in result.failed["ws-1"].reason


def test_a_manager_lost_mid_wait_fails_the_service_as_transient() -> None:
    swarm = fleet()
    real = swarm.update_image

    def update_then_go_down(
        service: Service, image: str, defaults: UpdateDefaults, *, force: bool = False
    ) -> None:
        real(service, image, defaults, force=force)
        swarm.down = True

    swarm.update_image = update_then_go_down  # type: ignore[method-assign]
    result = refresher(swarm).refresh_runtime("a")
    assert result.failed["ws-1"].cause is Cause.TRANSIENT
    assert swarm.updated_names() == ["ws-1"]


def test_a_quarantined_digest_is_held() -> None:
    swarm = fleet()
    result = refresher(swarm).refresh_runtime("a", hold=NEW)
    assert result.held == {"a": NEW}
    assert sorted(result.deferred) == list(NAMES)
    assert swarm.updates == []


# -- updates already under way -----------------------------------------------------------


def test_a_service_found_mid_update_is_waited_on_not_updated_again() -> None:
    swarm = fleet()
    moving = swarm.add("ws-4", pinned(NEW), state=UpdateState.UPDATING)
    clock = FakeClock()
    service = refresher(swarm, clock)
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if swarm.by_name("ws-4").update_state is UpdateState.UPDATING and clock.now > 3:
            swarm.finish(moving.name)

    clock.sleep = sleep  # type: ignore[method-assign]
    result = service.refresh_runtime("a")
    assert "ws-4" not in swarm.updated_names()
    assert "ws-4" in result.unchanged
    assert sorted(result.recreated) == list(NAMES)


def test_a_service_found_rolling_back_is_waited_on_then_updated() -> None:
    """The rollback of an older update ends back on OLD: then this refresh updates it."""
    swarm = FakeSwarm()
    swarm.digests[REF] = NEW
    swarm.add("ws-1", pinned(OLD), state=UpdateState.ROLLBACK_STARTED)
    clock = FakeClock()
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if swarm.by_name("ws-1").update_state is UpdateState.ROLLBACK_STARTED:
            swarm.finish("ws-1", Fate.COMPLETES)

    clock.sleep = sleep  # type: ignore[method-assign]
    result = refresher(swarm, clock).refresh_runtime("a")
    assert result.recreated == ["ws-1"]
    assert swarm.updated_names() == ["ws-1"]


# -- boot seeding ------------------------------------------------------------------------


def test_boot_seeds_are_the_pinned_digests_and_a_moving_service_counts_as_stale() -> None:
    swarm = FakeSwarm()
    swarm.add("ws-1", pinned(OLD))
    swarm.add("ws-2", pinned(OLD))
    swarm.add("ws-b1", pinned(OLD, str(REF_B)))
    swarm.add("ws-b2", pinned(NEW, str(REF_B)), state=UpdateState.UPDATING)
    seeds = refresher(swarm, RUNTIMES="a,b,c").host_seeds(["a", "b", "c"])
    assert seeds["a"] == HostSeed(digest=OLD, stale=False)
    assert seeds["b"].stale
    assert seeds["c"] == HostSeed(digest=None, stale=False)


# -- with the coordinator ----------------------------------------------------------------


async def run_here(fn: Callable[[], RefreshResult]) -> RefreshResult:
    return fn()


class Fleet:
    """A coordinator over a fake swarm (ws-1..3 on OLD, seen), with a manual clock."""

    def __init__(self, fate: Fate) -> None:
        self.swarm = fleet(fate=fate)
        self.clock = ManualClock()
        service = refresher(self.swarm, FakeClock())
        book = DigestBook(service.config.runtimes, self.clock)
        book.seed("a", OLD)
        self.coordinator = Coordinator(service, book, run=run_here, draw=lambda _lo, hi: hi)

    async def deliver(self, digest: str) -> TriggerOutcome:
        outcome = self.coordinator.submit("a", digest, webhook("package"))
        await self.coordinator.idle()
        return outcome


async def test_a_broken_image_is_quarantined_and_a_redelivery_touches_nothing() -> None:
    world = Fleet(Fate.ROLLS_BACK)
    await world.deliver(NEW)
    state = world.coordinator.book.states["a"]
    assert state.quarantined is not None
    assert state.quarantined.digest == NEW
    assert await world.deliver(NEW) is TriggerOutcome.QUARANTINED
    assert world.swarm.updated_names() == ["ws-1"]


async def test_a_node_lost_mid_update_is_retried_until_every_service_is_current() -> None:
    world = Fleet(Fate.NODE_LOST)
    await world.deliver(NEW)
    assert world.swarm.updated_names() == ["ws-1"]
    world.swarm.fates[NEW] = Fate.COMPLETES  # the node is back
    due = world.clock.pending()
    assert due, "a retry is planned"
    await world.clock.advance(due[0] - world.clock.now)
    await world.coordinator.idle()
    assert set(images(world.swarm).values()) == {pinned(NEW)}
    assert world.coordinator.book.states["a"].seen == NEW


async def test_an_admin_refresh_attempts_a_quarantined_digest_again() -> None:
    world = Fleet(Fate.ROLLS_BACK)
    await world.deliver(NEW)
    world.swarm.fates[NEW] = Fate.COMPLETES
    result = await world.coordinator.refresh(["a"], source=ADMIN)
    assert sorted(result.recreated) == list(NAMES)


def test_the_rest_go_swap_parallelism_at_a_time() -> None:
    """After the canary, at most SWAP_PARALLELISM updates are under way at once."""
    swarm = fleet()
    for name in ("ws-4", "ws-5"):
        swarm.add(name, pinned(OLD))
    refresher(swarm, SWAP_PARALLELISM="2").refresh_runtime("a")
    batches = "".join("u" if call == "update" else "." for call in swarm.calls).split(".")
    assert [len(b) for b in batches if b] == [1, 2, 2]
    assert swarm.updated_names() == ["ws-1", "ws-2", "ws-3", "ws-4", "ws-5"]
