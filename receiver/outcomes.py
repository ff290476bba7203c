"""What happened, as values: where a trigger came from, what became of it, what failed and why.

Every outcome the receiver reports (in answers, the status page, metrics, logs) is one of
these enums; their values are the words of the public contract, so a value serialises as
the word and nothing ever has to be parsed back out of a string.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from .errors import Cause, ReceiverError, SwapError


class SourceKind(enum.StrEnum):
    """Which of the triggers asked for a refresh."""

    WEBHOOK = "webhook"
    POLL = "poll"
    ADMIN = "admin"
    RETRY = "retry"  # the receiver itself, trying a digest again after a transient failure


@dataclass(frozen=True)
class Source:
    """Where a trigger came from: its kind and, for a webhook, the GitHub event."""

    kind: SourceKind
    event: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.event}" if self.event else str(self.kind)


ADMIN = Source(SourceKind.ADMIN)
POLL = Source(SourceKind.POLL)
RETRY = Source(SourceKind.RETRY)


@functools.lru_cache(maxsize=16)
def webhook(event: str) -> Source:
    """The source of a trigger that a delivery of `event` made (one value per event: the
    webhook route asks for it on every delivery)."""
    return Source(SourceKind.WEBHOOK, event)


class TriggerOutcome(enum.StrEnum):
    """What the coordinator did with one runtime's trigger (the webhook answer's words)."""

    SCHEDULED = "scheduled"  # a refresh starts now
    QUEUED = "queued"  # one is running; this becomes the follow-up
    COALESCED = "coalesced"  # the refresh running already applies this digest
    UNCHANGED = "unchanged"  # the digest is the one the book has seen
    RESOLVING = "resolving"  # the digest is being asked of the registry first
    QUARANTINED = "quarantined"  # its canary failed because of the image: held
    AVAILABLE = "available"  # notify mode: reported, not applied


class PollOutcome(enum.StrEnum):
    """What a poll tick did with a runtime, besides handing it to the coordinator."""

    SEEDED = "seeded"  # first observation of a runtime the host runs nothing of
    FETCH_FAILED = "fetch failed"  # the registry did not tell the digest
    HOST_UNKNOWN = "waiting for the engine"  # the host's images could not be read yet


class RepairAction(enum.StrEnum):
    """What crash repair did about one container a swap left aside."""

    KEPT_REPLACEMENT = "kept the replacement"
    RESTORED = "restored the old container"
    FAILED = "failed"


class DeliveryOutcome(enum.StrEnum):
    """What became of one webhook delivery (the metrics' `outcome` label)."""

    PING = "ping"
    ACCEPTED = "accepted"
    IGNORED = "ignored"
    MALFORMED = "malformed"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Failure:
    """One failure: of a runtime (its pull) or a container (its swap), with its cause.

    `restored` is set for swaps: whether the old container is back as it was.
    """

    subject: str
    reason: str
    cause: Cause = Cause.OTHER
    restored: bool | None = None

    @classmethod
    def of(cls, subject: str, exc: BaseException) -> Failure:
        """The failure an exception stands for; one that is not the receiver's is `other`."""
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, SwapError):
            return cls(subject, reason, exc.cause, exc.restored)
        if isinstance(exc, ReceiverError):
            return cls(subject, reason, exc.cause)
        return cls(subject, reason)
