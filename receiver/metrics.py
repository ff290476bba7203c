"""Prometheus metrics, one registry per application (tests build many apps in one process)."""

from __future__ import annotations

from .coordinator import Event, RefreshEvent
from .exposition import CONTENT_TYPE, Counter, Gauge, Histogram, Registry
from .outcomes import DeliveryOutcome, Source, SourceKind
from .result import RefreshResult
from .rollout import Verdict

__all__ = ["CONTENT_TYPE", "Metrics", "event_label", "refresh_outcome"]

# X-GitHub-Event is not covered by the signature: unknown names share one label value so a
# sender cannot grow the label set without bound.
_EVENTS = frozenset({"ping", "package", "registry_package", "repository_dispatch"})
# Swaps wait out a grace period (5 s by default) and pulls can take minutes.
_REFRESH_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
_TICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))


def event_label(event: str | None) -> str:
    """The `event` label for a delivery's event name (as `github.event_name` reads it)."""
    return event if event in _EVENTS else "other"


def refresh_outcome(runtime: str, result: RefreshResult) -> str:
    """`failed` when anything failed, else `recreated` or `unchanged`."""
    if result.failed:
        return "failed"
    return "recreated" if result.recreated else "unchanged" if runtime in result.pulled else "none"


class Metrics:
    """The receiver's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.deliveries = add(
            Counter(
                "receiver_webhook_deliveries",
                "Webhook deliveries by event and outcome (status class or what was done).",
                ("event", "outcome"),
            )
        )
        self.refreshes = add(
            Counter(
                "receiver_refreshes",
                "Refreshes of one runtime by trigger source and outcome.",
                ("runtime", "source", "outcome"),
            )
        )
        self.refresh_duration = add(
            Histogram(
                "receiver_refresh_duration_seconds",
                "Time one runtime's refresh took: pull, swaps, waits.",
                ("runtime",),
                buckets=_REFRESH_BUCKETS,
            )
        )
        self.recreated = add(
            Counter(
                "receiver_containers_recreated",
                "Containers moved onto a new image.",
                ("runtime",),
            )
        )
        self.poll_ticks = add(Counter("receiver_poll_ticks", "Poller ticks run."))
        self.poll_tick_duration = add(
            Histogram(
                "receiver_poll_tick_duration_seconds",
                "Time one poll tick took (registry requests for every runtime).",
                buckets=_TICK_BUCKETS,
            )
        )
        self.last_poll = add(
            Gauge("receiver_last_poll_timestamp_seconds", "Unix time the last poll tick finished.")
        )
        self.quarantines = add(
            Counter(
                "receiver_quarantines",
                "Digests held because their canary failed by the image's fault.",
                ("runtime",),
            )
        )
        self.quarantined = add(
            Gauge(
                "receiver_quarantined",
                "1 while a digest of the runtime is quarantined.",
                ("runtime",),
            )
        )
        self.retries = add(
            Counter(
                "receiver_retries",
                "Refreshes the receiver tried again after a transient failure or a deferral.",
                ("runtime",),
            )
        )
        self.deferred = add(
            Counter(
                "receiver_deferred",
                "Workspaces whose swap waited (pre-update hook, paused, canary not proven).",
                ("runtime",),
            )
        )
        self.trigger_to_running = add(
            Histogram(
                "receiver_trigger_to_running_seconds",
                "From a trigger's arrival to its runtime's containers running the new image.",
                ("runtime",),
                buckets=_REFRESH_BUCKETS,
            )
        )

    def delivery(self, event: str | None, outcome: DeliveryOutcome) -> None:
        """Count one webhook delivery."""
        self.deliveries.inc(event_label(event), outcome)

    def refreshed(self, event: Event) -> None:
        """Record one runtime's refresh (a coordinator listener)."""
        if not isinstance(event, RefreshEvent):
            return
        runtime, result = event.runtime, event.result
        if event.source.kind is SourceKind.RETRY:
            self.retries.inc(runtime)
        if result.deferred:
            self.deferred.inc(runtime, by=len(result.deferred))
        if event.quarantined is not None:
            self.quarantines.inc(runtime)
            self.quarantined.set(1, runtime)
        elif event.verdict is Verdict.DONE and runtime not in result.held:
            self.quarantined.set(0, runtime)
        outcome = refresh_outcome(runtime, result)
        self.refreshes.inc(runtime, _source_label(event.source), outcome)
        self.refresh_duration.observe(event.seconds, runtime)
        if result.recreated:
            self.recreated.inc(runtime, by=len(result.recreated))
            if outcome == "recreated":
                self.trigger_to_running.observe(event.since_trigger, runtime)

    def tick(self, seconds: float, finished_at: float) -> None:
        """Record one poll tick."""
        self.poll_ticks.inc()
        self.poll_tick_duration.observe(seconds)
        self.last_poll.set(finished_at)

    def render(self) -> bytes:
        """The text exposition format."""
        return self.registry.render()


def _source_label(source: Source) -> str:
    """`admin`, `poll` or `webhook:<event>`, the event bounded like the deliveries' label."""
    return f"{source.kind}:{event_label(source.event)}" if source.event else str(source.kind)
