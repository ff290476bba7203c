"""Digest book and coordinator: known digests do nothing, bursts coalesce, failures roll back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from receiver.book import DigestBook, RefreshRecord
from receiver.coordinator import Coordinator
from receiver.errors import EngineUnavailable, PullError
from receiver.outcomes import ADMIN, POLL, TriggerOutcome, webhook
from receiver.result import RefreshResult
from tests.support import wiring
from tests.support.fakes import FakeEngine, ManualClock, container

pytestmark = pytest.mark.anyio

REF = "ghcr.io/org/workspace-template-a:latest"
OLD, NEW, NEWER = ("sha256:" + c * 64 for c in "abc")
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


class Gate:
    """A runner that holds every refresh until released, and counts them."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.runs = 0

    async def __call__(self, fn: Callable[[], RefreshResult]) -> RefreshResult:
        self.runs += 1
        await self.open.wait()
        return fn()


def setup(gate: Gate | None = None) -> tuple[FakeEngine, Coordinator, Gate]:
    """ws-1 and ws-2 run OLD, seen as D1; the registry serves NEW as D2. Time is a
    ManualClock: retries wait until a test moves it on (`clock(coordinator).advance`)."""
    engine = FakeEngine()
    engine.publish(REF, NEW, D2)
    engine.add(container("ws-1", REF, OLD))
    engine.add(container("ws-2", REF, OLD))
    settings = wiring.settings()
    service = wiring.service(engine, settings)
    gate = gate or Gate()
    book = DigestBook(settings.runtimes, ManualClock())
    book.seed("a", D1)
    return engine, Coordinator(service, book, run=gate), gate


def clock(coordinator: Coordinator) -> ManualClock:
    assert isinstance(coordinator.clock, ManualClock)
    return coordinator.clock


SCHEDULED, QUEUED = TriggerOutcome.SCHEDULED, TriggerOutcome.QUEUED
COALESCED, UNCHANGED = TriggerOutcome.COALESCED, TriggerOutcome.UNCHANGED
WEBHOOK = webhook("package")


def last_refresh(coordinator: Coordinator) -> RefreshRecord:
    record = coordinator.book.states["a"].last_refresh
    assert record is not None
    return record


def reasons(record: RefreshRecord) -> dict[str, str]:
    return {name: failure.reason for name, failure in record.failed.items()}


def pulls(engine: FakeEngine) -> int:
    return sum(1 for call in engine.calls if call[0] == "pull")


async def test_new_digest_refreshes_and_commits_the_pulled_digest() -> None:
    """A trigger with a new digest refreshes; `seen` becomes the digest actually pulled."""
    engine, coordinator, gate = setup()
    gate.open.set()
    assert coordinator.submit("a", D2, WEBHOOK) == SCHEDULED
    await coordinator.idle()
    assert coordinator.book.seen("a") == D2
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]
    assert last_refresh(coordinator).ok is True


async def test_trigger_equal_to_seen_does_nothing() -> None:
    """A digest the book has already seen starts no refresh at all."""
    engine, coordinator, gate = setup()
    assert coordinator.submit("a", D1, POLL) == UNCHANGED
    await coordinator.idle()
    assert gate.runs == 0
    assert engine.calls == []


async def test_a_burst_of_duplicates_refreshes_once() -> None:
    """30 deliveries of one digest while the first refresh runs: one refresh, one swap each."""
    engine, coordinator, gate = setup()
    answers = [coordinator.submit("a", D2, WEBHOOK) for _ in range(30)]
    await asyncio.sleep(0)
    gate.open.set()
    await coordinator.idle()
    assert answers[0] == SCHEDULED
    assert set(answers[1:]) == {COALESCED}
    assert gate.runs == 1
    assert pulls(engine) == 1
    assert [c for c in engine.calls if c[0] == "create"] == [("create", "ws-1"), ("create", "ws-2")]
    assert coordinator.submit("a", D2, WEBHOOK) == UNCHANGED


async def test_triggers_meanwhile_coalesce_into_one_follow_up() -> None:
    """Triggers during a refresh coalesce into at most one follow-up, the newest."""
    engine, coordinator, gate = setup()
    assert coordinator.submit("a", D2, WEBHOOK) == SCHEDULED
    assert coordinator.submit("a", D3, WEBHOOK) == QUEUED
    assert coordinator.submit("a", None, ADMIN) == QUEUED
    gate.open.set()
    await coordinator.idle()
    assert gate.runs == 2
    assert pulls(engine) == 2
    assert coordinator.book.seen("a") == D2


async def test_a_follow_up_already_applied_is_skipped() -> None:
    """If the refresh in flight already pulled the queued digest, the follow-up does nothing."""
    engine, coordinator, gate = setup()
    assert coordinator.submit("a", D2, WEBHOOK) == SCHEDULED
    engine.publish(REF, NEWER, D3)  # lands before the first refresh pulls
    assert coordinator.submit("a", D3, POLL) == QUEUED
    gate.open.set()
    await coordinator.idle()
    assert gate.runs == 1
    assert coordinator.book.seen("a") == D3
    assert engine.by_name("ws-1")["Image"] == NEWER  # type: ignore[index]


async def test_a_failure_keeps_the_old_digest_and_its_retry_applies_the_new() -> None:
    """A failed refresh rolls back (`seen` stays) and is tried again after a backoff; the
    same digest triggered meanwhile joins that retry instead of starting another."""
    engine, coordinator, gate = setup()
    gate.open.set()
    engine.fail_pull[REF] = PullError("registry down")
    coordinator.submit("a", D2, POLL)
    await coordinator.idle()
    assert coordinator.book.seen("a") == D1
    assert last_refresh(coordinator).ok is False
    assert coordinator.submit("a", D2, POLL) == COALESCED
    assert pulls(engine) == 1
    del engine.fail_pull[REF]
    await clock(coordinator).advance(10)
    await coordinator.idle()
    assert coordinator.book.seen("a") == D2
    assert coordinator.book.states["a"].retry is None


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(EngineUnavailable("engine down"), id="engine-down"),
        # Even a bug (not an EngineError) is recorded, not lost.
        pytest.param(RuntimeError("a bug"), id="unexpected"),
    ],
)
async def test_an_error_in_the_background_is_a_recorded_failure(error: Exception) -> None:
    """Background work never raises; the book records the failure and keeps `seen`."""
    engine, coordinator, gate = setup()
    gate.open.set()
    engine.fail["list"] = error
    coordinator.submit("a", D2, WEBHOOK)
    await coordinator.idle()
    assert coordinator.book.seen("a") == D1
    assert reasons(last_refresh(coordinator)) == {"a": str(error)}


async def test_admin_refresh_waits_its_turn_and_propagates_engine_errors() -> None:
    """The admin call runs after the refresh in flight, and hears of an unreachable engine."""
    engine, coordinator, gate = setup()
    coordinator.submit("a", D2, WEBHOOK)
    admin = asyncio.ensure_future(coordinator.refresh(["a"], source=ADMIN))
    await asyncio.sleep(0)
    gate.open.set()
    result = await admin
    assert result.unchanged == ["ws-1", "ws-2"]
    assert gate.runs == 2
    engine.fail["list"] = EngineUnavailable("engine down")
    with pytest.raises(EngineUnavailable):
        await coordinator.refresh(["a"], source=ADMIN)


async def test_seed_only_fills_an_unknown_runtime() -> None:
    """seed() records a first observation and never overwrites a known digest."""
    book = DigestBook(["a"])
    assert book.seed("a", D1) is True
    assert book.seed("a", D2) is False
    assert book.seen("a") == D1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
