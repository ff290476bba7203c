"""The coordinator: feeds every trigger through the digest book into the refresh service.

At most one refresh per runtime runs at a time; triggers that arrive meanwhile coalesce
into at most one follow-up; different runtimes refresh in parallel. Webhooks and the
poller submit and return at once; the admin route waits for its refresh. When a refresh
is over, the rollout policy settles its digest (rollout.py): committed, quarantined, or
tried again after a backoff, until it succeeds or a newer digest supersedes it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from anyio import to_thread

from . import rollout
from .book import DigestBook, Pending, Quarantine
from .clock import Clock
from .config import Config, RefreshMode, RolloutSettings
from .errors import EngineError
from .outcomes import ADMIN, RETRY, Failure, Source, SourceKind, TriggerOutcome
from .result import RefreshResult
from .seeding import HostSeed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshEvent:
    """One runtime's refresh as listeners (metrics, notifications) hear of it.

    `verdict` is what the rollout policy made of it; `quarantined` is set when this
    refresh put its digest in quarantine.
    """

    runtime: str
    source: Source
    digest: str | None
    result: RefreshResult
    seconds: float
    since_trigger: float
    verdict: rollout.Verdict = rollout.Verdict.DONE
    quarantined: Quarantine | None = None


@dataclass(frozen=True)
class AvailableEvent:
    """Notify mode: a new digest of a runtime was seen and is not applied."""

    runtime: str
    source: Source
    digest: str


Event = RefreshEvent | AvailableEvent
Listener = Callable[[Event], None]
Runner = Callable[[Callable[[], RefreshResult]], Awaitable[RefreshResult]]
Draw = Callable[[float, float], float]


class Refresher(Protocol):
    """What refreshes runtimes: the containers of this host's engine (refresh.py) or the
    services of a Swarm (swarm.py). Its calls block; the coordinator runs them in threads."""

    @property
    def config(self) -> Config:
        """The receiver's settings."""

    def check_runtimes(self, runtimes: Iterable[str] | None) -> list[str]:
        """The runtimes meant (all when None); raise UnknownRuntime for a stranger."""

    def refresh(
        self, runtimes: Sequence[str] | None = None, *, recreate: bool = True, force: bool = False
    ) -> RefreshResult:
        """Refresh the runtimes at once, outside the book (the command line)."""

    def refresh_runtime(
        self, runtime: str, *, recreate: bool = True, force: bool = False, hold: str | None = None
    ) -> RefreshResult:
        """Refresh one runtime; failures are in the result. `hold`: a quarantined digest."""

    def repair(self, runtimes: Sequence[str] | None = None) -> RefreshResult:
        """Finish or undo what a crash cut short."""

    def interrupt(self) -> None:
        """Shutdown begins: end what need not be waited for (a swap in flight is)."""

    def host_seeds(self, runtimes: Sequence[str]) -> dict[str, HostSeed]:
        """What the workspaces already run, per runtime (boot seeding)."""


async def _in_thread(fn: Callable[[], RefreshResult]) -> RefreshResult:
    return await to_thread.run_sync(fn)


