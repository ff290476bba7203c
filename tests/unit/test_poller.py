"""The poller's bookkeeping through a fake fetch: seed, unchanged, refresh, rollback, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import pytest

from receiver.book import DigestBook, RefreshRecord, RuntimeState
from receiver.coordinator import Coordinator
from receiver.errors import EngineUnavailable, PullError
from receiver.outcomes import POLL, PollOutcome, TriggerOutcome, webhook
from receiver.poller import Poller
from receiver.registry import RegistryError
from receiver.result import RefreshResult
from receiver.seeding import HostSeed, decide
from tests.support import wiring
from tests.support.fakes import FakeClock, FakeEngine, ManualClock, container

pytestmark = pytest.mark.anyio

REF_A = "ghcr.io/org/workspace-template-a:latest"
REF_B = "ghcr.io/org/workspace-template-b:latest"
OLD, NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32
D1, D2 = ("sha256:" + c * 64 for c in "12")
SEEDED, FETCH_FAILED = PollOutcome.SEEDED, PollOutcome.FETCH_FAILED
HOST_UNKNOWN = PollOutcome.HOST_UNKNOWN
SCHEDULED, COALESCED = TriggerOutcome.SCHEDULED, TriggerOutcome.COALESCED
UNCHANGED = TriggerOutcome.UNCHANGED
WEBHOOK = webhook("package")


class Fetch:
    """The fetch seam: answers per runtime (a digest or an exception), records each call."""

    def __init__(self, answers: Mapping[str, str | Exception]) -> None:
        self.answers = dict(answers)
        self.calls: list[list[str]] = []

    async def __call__(self, runtimes: Sequence[str]) -> Mapping[str, str | Exception]:
        self.calls.append(list(runtimes))
        return {name: self.answers[name] for name in runtimes if name in self.answers}


async def run_here(fn: Callable[[], RefreshResult]) -> RefreshResult:
    return fn()


def setup(
    engine: FakeEngine, fetch: Fetch, runtimes: str = "a"
) -> tuple[Poller, Coordinator, ManualClock]:
    settings = wiring.settings(runtimes)
    clock = ManualClock(wall_start=0)
    service = wiring.service(engine, settings, clock)
    book = DigestBook(settings.runtimes, clock)
    coordinator = Coordinator(service, book, run=run_here)
    return Poller(coordinator, fetch, 300, clock=clock), coordinator, clock


def state(coordinator: Coordinator) -> RuntimeState:
    return coordinator.book.states["a"]


def last_refresh(coordinator: Coordinator) -> RefreshRecord:
    record = state(coordinator).last_refresh
    assert record is not None
    return record


def host_running(digest: str, image_id: str = OLD, ref: str = REF_A) -> FakeEngine:
    """An engine whose ws-1 runs an image the registry served as `digest`."""
    engine = FakeEngine()
    engine.add(container("ws-1", ref, image_id))
    engine.images[image_id] = engine.publish(ref, image_id, digest)
    engine.registry.clear()
    return engine


def pulls(engine: FakeEngine) -> list[str]:
    return [call[1] for call in engine.calls if call[0] == "pull"]


async def test_first_observation_with_nothing_on_the_host_only_seeds() -> None:
    """No local image, no container: the first tick seeds `seen` and pulls nothing."""
    engine = FakeEngine()
    poller, coordinator, _ = setup(engine, Fetch({"a": D1}))
    tick = await poller.tick()
    assert tick.outcomes == {"a": SEEDED}
    assert coordinator.book.seen("a") == D1
    second = await poller.tick()
    assert second.outcomes == {"a": UNCHANGED}
    assert pulls(engine) == []


async def test_boot_seed_from_the_host_catches_an_update_made_while_down() -> None:
    """ws-1 runs D1; the registry has D2: the first tick refreshes and commits D2."""
    engine = host_running(D1)
    engine.publish(REF_A, NEW, D2)
    poller, coordinator, _ = setup(engine, Fetch({"a": D2}))
    tick = await poller.tick()
    assert tick.outcomes == {"a": SCHEDULED}
    await coordinator.idle()
    assert coordinator.book.seen("a") == D2
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]
    assert last_refresh(coordinator).source == POLL


async def test_a_restart_alone_recreates_nothing() -> None:
    """ws-1 runs what the registry serves: the first tick is unchanged, nothing is pulled."""
    engine = host_running(D1)
    poller, coordinator, _ = setup(engine, Fetch({"a": D1}))
    tick = await poller.tick()
    await coordinator.idle()
    assert tick.outcomes == {"a": UNCHANGED}
    assert pulls(engine) == []
    assert state(coordinator).last_trigger is None


async def test_the_local_tag_seeds_when_no_container_runs_it() -> None:
    """Without containers, the local tag's RepoDigests entry is what the host has."""
    engine = FakeEngine()
    engine.images[REF_A] = engine.publish(REF_A, OLD, D1)
    poller, coordinator, _ = setup(engine, Fetch({"a": D1}))
    assert (await poller.tick()).outcomes == {"a": UNCHANGED}
    assert coordinator.book.seen("a") == D1


