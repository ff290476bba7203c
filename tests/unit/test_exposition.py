"""The text exposition format, checked by Prometheus's own parser (prometheus_client)."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.exposition import Counter, Gauge, Histogram, Registry


def parsed(registry: Registry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by sorted labels, as Prometheus reads the page."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(registry.render().decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_counters_gauges_and_unlabelled_metrics() -> None:
    """Counters count per label set under `_total`; gauges hold what was set; an unlabelled
    metric shows 0 before anything happened, a labelled one shows nothing."""
    registry = Registry()
    hits = registry.add(Counter("hits", "Hits.", ("route",)))
    ticks = registry.add(Counter("ticks", "Ticks."))
    level = registry.add(Gauge("level", "Level.", ("tank",)))
    idle = registry.add(Gauge("idle", "Idle."))
    hits.inc("a")
    hits.inc("a", by=2)
    hits.inc("b")
    level.set(3.5, "t1")
    found = parsed(registry)
    assert found["hits_total"] == {(("route", "a"),): 3.0, (("route", "b"),): 1.0}
    assert found["ticks_total"] == {(): 0.0}
    assert found["level"] == {(("tank", "t1"),): 3.5}
    assert found["idle"] == {(): 0.0}
    ticks.inc()
    idle.set(1)
    assert parsed(registry)["ticks_total"] == {(): 1.0}


def test_histogram_buckets_are_cumulative_and_end_at_inf() -> None:
    """Each observation lands in the first bucket it fits; buckets add up, +Inf holds all."""
    registry = Registry()
    latency = registry.add(Histogram("latency", "Latency.", ("r",), buckets=(0.1, 1)))
    for value in (0.05, 0.5, 0.5, 7.0):
        latency.observe(value, "x")
    found = parsed(registry)
    buckets = {dict(labels)["le"]: value for labels, value in found["latency_bucket"].items()}
    assert buckets == {"0.1": 1.0, "1.0": 3.0, "+Inf": 4.0}
    assert found["latency_count"] == {(("r", "x"),): 4.0}
    assert found["latency_sum"] == {(("r", "x"),): pytest.approx(8.05)}


def test_an_observation_below_no_bound_still_counts_in_inf() -> None:
    """NaN fits no bucket: +Inf still holds every observation, as _count does."""
    registry = Registry()
    latency = registry.add(Histogram("latency", "Latency.", buckets=(1,)))
    latency.observe(0.5)
    latency.observe(math.nan)
    found = parsed(registry)
    buckets = {dict(labels)["le"]: value for labels, value in found["latency_bucket"].items()}
    assert buckets == {"1.0": 1.0, "+Inf": 2.0}
    assert found["latency_count"] == {(): 2.0}


def test_label_values_and_help_are_escaped() -> None:
    """Quotes, backslashes and newlines in a label value or the help survive the round trip."""
    registry = Registry()
    odd = 'a "quoted"\\path\nnext'
    registry.add(Counter("odd", "Help with \\ and\nnewline.", ("v",))).inc(odd)
    family = next(iter(text_string_to_metric_families(registry.render().decode())))
    assert family.documentation == "Help with \\ and\nnewline."
    assert family.samples[0].labels == {"v": odd}


def test_special_values() -> None:
    """Infinities and NaN are written as the format spells them."""
    registry = Registry()
    gauge = registry.add(Gauge("g", "G.", ("k",)))
    gauge.set(math.inf, "up")
    gauge.set(-math.inf, "down")
    gauge.set(math.nan, "none")
    text = registry.render().decode()
    assert 'g{k="up"} +Inf' in text
    assert 'g{k="down"} -Inf' in text
    assert 'g{k="none"} NaN' in text


def test_misuse_is_refused() -> None:
    """The wrong number of label values, or a name registered twice, is a programming error."""
    registry = Registry()
    counter = registry.add(Counter("c", "C.", ("a", "b")))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc("only-one")
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(Gauge("c", "Again."))
