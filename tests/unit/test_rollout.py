"""The rollout policy over a fake engine and a manual clock: canaries, quarantine, retries,
opt-outs, pre-update hooks, notify mode, and shutdown with retries pending."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from receiver.book import DigestBook, RuntimeState
from receiver.container import ENABLE_LABEL, PRE_UPDATE_LABEL
from receiver.coordinator import AvailableEvent, Coordinator, Event, RefreshEvent
from receiver.errors import Cause, PullError
from receiver.outcomes import ADMIN, POLL, SourceKind, TriggerOutcome, webhook
from receiver.refresh import RefreshService
from receiver.result import RefreshResult
from receiver.rollout import Verdict, backoff
from tests.support import wiring
from tests.support.fakes import FakeEngine, ManualClock, container

pytestmark = pytest.mark.anyio

REF = "ghcr.io/org/workspace-template-a:latest"
OLD, BAD, GOOD = ("sha256:" + c * 64 for c in "abc")
D1, D_BAD, D_GOOD = ("sha256:" + c * 64 for c in "123")
WEBHOOK = webhook("package")
NAMES = ("ws-1", "ws-2", "ws-3")
EXITS_AT_ONCE = {"Running": False, "Restarting": False, "ExitCode": 1}
RUNS = {"Running": True, "Restarting": False}


def fleet(*, labels: dict[str, dict[str, str]] | None = None) -> FakeEngine:
    """ws-1..3 run OLD (seen as D1); the registry's tag points at BAD."""
    engine = FakeEngine()
    engine.publish(REF, BAD, D_BAD)
    for name in NAMES:
        inspect = container(name, REF, OLD)
        inspect["Config"]["Labels"] = (labels or {}).get(name, {})
        engine.add(inspect)
    return engine


def highest(_low: float, high: float) -> float:
    """A draw without jitter: the longest wait of each range."""
    return high


def lowest(low: float, _high: float) -> float:
    return low


def creates(engine: FakeEngine) -> list[str]:
    return [call[1] for call in engine.calls if call[0] == "create"]


async def run_here(fn: Callable[[], RefreshResult]) -> RefreshResult:
    return fn()


class World:
    """A coordinator over `engine` with a manual clock, recording what listeners hear."""

    def __init__(self, engine: FakeEngine, **env: str) -> None:
        self.engine = engine
        self.clock = ManualClock()
        settings = wiring.settings(**env)
        self.service = wiring.service(engine, settings, self.clock)
        book = DigestBook(settings.runtimes, self.clock)
        book.seed("a", D1)
        self.heard: list[Event] = []
        self.coordinator = Coordinator(
            self.service,
            book,
            run=run_here,
            listeners=[self.heard.append],
            draw=highest,
        )

    @property
    def state(self) -> RuntimeState:
        return self.coordinator.book.states["a"]

    async def settle(self) -> None:
        await self.coordinator.idle()

    def refreshes(self) -> list[RefreshEvent]:
        return [event for event in self.heard if isinstance(event, RefreshEvent)]


def service(engine: FakeEngine, **env: str) -> RefreshService:
    return wiring.service(engine, wiring.settings(**env))


# -- the canary, in the refresh service ---------------------------------------------------


def test_a_broken_image_is_tried_on_one_canary_and_nothing_else_is_touched() -> None:
    """The canary's replacement exits: it is rolled back, the others wait untouched, and the
    result says the image is at fault."""
    engine = fleet()
    engine.start_state = EXITS_AT_ONCE
    result = service(engine).refresh_runtime("a")
    assert creates(engine) == ["ws-1"]
    assert result.failed["ws-1"].cause is Cause.IMAGE
    assert result.quarantine["a"].subject == "ws-1"
    assert result.deferred == {
        "ws-2": "held: the canary ws-1 failed",
        "ws-3": "held: the canary ws-1 failed",
    }
    assert {engine.by_name(n)["Image"] for n in NAMES} == {OLD}  # type: ignore[index]


