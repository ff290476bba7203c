"""The status page's JSON: per runtime what the book knows, and the poller's ticks."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .book import (
    DigestBook,
    PollRecord,
    Quarantine,
    RefreshRecord,
    RuntimeState,
    TriggerRecord,
)
from .imageref import ImageRef
from .poller import Poller, Tick

R = TypeVar("R")


def iso(timestamp: float | None) -> str | None:
    """A Unix timestamp as ISO 8601 UTC with milliseconds (None stays None)."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quarantine(held: Quarantine) -> dict[str, Any]:
    return {"digest": held.digest, "reason": held.reason, "since": iso(held.since)}


def _trigger(record: TriggerRecord) -> dict[str, Any]:
    return {"at": iso(record.at), "source": str(record.source), "digest": record.digest}


def _refresh(record: RefreshRecord) -> dict[str, Any]:
    return {
        "at": iso(record.at),
        "source": str(record.source),
        "ok": record.ok,
        "recreated": list(record.recreated),
        "failed": {name: failure.reason for name, failure in record.failed.items()},
    }


def _poll(record: PollRecord) -> dict[str, Any]:
    return {"at": iso(record.at), "digest": record.digest, "error": record.error}


def _tick(tick: Tick) -> dict[str, Any]:
    return {
        "started": iso(tick.started),
        "finished": iso(tick.finished),
        "duration_seconds": round(tick.finished - tick.started, 3),
        "outcomes": {name: str(tick.outcomes[name]) for name in sorted(tick.outcomes)},
        "errors": dict(sorted(tick.errors.items())),
    }


def _maybe(render: Callable[[R], dict[str, Any]], record: R | None) -> dict[str, Any] | None:
    """`render(record)`, or None when nothing was recorded yet."""
    return None if record is None else render(record)


def _runtime(image: ImageRef, state: RuntimeState) -> dict[str, Any]:
    pending = state.pending
    return {
        "image": str(image),
        "seen": state.seen,
        "refreshing": state.driving,
        "pending": ({"digest": pending.digest, "source": str(pending.source)} if pending else None),
        "quarantined": _maybe(_quarantine, state.quarantined),
        "retry_at": iso(state.retry.at) if state.retry else None,
        "available": state.available,
        "last_trigger": _maybe(_trigger, state.last_trigger),
        "last_refresh": _maybe(_refresh, state.last_refresh),
        "last_poll": _maybe(_poll, state.last_poll),
    }


def snapshot(
    book: DigestBook, images: Mapping[str, ImageRef], poller: Poller | None
) -> dict[str, Any]:
    """Everything `GET /admin/status` shows."""
    runtimes = {name: _runtime(images[name], state) for name, state in book.states.items()}
    poll: dict[str, Any] = {"enabled": poller is not None}
    if poller is not None:
        poll.update(
            interval_seconds=poller.interval,
            ticks=poller.ticks,
            last_tick=_maybe(_tick, poller.last_tick),
            next_tick=iso(poller.next_tick),
        )
    return {"runtimes": runtimes, "poller": poll}
