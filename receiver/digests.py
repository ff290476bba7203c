"""The digest book and the coordinator: one refresh in flight per runtime, triggers coalesced."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from anyio import to_thread

from .errors import EngineError
from .refresh import RefreshResult, RefreshService
from .seeding import HostSeed, host_seeds

log = logging.getLogger(__name__)

# What submit() says happened to a trigger.
SCHEDULED, QUEUED, COALESCED, UNCHANGED = "scheduled", "queued", "coalesced", "unchanged"


@dataclass
class Pending:
    """A trigger waiting for the refresh in flight to end; None digest means 'refresh anyway'."""

    digest: str | None
    source: str
    arrived: float = 0.0


@dataclass(frozen=True)
class RefreshEvent:
    """One runtime's refresh as listeners (metrics, notifications) hear of it."""

    runtime: str
    source: str
    digest: str | None
    result: RefreshResult
    seconds: float
    since_trigger: float


Listener = Callable[[RefreshEvent], None]


@dataclass
class RuntimeState:
    """What the book knows of one runtime."""

    seen: str | None = None
    driving: bool = False
    target: str | None = None
    pending: Pending | None = None
    last_trigger: dict[str, object] = field(default_factory=dict)
    last_refresh: dict[str, object] = field(default_factory=dict)
    last_poll: dict[str, object] = field(default_factory=dict)
    # Boot seeding: whether the host's images were read, and whether they disagreed.
    host_checked: bool = False
    host_stale: bool = False


class DigestBook:
    """Per runtime: the digest last applied or observed (`seen`), in-flight and pending work."""

    def __init__(self, runtimes: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        self.states = {runtime: RuntimeState() for runtime in runtimes}
        self.clock = clock

    def seen(self, runtime: str) -> str | None:
        """The digest last applied or observed for `runtime`."""
        return self.states[runtime].seen

    def seed(self, runtime: str, digest: str) -> bool:
        """Record a first observation; returns False when `seen` was already known."""
        state = self.states[runtime]
        if state.seen is not None:
            return False
        state.seen = digest
        return True

    def commit(self, runtime: str, result: RefreshResult, source: str) -> None:
        """Record a refresh's outcome; only a clean success moves `seen` (else it rolls back)."""
        state = self.states[runtime]
        ok = runtime in result.pulled and not result.failed
        if ok and runtime in result.digests:
            state.seen = result.digests[runtime]
            state.host_stale = False
        state.last_refresh = {
            "at": self.clock(),
            "source": source,
            "ok": ok,
            "recreated": sorted(result.recreated),
            "failed": dict(result.failed),
        }

    def note_trigger(self, runtime: str, digest: str | None, source: str) -> None:
        """Remember the last trigger for status pages."""
        self.states[runtime].last_trigger = {"at": self.clock(), "source": source, "digest": digest}

    def note_poll(self, runtime: str, digest: str | None, error: str | None) -> None:
        """Remember the poller's last observation of a runtime's tag."""
        self.states[runtime].last_poll = {"at": self.clock(), "digest": digest, "error": error}

    def apply_host_seeds(self, seeds: Mapping[str, HostSeed]) -> None:
        """Seed `seen` from what the host runs (boot), without overriding what is known."""
        for runtime, seed in seeds.items():
            state = self.states[runtime]
            if seed.digest is not None:
                self.seed(runtime, seed.digest)
            state.host_stale = seed.stale and state.seen is None
            state.host_checked = True


Runner = Callable[[Callable[[], RefreshResult]], Awaitable[RefreshResult]]


async def _in_thread(fn: Callable[[], RefreshResult]) -> RefreshResult:
    return await to_thread.run_sync(fn)


class Coordinator:
    """Feeds triggers through the digest book into the refresh service, on the event loop."""

    def __init__(
        self,
        service: RefreshService,
        book: DigestBook,
        run: Runner = _in_thread,
        listeners: Sequence[Listener] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.book = book
        self._run = run
        self.listeners = list(listeners)
        self._monotonic = monotonic
        self._locks = {runtime: asyncio.Lock() for runtime in book.states}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, runtime: str, digest: str | None, source: str, arrived: float | None = None
    ) -> str:
        """Accept a trigger without waiting; says whether it started, queued or changed nothing.

        `arrived` (monotonic) is when the trigger came in, if earlier than now.
        """
        arrived = self._monotonic() if arrived is None else arrived
        state = self.book.states[runtime]
        self.book.note_trigger(runtime, digest, source)
        if digest is not None and digest == state.seen:
            return UNCHANGED
        if state.driving:
            if digest is not None and digest == state.target and state.pending is None:
                return COALESCED
            # At most one follow-up: a newer trigger replaces an older pending one.
            state.pending = Pending(digest, source, arrived)
            return QUEUED
        state.driving = True
        state.target = digest
        self._spawn(self._drive(runtime, digest, source, arrived))
        return SCHEDULED

    def spawn_resolving(
        self, runtime: str, resolve: Callable[[], Awaitable[str | None]], source: str
    ) -> None:
        """Find the digest first (a registry HEAD), then submit; a failed lookup still refreshes."""

        arrived = self._monotonic()

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

    async def refresh(
        self,
        runtimes: Sequence[str],
        *,
        recreate: bool = True,
        force: bool = False,
        source: str = "admin",
    ) -> RefreshResult:
        """Refresh now and wait (the admin route); EngineUnavailable propagates."""
        arrived = self._monotonic()
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
                for r in runtimes
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
        names = list(self.book.states if runtimes is None else runtimes)
        await to_thread.run_sync(self.service.repair, names)  # repair.py logs what it does
        await self.seed_from_host(names)

    async def seed_from_host(self, runtimes: Sequence[str] | None = None) -> None:
        """Seed the book from the images the host runs; EngineError when the engine is down."""
        names = list(self.book.states if runtimes is None else runtimes)
        service = self.service
        seeds = await to_thread.run_sync(host_seeds, service.engine, service.config, names)
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

    async def _drive(self, runtime: str, digest: str | None, source: str, arrived: float) -> None:
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
        source: str,
        arrived: float,
        unless_seen: str | None = None,
        propagate: bool = False,
    ) -> RefreshResult:
        async with self._locks[runtime]:
            # Another refresh may have applied this digest while we waited for the lock.
            if unless_seen is not None and unless_seen == self.book.seen(runtime):
                return RefreshResult()
            started = self._monotonic()
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
                result = RefreshResult(failed={runtime: str(exc) or type(exc).__name__})
            if recreate:
                self.book.commit(runtime, result, source)
            now = self._monotonic()
            self._tell(
                RefreshEvent(runtime, source, unless_seen, result, now - started, now - arrived)
            )
            log.info(
                "runtime %s: refresh from %s: %d recreated, %d failed",
                runtime,
                source,
                len(result.recreated),
                len(result.failed),
                extra={"runtime": runtime, "source": source, "outcome": result.as_json()},
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
