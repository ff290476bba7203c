"""The status page's JSON: per runtime what the book knows, and the poller's ticks."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .digests import DigestBook
from .imageref import ImageRef
from .poller import Poller


def iso(timestamp: object) -> object:
    """A Unix timestamp as ISO 8601 UTC; anything else as it is."""
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return timestamp


def _stamped(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A record with its times in ISO 8601, or None when nothing was recorded yet."""
    if not record:
        return None
    return {key: iso(value) if key in _TIMES else value for key, value in record.items()}


_TIMES = {"at", "started", "finished"}


def snapshot(
    book: DigestBook, images: Mapping[str, ImageRef], poller: Poller | None
) -> dict[str, Any]:
    """Everything `GET /admin/status` shows."""
    runtimes: dict[str, Any] = {}
    for name, state in book.states.items():
        runtimes[name] = {
            "image": str(images[name]),
            "seen": state.seen,
            "refreshing": state.driving,
            "pending": (
                {"digest": state.pending.digest, "source": state.pending.source}
                if state.pending
                else None
            ),
            "last_trigger": _stamped(state.last_trigger),
            "last_refresh": _stamped(state.last_refresh),
            "last_poll": _stamped(state.last_poll),
        }
    poll: dict[str, Any] = {"enabled": poller is not None}
    if poller is not None:
        poll.update(
            interval_seconds=poller.interval,
            ticks=poller.ticks,
            last_tick=_stamped(poller.last_tick.as_json()) if poller.last_tick else None,
            next_tick=iso(poller.next_tick),
        )
    return {"runtimes": runtimes, "poller": poll}
