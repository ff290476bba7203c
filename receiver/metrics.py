"""Prometheus metrics, one registry per application (tests build many apps in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .coordinator import Event, RefreshEvent
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
    """The `event` label for a delivery's X-GitHub-Event header."""
    return event if event in _EVENTS else "other"


def refresh_outcome(runtime: str, result: RefreshResult) -> str:
    """`failed` when anything failed, else `recreated` or `unchanged`."""
    if result.failed:
        return "failed"
    return "recreated" if result.recreated else "unchanged" if runtime in result.pulled else "none"


class DeliveryCounts(Collector):
    """`receiver_webhook_deliveries_total{event,outcome}`, counted in plain integers.

    The webhook route counts every delivery, thousands a second in a flood; a labelled
    prometheus Counter costs a label lookup and a lock each time, as much as a tenth of
    what the whole delivery costs. Counting happens on the event loop only; a scrape (in
    any thread) reads a snapshot.
    """

    NAME = "receiver_webhook_deliveries"
    HELP = "Webhook deliveries by event and outcome (status class or what was done)."

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[tuple[str, DeliveryOutcome], int] = {}
        registry.register(self)

    def count(self, event: str, outcome: DeliveryOutcome) -> None:
        """One more delivery of `event` (a bounded label) with `outcome`."""
        key = (event, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=("event", "outcome"))
        for (event, outcome), value in sorted(self._counts.copy().items()):
            family.add_metric((event, str(outcome)), value)
        yield family


class Metrics:
    """The receiver's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = DeliveryCounts(r)
        self.refreshes = Counter(
            "receiver_refreshes",
            "Refreshes of one runtime by trigger source and outcome.",
            ["runtime", "source", "outcome"],
            registry=r,
        )
        self.refresh_duration = Histogram(
            "receiver_refresh_duration_seconds",
            "Time one runtime's refresh took: pull, swaps, waits.",
            ["runtime"],
            buckets=_REFRESH_BUCKETS,
            registry=r,
        )
        self.recreated = Counter(
            "receiver_containers_recreated",
            "Containers moved onto a new image.",
            ["runtime"],
            registry=r,
        )
        self.poll_ticks = Counter("receiver_poll_ticks", "Poller ticks run.", registry=r)
        self.poll_tick_duration = Histogram(
            "receiver_poll_tick_duration_seconds",
            "Time one poll tick took (registry requests for every runtime).",
            buckets=_TICK_BUCKETS,
            registry=r,
        )
        self.last_poll = Gauge(
            "receiver_last_poll_timestamp_seconds",
            "Unix time the last poll tick finished.",
            registry=r,
        )
        self.quarantines = Counter(
            "receiver_quarantines",
            "Digests held because their canary failed by the image's fault.",
            ["runtime"],
            registry=r,
        )
        self.quarantined = Gauge(
            "receiver_quarantined",
            "1 while a digest of the runtime is quarantined.",
            ["runtime"],
            registry=r,
        )
        self.retries = Counter(
            "receiver_retries",
            "Refreshes the receiver tried again after a transient failure or a deferral.",
            ["runtime"],
            registry=r,
        )
        self.deferred = Counter(
            "receiver_deferred",
            "Workspaces whose swap waited (pre-update hook, paused, canary not proven).",
            ["runtime"],
            registry=r,
        )
        self.trigger_to_running = Histogram(
            "receiver_trigger_to_running_seconds",
            "From a trigger's arrival to its runtime's containers running the new image.",
            ["runtime"],
            buckets=_REFRESH_BUCKETS,
            registry=r,
        )

    def delivery(self, event: str | None, outcome: DeliveryOutcome) -> None:
        """Count one webhook delivery."""
        self.deliveries.count(event_label(event), outcome)

    def refreshed(self, event: Event) -> None:
        """Record one runtime's refresh (a coordinator listener)."""
        if not isinstance(event, RefreshEvent):
            return
        runtime, result = event.runtime, event.result
        if event.source.kind is SourceKind.RETRY:
            self.retries.labels(runtime).inc()
        if result.deferred:
            self.deferred.labels(runtime).inc(len(result.deferred))
        if event.quarantined is not None:
            self.quarantines.labels(runtime).inc()
            self.quarantined.labels(runtime).set(1)
        elif event.verdict is Verdict.DONE and runtime not in result.held:
            self.quarantined.labels(runtime).set(0)
        outcome = refresh_outcome(runtime, result)
        self.refreshes.labels(runtime, _source_label(event.source), outcome).inc()
        self.refresh_duration.labels(runtime).observe(event.seconds)
        if result.recreated:
            self.recreated.labels(runtime).inc(len(result.recreated))
            if outcome == "recreated":
                self.trigger_to_running.labels(runtime).observe(event.since_trigger)

    def tick(self, seconds: float, finished_at: float) -> None:
        """Record one poll tick."""
        self.poll_ticks.inc()
        self.poll_tick_duration.observe(seconds)
        self.last_poll.set(finished_at)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


def _source_label(source: Source) -> str:
    """`admin`, `poll` or `webhook:<event>`, the event bounded like the deliveries' label."""
    return f"{source.kind}:{event_label(source.event)}" if source.event else str(source.kind)
