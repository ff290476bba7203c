"""The digest book: per runtime, the digest last applied or observed, and what is in flight.

The rules (README, "The registry poller"): a trigger whose digest the book has seen does
nothing; a refresh that succeeds moves `seen` to the digest it pulled; one that fails
leaves `seen` as it was, so the next trigger tries again. Boot seeds `seen` from the host.
Alongside, the book keeps the last trigger, refresh and poll of each runtime for the
status page, as typed records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from .clock import SYSTEM, Clock
from .outcomes import Failure, Source
from .result import RefreshResult
from .seeding import HostSeed


@dataclass(frozen=True)
class Pending:
    """A trigger waiting for the refresh in flight to end; None digest means 'refresh anyway'."""

    digest: str | None
    source: Source
    arrived: float = 0.0  # monotonic


class TriggerRecord(msgspec.Struct, frozen=True, gc=False):
    """The last trigger of a runtime: when (wall time), from where, for which digest.

    Made on every trigger, a flood of redeliveries included, so a msgspec Struct: as
    immutable as the frozen dataclasses beside it, and a fifth of their cost to make.
    """

    at: float
    source: Source
    digest: str | None


@dataclass(frozen=True)
class RefreshRecord:
    """The last refresh of a runtime: when it ended (wall time), from where, what it did."""

    at: float
    source: Source
    ok: bool
    recreated: tuple[str, ...]
    failed: Mapping[str, Failure]


@dataclass(frozen=True)
class PollRecord:
    """The poller's last observation of a runtime's tag: a digest or the error it got."""

    at: float
    digest: str | None
    error: str | None


@dataclass(frozen=True)
class Quarantine:
    """A digest held because its canary failed by the image's fault (since: wall time)."""

    digest: str
    reason: str
    since: float


@dataclass(frozen=True)
class RetryPlan:
    """The next try of a digest whose refresh failed for a transient or unknown cause, or
    left workspaces waiting; `attempt` counts the tries since it first failed."""

    digest: str | None
    attempt: int
    at: float  # wall time, for the status page
    due: float  # monotonic


@dataclass
class RuntimeState:
    """What the book knows of one runtime."""

    seen: str | None = None
    driving: bool = False
    target: str | None = None
    pending: Pending | None = None
    last_trigger: TriggerRecord | None = None
    last_refresh: RefreshRecord | None = None
    last_poll: PollRecord | None = None
    # Boot seeding: whether the host's images were read, and whether they disagreed.
    host_checked: bool = False
    host_stale: bool = False
    # The rollout policy: a digest held after an image fault, the next retry, and (in
    # notify mode) the newest digest reported but not applied.
    quarantined: Quarantine | None = None
    retry: RetryPlan | None = None
    available: str | None = None


class DigestBook:
    """Per runtime: the digest last applied or observed (`seen`), in-flight and pending work."""

    def __init__(self, runtimes: Sequence[str], clock: Clock = SYSTEM) -> None:
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

    def commit(self, runtime: str, result: RefreshResult, source: Source) -> bool:
        """Record a refresh's outcome; only a complete success moves `seen` (else it rolls
        back) and lifts a quarantine. Whether it was one."""
        state = self.states[runtime]
        ok = (
            runtime in result.pulled
            and not result.failed
            and not result.deferred
            and runtime not in result.held
        )
        if ok and runtime in result.digests:
            state.seen = result.digests[runtime]
            state.host_stale = False
            state.quarantined = None
        state.last_refresh = RefreshRecord(
            at=self.clock.wall(),
            source=source,
            ok=ok,
            recreated=tuple(sorted(result.recreated)),
            failed=dict(result.failed),
        )
        return ok

    def quarantine(self, runtime: str, digest: str, reason: str) -> Quarantine:
        """Hold `digest`: automatic triggers never attempt it again."""
        held = Quarantine(digest, reason, self.clock.wall())
        self.states[runtime].quarantined = held
        return held

    def plan_retry(
        self, runtime: str, digest: str | None, delay: Callable[[int], float]
    ) -> RetryPlan:
        """Plan the next try of `digest`, `delay(attempt)` seconds from now; tries of the
        same digest count up, a new digest starts again from one."""
        state = self.states[runtime]
        previous = state.retry
        attempt = previous.attempt + 1 if previous and previous.digest == digest else 1
        seconds = delay(attempt)
        plan = RetryPlan(
            digest, attempt, self.clock.wall() + seconds, self.clock.monotonic() + seconds
        )
        state.retry = plan
        return plan

    def note_trigger(self, runtime: str, digest: str | None, source: Source) -> None:
        """Remember the last trigger for status pages."""
        self.states[runtime].last_trigger = TriggerRecord(self.clock.wall(), source, digest)

    def note_poll(self, runtime: str, digest: str | None, error: str | None) -> None:
        """Remember the poller's last observation of a runtime's tag."""
        self.states[runtime].last_poll = PollRecord(self.clock.wall(), digest, error)

    def apply_host_seeds(self, seeds: Mapping[str, HostSeed]) -> None:
        """Seed `seen` from what the host runs (boot), without overriding what is known."""
        for runtime, seed in seeds.items():
            state = self.states[runtime]
            if seed.digest is not None:
                self.seed(runtime, seed.digest)
            state.host_stale = seed.stale and state.seen is None
            state.host_checked = True