def test_a_proven_canary_lets_the_rest_follow() -> None:
    """A good image: the canary first, then the others (in parallel)."""
    engine = fleet()
    result = service(engine).refresh_runtime("a")
    assert creates(engine)[0] == "ws-1"
    assert sorted(result.recreated) == list(NAMES)
    assert result.deferred == {}


def test_two_canaries_go_first_when_asked() -> None:
    """ROLLOUT_CANARY=2: the first two running containers are proven before the third."""
    engine = fleet()
    engine.start_state = EXITS_AT_ONCE
    service(engine, ROLLOUT_CANARY="2").refresh_runtime("a")
    assert creates(engine) == ["ws-1"]  # the first canary failed: the second never started
    engine2 = fleet()
    result = service(engine2, ROLLOUT_CANARY="2").refresh_runtime("a")
    assert creates(engine2)[:2] == ["ws-1", "ws-2"]
    assert sorted(result.recreated) == list(NAMES)


def test_stopped_containers_need_no_canary_but_wait_for_one_when_others_run() -> None:
    """Only stopped containers: nothing to disturb, all are recreated (stopped). A stopped
    container never serves as the canary: a running one does."""
    engine = fleet()
    for inspect in engine.containers.values():
        inspect["State"] = {"Running": False, "Restarting": False, "ExitCode": 0}
    assert sorted(service(engine).refresh_runtime("a").recreated) == list(NAMES)
    engine2 = fleet()
    engine2.by_name("ws-1")["State"] = {"Running": False}  # type: ignore[index]
    engine2.start_state = EXITS_AT_ONCE
    service(engine2).refresh_runtime("a")
    assert creates(engine2) == ["ws-2"]


def test_an_opted_out_workspace_is_skipped() -> None:
    """Label enable=false: never touched, reported under `skipped`."""
    engine = fleet(labels={"ws-2": {ENABLE_LABEL: "false"}})
    result = service(engine).refresh_runtime("a")
    assert result.skipped == {"ws-2": f"opted out ({ENABLE_LABEL}=false)"}
    assert sorted(result.recreated) == ["ws-1", "ws-3"]
    assert engine.by_name("ws-2")["Image"] == OLD  # type: ignore[index]


@pytest.mark.parametrize(
    ("answer", "kind", "reason"),
    [
        (0, "recreated", None),
        (75, "deferred", "pre-update hook: not now (exit 75)"),
        (3, "failed", "pre-update hook exited 3"),
        (None, "failed", "pre-update hook still running after 30s"),
    ],
)
def test_the_pre_update_hook_says_go_not_now_or_fails(
    answer: int | None, kind: str, reason: str | None
) -> None:
    """`sh -c <hook>` in the old container: 0 goes on, 75 defers, anything else fails."""
    engine = fleet(labels={"ws-1": {PRE_UPDATE_LABEL: "test ! -e /busy"}})
    engine.exec_answers["ws-1"] = answer
    result = service(engine).refresh_runtime("a")
    execs = [call for call in engine.calls if call[0] == "exec"]
    assert [call[2] for call in execs] == ["sh -c test ! -e /busy"]
    if kind == "recreated":
        assert "ws-1" in result.recreated
    elif kind == "deferred":
        assert result.deferred["ws-1"] == reason
        assert engine.by_name("ws-1")["Image"] == OLD  # type: ignore[index]
    else:
        assert reason is not None
        assert reason in result.failed["ws-1"].reason
        assert result.failed["ws-1"].cause is Cause.OTHER
    # ws-1 was the canary: whatever kept it from being proven made ws-2 the canary.
    assert "ws-2" in result.recreated or kind != "deferred"


def test_the_setting_hooks_every_workspace_and_force_skips_it() -> None:
    """PRE_UPDATE_COMMAND asks each running workspace; an admin `force` asks none."""
    engine = fleet()
    service(engine, PRE_UPDATE_COMMAND="true").refresh_runtime("a")
    assert len([call for call in engine.calls if call[0] == "exec"]) == 3
    engine2 = fleet()
    service(engine2, PRE_UPDATE_COMMAND="true").refresh_runtime("a", force=True)
    assert [call for call in engine2.calls if call[0] == "exec"] == []


