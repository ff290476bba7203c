"""Counters, gauges and histograms by label, and Prometheus's text exposition format (0.0.4).

The receiver's dozen metrics need no client library. prometheus_client cost 1.5 MB of
resident memory for its imports and a lock and a label lookup on every update, and the
webhook route updates a counter on every delivery. Here an update is a dict operation.
Updates happen on the event loop; a scrape (in any thread) renders copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]
F = TypeVar("F", bound="_Family")


def _number(value: float) -> str:
    """A sample value as the format spells it."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class _Family:
    """One metric family: a name, its help, its label names and a value per label set."""

    kind = ""
    suffix = ""  # of the samples' name (and the family's, as Prometheus's own are named)

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._values: dict[Labels, float] = {}
        if not self.labels:
            self._values[()] = 0.0  # an unlabelled metric exists from the start

    def _check(self, values: Labels) -> None:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {values}")

    def _selector(self, values: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
        pairs = (*zip(self.labels, values, strict=True), *extra)
        if not pairs:
            return ""
        return "{" + ",".join(f'{key}="{_escape_label(value)}"' for key, value in pairs) + "}"

    def header(self) -> Iterator[str]:
        name = self.name + self.suffix
        yield f"# HELP {name} {_escape_help(self.help)}"
        yield f"# TYPE {name} {self.kind}"

    def lines(self) -> Iterator[str]:
        """The family in the text format."""
        yield from self.header()
        name = self.name + self.suffix
        for values, value in sorted(self._values.copy().items()):
            yield f"{name}{self._selector(values)} {_number(value)}"


class Counter(_Family):
    """A count that only goes up; exposed as `<name>_total`."""

    kind = "counter"
    suffix = "_total"

    def inc(self, *labels: str, by: float = 1.0) -> None:
        """Add `by` to the count of this label set."""
        self._check(labels)
        self._values[labels] = self._values.get(labels, 0.0) + by


class Gauge(_Family):
    """A value that is set."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        """Set the value of this label set."""
        self._check(labels)
        self._values[labels] = float(value)


class Histogram(_Family):
    """Observations counted into cumulative buckets (the last one +Inf), with sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        self.bounds = tuple(sorted(set(buckets) | {math.inf}))
        self._series: dict[Labels, list[float]] = {}  # per bucket, then sum, then count
        super().__init__(name, help_text, labels)
        self._values.clear()
        if not self.labels:
            self._series[()] = [0.0] * (len(self.bounds) + 2)

    def observe(self, value: float, *labels: str) -> None:
        """Count one observation."""
        self._check(labels)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self.bounds) + 2)
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                series[index] += 1
                break
        else:  # NaN is below no bound: +Inf still counts it, so that it equals _count
            series[len(self.bounds) - 1] += 1
        series[-2] += value
        series[-1] += 1

    def lines(self) -> Iterator[str]:
        yield from self.header()
        for values, series in sorted(self._series.copy().items()):
            series = list(series)
            cumulative = 0.0
            for bound, count in zip(self.bounds, series, strict=False):
                cumulative += count
                bucket = self._selector(values, (("le", _number(bound)),))
                yield f"{self.name}_bucket{bucket} {_number(cumulative)}"
            selector = self._selector(values)
            yield f"{self.name}_sum{selector} {_number(series[-2])}"
            yield f"{self.name}_count{selector} {_number(series[-1])}"


class Registry:
    """The families of one application, rendered together."""

    def __init__(self) -> None:
        self.families: list[_Family] = []

    def add(self, family: F) -> F:
        """Register `family`; returns it."""
        if any(known.name == family.name for known in self.families):
            raise ValueError(f"metric {family.name} registered twice")
        self.families.append(family)
        return family

    def render(self) -> bytes:
        """Every family in the text exposition format."""
        lines = [line for family in self.families for line in family.lines()]
        return ("\n".join(lines) + "\n").encode("utf-8")
