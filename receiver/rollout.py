"""The rollout policy: canaries first, and what a refresh's outcome means for its digest.

A failure has one of two meanings (README, "Rollout policy"):
- the image is at fault (its container exits, turns unhealthy, is refused as invalid):
  trying again restarts every workspace for nothing, so the digest is held (quarantined);
- anything else (engine or registry away, a pull cut short, a cause not known): nothing
  says the image is bad, so the same digest is tried again later, with a backoff.

A workspace that asked to wait (its pre-update hook said "not now", it is paused) is
tried again the same way, without counting as a failure.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from .container import Container
from .errors import Cause
from .outcomes import Failure


class Verdict(enum.StrEnum):
    """What the book does with a refresh's digest once the refresh is over."""

    DONE = "done"  # every workspace runs it: commit it as seen
    HOLD = "hold"  # a canary failed because of the image: quarantine it
    RETRY = "retry"  # something failed for another cause, or waits: try it again later


def verdict(*, image_fault: bool, failed: bool, waiting: bool) -> Verdict:
    """The verdict on a refresh that found an image fault on a canary (or not), failed
    somewhere else (or not), or left workspaces waiting (or not)."""
    if image_fault:
        return Verdict.HOLD
    return Verdict.RETRY if failed or waiting else Verdict.DONE


def is_image_fault(failure: Failure) -> bool:
    """Whether a failure says the image itself is bad (unknown causes do not)."""
    return failure.cause is Cause.IMAGE


def canary_candidates(stale: Sequence[Container]) -> list[Container]:
    """The containers that can prove an image, in the order they are tried: running ones
    (a stopped container is recreated stopped and proves nothing), by name."""
    return sorted((c for c in stale if c.running and not c.paused), key=lambda c: c.name)


def backoff(
    attempt: int, minimum: float, maximum: float, draw: Callable[[float, float], float]
) -> float:
    """Seconds before try number `attempt` (1 for the first retry): doubling from
    `minimum` up to `maximum`, with "equal jitter" (half fixed, half drawn) so that many
    receivers retrying after one outage do not all come back at the same moment."""
    doublings = min(max(attempt - 1, 0), 64)  # past that the maximum holds anyway
    ceiling = min(maximum, minimum * 2.0**doublings)
    return ceiling / 2 + draw(0.0, ceiling / 2)