async def test_containers_on_different_images_refresh_at_the_first_observation() -> None:
    """A half-converged host is stale: the first observation refreshes instead of seeding."""
    engine = host_running(D1)
    engine.add(container("ws-2", REF_A, "sha256:" + "0c" * 32))  # an image with no RepoDigests
    engine.publish(REF_A, NEW, D2)
    poller, coordinator, _ = setup(engine, Fetch({"a": D2}))
    assert (await poller.tick()).outcomes == {"a": SCHEDULED}
    await coordinator.idle()
    assert coordinator.book.seen("a") == D2
    assert {engine.by_name(n)["Image"] for n in ("ws-1", "ws-2")} == {NEW}  # type: ignore[index]


async def test_a_failed_refresh_rolls_back_and_is_retried_without_a_new_tick() -> None:
    """A pull failure leaves `seen`; the next tick's sighting of the same digest joins the
    planned retry, which applies it once the registry answers."""
    engine = host_running(D1)
    engine.publish(REF_A, NEW, D2)
    engine.fail_pull[REF_A] = PullError("registry 500")
    poller, coordinator, clock = setup(engine, Fetch({"a": D2}))
    assert (await poller.tick()).outcomes == {"a": SCHEDULED}
    await coordinator.idle()
    assert coordinator.book.seen("a") == D1
    assert last_refresh(coordinator).ok is False
    assert (await poller.tick()).outcomes == {"a": COALESCED}
    del engine.fail_pull[REF_A]
    await clock.advance(10)
    await coordinator.idle()
    assert coordinator.book.seen("a") == D2
    assert pulls(engine) == [REF_A, REF_A]


async def test_one_runtimes_fetch_error_never_blocks_another() -> None:
    """a's registry answers 404; b is still seeded, then refreshed on its change."""
    engine = FakeEngine()
    fetch = Fetch({"a": RegistryError("no such manifest (404)", status=404), "b": D1})
    poller, coordinator, _ = setup(engine, fetch, runtimes="a,b")
    tick = await poller.tick()
    assert tick.outcomes == {"a": FETCH_FAILED, "b": SEEDED}
    assert tick.errors == {"a": "no such manifest (404)"}
    last_poll = state(coordinator).last_poll
    assert last_poll is not None
    assert last_poll.error == "no such manifest (404)"
    engine.add(container("ws-b", REF_B, OLD))
    engine.publish(REF_B, NEW, D2)
    fetch.answers["b"] = D2
    assert (await poller.tick()).outcomes == {"a": FETCH_FAILED, "b": SCHEDULED}
    await coordinator.idle()
    assert coordinator.book.seen("b") == D2
    assert coordinator.book.seen("a") is None


async def test_a_fetch_that_fails_as_a_whole_fails_each_runtime_and_a_missing_answer_too() -> None:
    """A seam that raises counts against every runtime; one that omits a runtime, against it."""
    engine = FakeEngine()

    async def broken(_: Sequence[str]) -> Mapping[str, str | Exception]:
        raise RuntimeError("resolver crashed")

    poller, _, _ = setup(engine, Fetch({}), runtimes="a,b")
    assert (await poller.tick()).errors == {"a": "no answer", "b": "no answer"}
    poller.fetch = broken
    assert (await poller.tick()).errors == {"a": "resolver crashed", "b": "resolver crashed"}


