"""Notifications: a JSON summary of each refresh that recreated or failed something.

The body has a `text` field, so a Slack-compatible incoming webhook shows it as is, plus
the structured fields for anything else. Sending happens in the background: a slow or
failing endpoint is logged and never delays or fails a refresh. The URL is treated as a
secret (incoming-webhook URLs are credentials) and never logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from .coordinator import AvailableEvent, Event
from .outcomes import SourceKind

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MAX_PENDING = 100  # notifications in flight at once; beyond that they are dropped and logged


def summary(event: Event) -> dict[str, Any] | None:
    """The notification for an event, or None when it is no news: a refresh that changed
    and broke nothing, or a retry that failed again (its first failure was told)."""
    if isinstance(event, AvailableEvent):
        return {
            "text": f"a new image of {event.runtime} is available: {event.digest[:19]} "
            f"(from {event.source}; REFRESH_MODE=notify, not applied)",
            "runtime": event.runtime,
            "source": str(event.source),
            "digest": event.digest,
            "available": True,
        }
    result = event.result
    if not (result.recreated or result.failed or result.repaired):
        return None
    if event.source.kind is SourceKind.RETRY and not result.recreated and not event.quarantined:
        return None
    digest = result.digests.get(event.runtime)
    parts = [f"workspace image refresh of {event.runtime} (from {event.source})"]
    if digest:
        parts[0] += f" to {digest[:19]}"
    if result.recreated:
        parts.append(f"recreated {len(result.recreated)}: {', '.join(sorted(result.recreated))}")
    if result.failed:
        failures = "; ".join(
            f"{name}: {result.failed[name].reason}" for name in sorted(result.failed)
        )
        parts.append(f"FAILED {len(result.failed)}: {failures}")
    if result.repaired:
        parts.append(f"repaired after a crash: {', '.join(sorted(result.repaired))}")
    if event.quarantined is not None:
        held = event.quarantined
        parts.append(
            f"QUARANTINED {held.digest[:19]}: {held.reason}; no other workspace was touched"
        )
    return {
        "text": " — ".join(parts),
        "runtime": event.runtime,
        "source": str(event.source),
        "digest": digest,
        "ok": not result.failed,
        "quarantined": event.quarantined is not None,
        "duration_seconds": round(event.seconds, 3),
        **result.as_json(),
    }


class Notifier:
    """Posts summaries to NOTIFY_URL in the background."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Event) -> None:
        """A coordinator listener: schedule the POST and return at once."""
        body = summary(event)
        if body is None:
            return
        if len(self._tasks) >= MAX_PENDING:
            log.warning("notification for %s dropped: too many in flight", event.runtime)
            return
        task = asyncio.ensure_future(self._post(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        runtime = body["runtime"]
        try:
            response = await self.http.post(self.url, json=body, timeout=NOTIFY_TIMEOUT)
        except httpx.HTTPError as exc:
            log.warning("notification for %s not sent: %s", runtime, type(exc).__name__)
            return
        if response.status_code >= 300:
            log.warning("notification for %s refused: HTTP %d", runtime, response.status_code)
        else:
            log.info("notification for %s sent", runtime)

    async def drain(self, timeout: float) -> None:
        """Let notifications in flight finish (shutdown), up to `timeout` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