def test_a_paused_workspace_waits() -> None:
    """Paused: deferred (its processes were frozen on purpose), never unpaused by us."""
    engine = fleet()
    engine.by_name("ws-3")["State"] = {"Running": True, "Paused": True}  # type: ignore[index]
    result = service(engine).refresh_runtime("a")
    assert result.deferred == {"ws-3": "paused"}
    assert "ws-3" not in creates(engine)


# -- the book and the coordinator ---------------------------------------------------------


async def test_transient_failure_then_retries_with_backoff_then_success() -> None:
    """The registry is down: tried again after 10 s, then 20 s; once it answers, applied
    without any new trigger, each retry counted under source `retry`."""
    world = World(fleet())
    world.engine.publish(REF, GOOD, D_GOOD)
    world.engine.fail_pull[REF] = PullError("registry down")
    assert world.coordinator.submit("a", D_GOOD, WEBHOOK) is TriggerOutcome.SCHEDULED
    await world.settle()
    assert world.state.retry is not None
    assert world.state.retry.attempt == 1
    assert world.clock.pending() == [10.0]
    await world.clock.advance(10)
    await world.settle()
    assert world.state.retry.attempt == 2
    assert world.clock.pending() == [30.0]  # 10 s, then 20 s more
    del world.engine.fail_pull[REF]
    await world.clock.advance(20)
    await world.settle()
    assert world.state.seen == D_GOOD
    assert world.state.retry is None
    assert [e.source.kind for e in world.refreshes()] == [
        SourceKind.WEBHOOK,
        SourceKind.RETRY,
        SourceKind.RETRY,
    ]


async def test_backoff_doubles_up_to_its_maximum() -> None:
    """10, 20, 40 ... never above RETRY_MAX_SECONDS; half of each wait is jitter."""
    longest = [backoff(n, 10, 300, highest) for n in range(1, 8)]
    assert longest == [10, 20, 40, 80, 160, 300, 300]
    assert backoff(3, 10, 300, lowest) == 20


async def test_an_image_fault_quarantines_the_digest_until_a_newer_one() -> None:
    """The canary fails by the image: quarantined (status, event), not retried; webhooks,
    redeliveries and polls of it do nothing; a newer digest applies and lifts it."""
    world = World(fleet())
    world.engine.start_state = EXITS_AT_ONCE
    world.coordinator.submit("a", D_BAD, WEBHOOK)
    await world.settle()
    held = world.state.quarantined
    assert held is not None
    assert held.digest == D_BAD
    assert "ws-1" in held.reason
    assert world.state.retry is None
    assert world.clock.pending() == []
    [event] = world.refreshes()
    assert event.verdict is Verdict.HOLD
    assert event.quarantined == held
    for source in (WEBHOOK, WEBHOOK, POLL):
        assert world.coordinator.submit("a", D_BAD, source) is TriggerOutcome.QUARANTINED
    await world.settle()
    assert creates(world.engine) == ["ws-1"]
    world.engine.start_state = RUNS
    world.engine.publish(REF, GOOD, D_GOOD)
    assert world.coordinator.submit("a", D_GOOD, POLL) is TriggerOutcome.SCHEDULED
    await world.settle()
    assert world.state.seen == D_GOOD
    assert world.state.quarantined is None
    assert sorted(creates(world.engine)) == ["ws-1", "ws-1", "ws-2", "ws-3"]


async def test_a_refresh_of_the_tag_does_not_swap_onto_a_quarantined_digest() -> None:
    """A trigger without a digest pulls the tag: still the held digest, so nothing moves."""
    world = World(fleet())
    world.engine.start_state = EXITS_AT_ONCE
    world.coordinator.submit("a", D_BAD, WEBHOOK)
    await world.settle()
    world.engine.start_state = RUNS
    assert world.coordinator.submit("a", None, WEBHOOK) is TriggerOutcome.SCHEDULED
    await world.settle()
    assert creates(world.engine) == ["ws-1"]
    assert world.refreshes()[-1].result.held == {"a": D_BAD}
    assert world.state.retry is None