class Coordinator:
    """Feeds triggers through the digest book into the refresh service, on the event loop."""

    def __init__(
        self,
        service: Refresher,
        book: DigestBook,
        *,
        run: Runner = _in_thread,
        listeners: Sequence[Listener] = (),
        draw: Draw = random.uniform,
    ) -> None:
        self.service = service
        self.book = book
        self._run = run
        self.listeners = list(listeners)
        # One clock for the book's records and the coordinator's timers.
        self.clock: Clock = book.clock
        self._draw = draw
        self._locks = {runtime: asyncio.Lock() for runtime in book.states}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.Task[None]] = {}

    @property
    def runtimes(self) -> list[str]:
        """The runtimes the book keeps."""
        return list(self.book.states)

    @property
    def settings(self) -> RolloutSettings:
        """The rollout settings (canary, retries, hooks, mode)."""
        return self.service.config.rollout

    def submit(
        self, runtime: str, digest: str | None, source: Source, arrived: float | None = None
    ) -> TriggerOutcome:
        """Accept an automatic trigger without waiting; say what became of it.

        `arrived` (monotonic) is when the trigger came in, if earlier than now.
        """
        state = self.book.states[runtime]
        self.book.note_trigger(runtime, digest, source)
        if digest is not None and digest == state.seen:
            return TriggerOutcome.UNCHANGED  # the common case of a flood of redeliveries
        held = state.quarantined
        if held is not None and digest == held.digest:
            return TriggerOutcome.QUARANTINED
        arrived = self.clock.monotonic() if arrived is None else arrived
        if self.settings.mode is RefreshMode.NOTIFY:
            self._announce(runtime, digest, source)
            return TriggerOutcome.AVAILABLE
        if state.driving:
            if digest is not None and digest == state.target and state.pending is None:
                return TriggerOutcome.COALESCED
            # At most one follow-up: a newer trigger replaces an older pending one.
            state.pending = Pending(digest, source, arrived)
            return TriggerOutcome.QUEUED
        if state.retry is not None:
            if digest is None or digest == state.retry.digest:
                return TriggerOutcome.COALESCED  # the planned retry will apply it
            self._cancel_retry(runtime)  # a newer digest supersedes the retry
        self._start(runtime, digest, source, arrived)
        return TriggerOutcome.SCHEDULED

    def submit_resolving(
        self, runtime: str, resolve: Callable[[], Awaitable[str | None]], source: Source
    ) -> TriggerOutcome:
        """Find the digest first (a registry HEAD), then submit; a failed lookup still refreshes."""

        arrived = self.clock.monotonic()

        async def resolve_then_submit() -> None:
            try:
                digest = await resolve()
            except Exception as exc:
                log.warning(
                    "runtime %s: digest lookup failed (%s); refreshing anyway", runtime, exc
                )
                digest = None
            self.submit(runtime, digest, source, arrived)

        self._spawn(resolve_then_submit())
        return TriggerOutcome.RESOLVING

    async def refresh(
        self,
        runtimes: Sequence[str] | None = None,
        *,
        recreate: bool = True,
        force: bool = False,
        source: Source = ADMIN,
    ) -> RefreshResult:
        """Refresh now and wait (the admin route); all runtimes when None. A person asked:
        a quarantined digest is attempted again, and notify mode does not apply.

        Raises UnknownRuntime (before doing anything) for a runtime that is not configured,
        and EngineUnavailable when containers cannot be listed.
        """
        names = self.service.check_runtimes(runtimes)
        arrived = self.clock.monotonic()
        results = await asyncio.gather(
            *(
                self._refresh(
                    r,
                    recreate=recreate,
                    force=force,
                    source=source,
                    arrived=arrived,
                    propagate=True,
                )
                for r in names
            )
        )
        merged = RefreshResult()
        for result in results:
            merged.merge(result)
        return merged

    async def boot(self, runtimes: Sequence[str] | None = None) -> None:
        """At start: repair swaps a crash cut short, then seed the book from the host.

        Raises EngineError when the engine cannot be read (the poller tries again).
        """
        names = self.runtimes if runtimes is None else list(runtimes)
        await to_thread.run_sync(self.service.repair, names)  # repair.py logs what it does
        await self.seed_from_host(names)

    async def seed_from_host(self, runtimes: Sequence[str] | None = None) -> None:
        """Seed the book from the images the host runs; EngineError when the engine is down."""
        names = self.runtimes if runtimes is None else list(runtimes)
        seeds = await to_thread.run_sync(self.service.host_seeds, names)
        self.book.apply_host_seeds(seeds)
        for runtime, seed in seeds.items():
            log.info(
                "runtime %s: host runs %s",
                runtime,
                seed.digest or ("mixed or unknown images" if seed.stale else "nothing yet"),
            )

    async def drain(self, timeout: float) -> None:
        """Shutdown: cancel planned retries, let refreshes in flight finish (up to
        `timeout` seconds), then cancel what is left."""
        for runtime in list(self._timers):
            self._cancel_retry(runtime)
        self.service.interrupt()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()

    async def idle(self) -> None:
        """Wait until no background work is left but planned retries (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    def _start(self, runtime: str, digest: str | None, source: Source, arrived: float) -> None:
        state = self.book.states[runtime]
        state.driving = True
        state.target = digest
        self._spawn(self._drive(runtime, digest, source, arrived))

    async def _drive(
        self, runtime: str, digest: str | None, source: Source, arrived: float
    ) -> None:
        state = self.book.states[runtime]
        try:
            while True:
                await self._refresh(runtime, source=source, unless_seen=digest, arrived=arrived)
                follow_up, state.pending = state.pending, None
                if follow_up is None:
                    return
                digest, source, arrived = follow_up.digest, follow_up.source, follow_up.arrived
                state.target = digest
        finally:
            state.driving = False
            state.target = None

    async def _refresh(
        self,
        runtime: str,
        *,
        recreate: bool = True,
        force: bool = False,
        source: Source,
        arrived: float,
        unless_seen: str | None = None,
        propagate: bool = False,
    ) -> RefreshResult:
        async with self._locks[runtime]:
            state = self.book.states[runtime]
            # Another refresh may have applied this digest while we waited for the lock.
            if unless_seen is not None and unless_seen == state.seen:
                if state.retry is not None and state.retry.digest == unless_seen:
                    self._cancel_retry(runtime)
                return RefreshResult()
            automatic = source.kind is not SourceKind.ADMIN
            hold = state.quarantined.digest if automatic and state.quarantined else None
            started = self.clock.monotonic()
            try:
                result = await self._run(
                    lambda: self.service.refresh_runtime(
                        runtime, recreate=recreate, force=force, hold=hold
                    )
                )
            except Exception as exc:
                # A caller who waits (admin) hears of it; background work records a failure,
                # so the book keeps its digest and the refresh is tried again later.
                if propagate:
                    raise
                if not isinstance(exc, EngineError):
                    log.exception("runtime %s: refresh crashed", runtime)
                result = RefreshResult()
                result.fail(Failure.of(runtime, exc))
            verdict, quarantined = (
                self._settle(runtime, unless_seen, source, result)
                if recreate
                else (rollout.Verdict.DONE, None)
            )
            now = self.clock.monotonic()
            self._tell(
                RefreshEvent(
                    runtime,
                    source,
                    unless_seen,
                    result,
                    now - started,
                    now - arrived,
                    verdict,
                    quarantined,
                )
            )
            log.info(
                "runtime %s: refresh from %s: %d recreated, %d failed, %d deferred: %s",
                runtime,
                source,
                len(result.recreated),
                len(result.failed),
                len(result.deferred),
                verdict,
                extra={"runtime": runtime, "source": str(source), "outcome": result.as_json()},
            )
            return result

    def _settle(
        self, runtime: str, target: str | None, source: Source, result: RefreshResult
    ) -> tuple[rollout.Verdict, Quarantine | None]:
        """Apply the rollout policy to a finished refresh of `target` (None: the tag)."""
        ok = self.book.commit(runtime, result, source)
        pulled = result.digests.get(runtime)
        if ok or runtime in result.held:
            self._cancel_retry(runtime)
            return (rollout.Verdict.DONE, None)
        canary = result.quarantine.get(runtime)
        verdict = rollout.verdict(
            image_fault=canary is not None and pulled is not None,
            failed=bool(result.failed),
            waiting=bool(result.deferred),
        )
        if verdict is rollout.Verdict.HOLD and canary is not None and pulled is not None:
            self._cancel_retry(runtime)
            held = self.book.quarantine(runtime, pulled, f"{canary.subject}: {canary.reason}")
            log.error("runtime %s: %s quarantined: %s", runtime, pulled, held.reason)
            return (verdict, held)
        # A person who asked (admin) has the answer; automatic triggers are retried.
        if source.kind is not SourceKind.ADMIN:
            self._plan_retry(runtime, target or pulled)
        return (verdict, None)

    def _plan_retry(self, runtime: str, digest: str | None) -> None:
        settings = self.settings
        plan = self.book.plan_retry(
            runtime,
            digest,
            lambda attempt: rollout.backoff(
                attempt, settings.retry_min, settings.retry_max, self._draw
            ),
        )
        delay = max(plan.due - self.clock.monotonic(), 0.0)
        log.warning(
            "runtime %s: trying %s again in %.0f s (try %d)",
            runtime,
            digest or "the tag",
            delay,
            plan.attempt,
        )
        previous = self._timers.pop(runtime, None)
        if previous is not None:
            previous.cancel()
        timer = asyncio.ensure_future(self._retry_after(runtime, digest, delay))
        self._timers[runtime] = timer

    async def _retry_after(self, runtime: str, digest: str | None, delay: float) -> None:
        await self.clock.pause(delay)
        self._timers.pop(runtime, None)
        state = self.book.states[runtime]
        if state.driving:
            # A refresh runs already; the retry becomes its follow-up.
            state.pending = Pending(digest, RETRY, self.clock.monotonic())
            return
        self._start(runtime, digest, RETRY, self.clock.monotonic())

    def _cancel_retry(self, runtime: str) -> None:
        self.book.states[runtime].retry = None
        timer = self._timers.pop(runtime, None)
        if timer is not None:
            timer.cancel()

    def _announce(self, runtime: str, digest: str | None, source: Source) -> None:
        """Notify mode: report a new digest once; nothing is pulled or swapped."""
        state = self.book.states[runtime]
        if digest is None or digest == state.available:
            return
        state.available = digest
        log.info("runtime %s: %s is available (notify mode: not applied)", runtime, digest)
        self._tell(AvailableEvent(runtime, source, digest))

    def _tell(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("listener failed")

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background refresh crashed", exc_info=task.exception())
