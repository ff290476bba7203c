"""The registry digest poller: the fallback that catches every delivery GitHub never made.

Each tick asks the registry for every runtime's tag digest and feeds what changed into
the coordinator, the same digest book the webhooks use. The rules:
- a runtime the host runs nothing of is only seeded by its first observation;
- a changed digest starts a refresh; a failed refresh leaves `seen` as it was, so the
  next tick sees the change again and retries;
- one runtime's fetch error is logged and recorded, never blocks the others.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .clock import SYSTEM, Clock
from .coordinator import Coordinator
from .errors import EngineError
from .imageref import ImageRef
from .outcomes import POLL, PollOutcome, TriggerOutcome
from .registry import RegistryClient

log = logging.getLogger(__name__)

JITTER = 0.1  # each pause is the interval ± 10 %, so many receivers do not poll in step

# The fetch seam: runtimes in, each one's tag digest (or the error that stopped it) out.
Fetch = Callable[[Sequence[str]], Awaitable[Mapping[str, "str | Exception"]]]


def registry_fetch(registry: RegistryClient, images: Mapping[str, ImageRef]) -> Fetch:
    """The production fetch: every runtime's tag through one batched registry call."""

    async def fetch(runtimes: Sequence[str]) -> Mapping[str, str | Exception]:
        found = await registry.digests(images[runtime] for runtime in runtimes)
        return {runtime: found[images[runtime]] for runtime in runtimes}

    return fetch


@dataclass
class Tick:
    """One tick's record (wall times), for the status page and the logs."""

    started: float
    finished: float = 0.0
    outcomes: dict[str, PollOutcome | TriggerOutcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Poller:
    """Polls every `interval` seconds (first tick at once) until cancelled."""

    def __init__(
        self,
        coordinator: Coordinator,
        fetch: Fetch,
        interval: float,
        *,
        clock: Clock = SYSTEM,
        jitter: Callable[[], float] = lambda: random.uniform(-JITTER, JITTER),  # noqa: S311
        on_tick: Callable[[Tick], None] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.fetch = fetch
        self.interval = interval
        self.clock = clock
        self.jitter = jitter
        self.on_tick = on_tick
        self.last_tick: Tick | None = None
        self.next_tick: float | None = None  # wall time
        self.ticks = 0

    async def run(self) -> None:
        """Tick, pause, repeat; a tick that fails is logged and the loop goes on."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("poll tick failed")
            pause = self.interval * (1 + self.jitter())
            self.next_tick = self.clock.wall() + pause
            await self.clock.pause(pause)

    async def tick(self) -> Tick:
        """Observe every runtime once and hand what changed to the coordinator."""
        book = self.coordinator.book
        runtimes = self.coordinator.runtimes
        tick = Tick(started=self.clock.wall())
        self.next_tick = None
        unchecked = [name for name in runtimes if not book.states[name].host_checked]
        if unchecked:
            try:
                await self.coordinator.boot(unchecked)
            except EngineError as exc:
                log.warning("poll: cannot read the host's images yet: %s", exc)
        try:
            observed = await self.fetch(runtimes)
        except Exception as exc:  # the seam failed as a whole: every runtime failed
            observed = {name: exc for name in runtimes}
        for runtime in runtimes:
            found = observed.get(runtime)
            if not isinstance(found, str):
                reason = str(found) if found is not None else "no answer"
                tick.outcomes[runtime], tick.errors[runtime] = PollOutcome.FETCH_FAILED, reason
                book.note_poll(runtime, None, reason)
                log.warning("poll: runtime %s: %s", runtime, reason)
                continue
            book.note_poll(runtime, found, None)
            tick.outcomes[runtime] = self._observe(runtime, found)
        tick.finished = self.clock.wall()
        self.ticks += 1
        self.last_tick = tick
        if self.on_tick is not None:
            self.on_tick(tick)
        changed = {k: str(v) for k, v in tick.outcomes.items() if v != TriggerOutcome.UNCHANGED}
        log.info(
            "poll tick %d: %d runtime(s), %d unchanged, %d error(s)%s",
            self.ticks,
            len(runtimes),
            len(runtimes) - len(changed),
            len(tick.errors),
            f": {changed}" if changed else "",
        )
        return tick

    def _observe(self, runtime: str, digest: str) -> PollOutcome | TriggerOutcome:
        state = self.coordinator.book.states[runtime]
        if not state.host_checked:
            # Seeding now could swallow an update published while the engine was away.
            return PollOutcome.HOST_UNKNOWN
        if state.seen is None and not state.host_stale:
            self.coordinator.book.seed(runtime, digest)
            log.info("poll: runtime %s: first observation %s, seeded", runtime, digest)
            return PollOutcome.SEEDED
        if digest == state.seen:
            # Not a trigger: leave the last trigger (a webhook, say) on the status page.
            return TriggerOutcome.UNCHANGED
        outcome = self.coordinator.submit(runtime, digest, POLL)
        if outcome is TriggerOutcome.SCHEDULED:
            log.info("poll: runtime %s: %s → %s, refreshing", runtime, state.seen, digest)
        return outcome