async def test_an_admin_refresh_attempts_a_quarantined_digest_again() -> None:
    """A person's decision: the held digest is tried; when it works, the quarantine ends."""
    world = World(fleet())
    world.engine.start_state = EXITS_AT_ONCE
    world.coordinator.submit("a", D_BAD, WEBHOOK)
    await world.settle()
    world.engine.start_state = RUNS  # whatever was wrong, an operator fixed it
    result = await world.coordinator.refresh(["a"], source=ADMIN)
    assert sorted(result.recreated) == list(NAMES)
    assert world.state.quarantined is None
    assert world.state.seen == D_BAD


async def test_a_deferred_workspace_is_asked_again_until_it_says_yes() -> None:
    """The hook says 75: the runtime is tried again after the backoff, without a trigger,
    and the workspace is swapped once the hook says 0."""
    world = World(fleet(labels={"ws-1": {PRE_UPDATE_LABEL: "busy-check"}}))
    world.engine.publish(REF, GOOD, D_GOOD)
    world.engine.exec_answers["ws-1"] = 75
    world.coordinator.submit("a", D_GOOD, POLL)
    await world.settle()
    assert world.refreshes()[0].result.deferred == {"ws-1": "pre-update hook: not now (exit 75)"}
    assert world.engine.by_name("ws-1")["Image"] == OLD  # type: ignore[index]
    assert world.state.seen == D1  # not done: ws-1 still waits
    world.engine.exec_answers["ws-1"] = 0
    await world.clock.advance(10)
    await world.settle()
    assert world.engine.by_name("ws-1")["Image"] == GOOD  # type: ignore[index]
    assert world.state.seen == D_GOOD


async def test_a_newer_digest_supersedes_a_planned_retry() -> None:
    """A retry of D_BAD waits; D_GOOD arrives: it runs now and the retry is dropped."""
    world = World(fleet())
    world.engine.fail_pull[REF] = PullError("registry down")
    world.coordinator.submit("a", D_BAD, WEBHOOK)
    await world.settle()
    assert world.state.retry is not None
    del world.engine.fail_pull[REF]
    world.engine.publish(REF, GOOD, D_GOOD)
    assert world.coordinator.submit("a", D_GOOD, WEBHOOK) is TriggerOutcome.SCHEDULED
    await world.settle()
    assert world.state.seen == D_GOOD
    assert world.state.retry is None
    assert world.clock.pending() == []


async def test_shutdown_cancels_pending_retries() -> None:
    """drain() ends planned retries at once instead of waiting them out."""
    world = World(fleet())
    world.engine.fail_pull[REF] = PullError("registry down")
    world.coordinator.submit("a", D_BAD, WEBHOOK)
    await world.settle()
    assert world.clock.pending() == [10.0]
    await asyncio.wait_for(world.coordinator.drain(60), timeout=1)
    await world.clock.advance(0)
    assert world.clock.pending() == []
    assert world.state.retry is None
    await world.clock.advance(3600)
    await world.settle()
    assert len(world.refreshes()) == 1


async def test_notify_mode_reports_once_and_applies_nothing() -> None:
    """REFRESH_MODE=notify: the digest is `available`, told once, never pulled; an admin
    refresh still applies it."""
    world = World(fleet(), REFRESH_MODE="notify")
    for _ in range(3):
        assert world.coordinator.submit("a", D_BAD, POLL) is TriggerOutcome.AVAILABLE
    await world.settle()
    assert world.state.available == D_BAD
    assert [e for e in world.heard if isinstance(e, AvailableEvent)] == [
        AvailableEvent("a", POLL, D_BAD)
    ]
    assert [call for call in world.engine.calls if call[0] == "pull"] == []
    result = await world.coordinator.refresh(["a"], source=ADMIN)
    assert sorted(result.recreated) == list(NAMES)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
