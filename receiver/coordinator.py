"""The coordinator: feeds every trigger through the digest book into the refresh service.

At most one refresh per runtime runs at a time; triggers that arrive meanwhile coalesce
into at most one follow-up; different runtimes refresh in parallel. Webhooks and the
poller submit and return at once; the admin route waits for its refresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from anyio import to_thread

from .book import DigestBook, Pending
from .clock import SYSTEM, Clock
from .errors import EngineError
from .outcomes import ADMIN, Failure, Source, TriggerOutcome
from .refresh import RefreshResult, RefreshService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshEvent:
    """One runtime's refresh as listeners (metrics, notifications) hear of it."""

    runtime: str
    source: Source
    digest: str | None
    result: RefreshResult
    seconds: float
    since_trigger: float


Listener = Callable[[RefreshEvent], None]
Runner = Callable[[Callable[[], RefreshResult]], Awaitable[RefreshResult]]


async def _in_thread(fn: Callable[[], RefreshResult]) -> RefreshResult:
    return await to_thread.run_sync(fn)


class Coordinator:
    """Feeds triggers through the digest book into the refresh service, on the event loop."""

    def __init__(
        self,
        service: RefreshService,
        book: DigestBook,
        *,
        run: Runner = _in_thread,
        listeners: Sequence[Listener] = (),
        clock: Clock = SYSTEM,
    ) -> None:
        self.service = service
        self.book = book
        self._run = run
        self.listeners = list(listeners)
        self.clock = clock
        self._locks = {runtime: asyncio.Lock() for runtime in book.states}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def runtimes(self) -> list[str]:
        """The runtimes the book keeps."""
        return list(self.book.states)

    def submit(
        self, runtime: str, digest: str | None, source: Source, arrived: float | None = None
    ) -> TriggerOutcome:
        """Accept a trigger without waiting; says whether it started, queued or changed nothing.

        `arrived` (monotonic) is when the trigger came in, if earlier than now.
        """
        arrived = self.clock.monotonic() if arrived is None else arrived
        state = self.book.states[runtime]
        self.book.note_trigger(runtime, digest, source)
        if digest is not None and digest == state.seen:
            return TriggerOutcome.UNCHANGED
        if state.driving:
            if digest is not None and digest == state.target and state.pending is None:
                return TriggerOutcome.COALESCED
            # At most one follow-up: a newer trigger replaces an older pending one.
            state.pending = Pending(digest, source, arrived)
            return TriggerOutcome.QUEUED
        state.driving = True
        state.target = digest
        self._spawn(self._drive(runtime, digest, source, arrived))
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
        """Refresh now and wait (the admin route); all runtimes when None.

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
        """Wait for background refreshes to finish, up to `timeout` seconds, then cancel them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()

    async def idle(self) -> None:
        """Wait until no background work is left (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

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
            # Another refresh may have applied this digest while we waited for the lock.
            if unless_seen is not None and unless_seen == self.book.seen(runtime):
                return RefreshResult()
            started = self.clock.monotonic()
            try:
                result = await self._run(
                    lambda: self.service.refresh_runtime(runtime, recreate=recreate, force=force)
                )
            except Exception as exc:
                # A caller who waits (admin) hears of it; background work records a failure,
                # so the book keeps its digest and the next trigger retries.
                if propagate:
                    raise
                if not isinstance(exc, EngineError):
                    log.exception("runtime %s: refresh crashed", runtime)
                result = RefreshResult()
                result.fail(Failure.of(runtime, exc))
            if recreate:
                self.book.commit(runtime, result, source)
            now = self.clock.monotonic()
            self._tell(
                RefreshEvent(runtime, source, unless_seen, result, now - started, now - arrived)
            )
            log.info(
                "runtime %s: refresh from %s: %d recreated, %d failed",
                runtime,
                source,
                len(result.recreated),
                len(result.failed),
                extra={"runtime": runtime, "source": str(source), "outcome": result.as_json()},
            )
            return result

    def _tell(self, event: RefreshEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("refresh listener failed")

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background refresh crashed", exc_info=task.exception())