async def test_webhook_then_poll_with_the_same_digest_does_nothing() -> None:
    """A webhook already applied D2; the poll that then observes D2 starts nothing."""
    engine = host_running(D1)
    engine.publish(REF_A, NEW, D2)
    poller, coordinator, _ = setup(engine, Fetch({"a": D2}))
    await coordinator.seed_from_host()
    assert coordinator.submit("a", D2, WEBHOOK) == SCHEDULED
    await coordinator.idle()
    tick = await poller.tick()
    await coordinator.idle()
    assert tick.outcomes == {"a": UNCHANGED}
    assert pulls(engine) == [REF_A]
    last_trigger = state(coordinator).last_trigger
    assert last_trigger is not None
    assert last_trigger.source == WEBHOOK


async def test_a_poll_during_a_webhook_refresh_coalesces() -> None:
    """The poll sees the digest the webhook's refresh is applying: one refresh in all."""
    engine = host_running(D1)
    engine.publish(REF_A, NEW, D2)
    gate = asyncio.Event()

    async def held(fn: Callable[[], RefreshResult]) -> RefreshResult:
        await gate.wait()
        return fn()

    poller, coordinator, _ = setup(engine, Fetch({"a": D2}))
    coordinator._run = held
    await coordinator.seed_from_host()
    coordinator.submit("a", D2, WEBHOOK)
    assert (await poller.tick()).outcomes == {"a": COALESCED}
    gate.set()
    await coordinator.idle()
    assert pulls(engine) == [REF_A]


async def test_an_unreachable_engine_defers_seeding_until_it_answers() -> None:
    """Without the host's view, seeding from the registry could hide an update: wait."""
    engine = host_running(D1)
    engine.publish(REF_A, NEW, D2)
    engine.fail["list"] = EngineUnavailable("engine down")
    poller, coordinator, _ = setup(engine, Fetch({"a": D2}))
    assert (await poller.tick()).outcomes == {"a": HOST_UNKNOWN}
    assert coordinator.book.seen("a") is None
    del engine.fail["list"]
    assert (await poller.tick()).outcomes == {"a": SCHEDULED}
    await coordinator.idle()
    assert coordinator.book.seen("a") == D2


async def test_run_ticks_at_once_then_every_interval_and_survives_a_crashing_tick() -> None:
    """The loop ticks first, pauses interval ± jitter, and a failing tick does not end it."""
    engine = FakeEngine()

    class StopsOnTheThirdPause(FakeClock):
        async def pause(self, seconds: float) -> None:
            self.sleep(seconds)
            if len(self.sleeps) == 3:
                raise asyncio.CancelledError

    clock = StopsOnTheThirdPause(wall_start=0)
    poller, _, _ = setup(engine, Fetch({"a": D1}))
    poller.clock, poller.jitter = clock, lambda: 0.1
    real_tick = poller.tick
    calls = 0

    async def flaky_tick() -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        return await real_tick()

    poller.tick = flaky_tick  # type: ignore[method-assign,assignment]
    with pytest.raises(asyncio.CancelledError):
        await poller.run()
    assert calls == 3
    assert clock.sleeps == pytest.approx([330.0, 330.0, 330.0])
    assert poller.next_tick == pytest.approx(990.0)
    assert poller.ticks == 2


@pytest.mark.parametrize(
    ("containers", "tag", "seed"),
    [
        ([], None, HostSeed(None)),
        ([], D1, HostSeed(D1)),
        ([D1, D1], D2, HostSeed(D1)),
        ([D1, D2], D1, HostSeed(None, stale=True)),
        ([None], D1, HostSeed(None, stale=True)),
    ],
)
def test_decide_the_host_seed(
    containers: list[str | None], tag: str | None, seed: HostSeed
) -> None:
    """Containers that agree seed; without containers the local tag does; otherwise stale."""
    assert decide(containers, tag) == seed


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
