"""What a refresh did: pulls per runtime, swaps per container, every failure with its cause."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .outcomes import Failure
from .repair import Repair


@dataclass
class RefreshResult:
    """A refresh's outcome; `as_json()` is the contract's shape.

    `skipped` and `deferred` name containers left alone, with the reason: skipped ones
    opted out; deferred ones wait (a pre-update hook said "not now", they are paused,
    or the canary has not proven the image) and are tried again later. `quarantine`
    holds, per runtime, the canary failure that showed the image is bad; `held` names
    runtimes whose tag was a quarantined digest, so nothing was swapped.
    """

    pulled: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, Failure] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, Repair] = field(default_factory=dict)
    removed_images: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)
    quarantine: dict[str, Failure] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def fail(self, failure: Failure) -> None:
        """Record a failure under its subject (a runtime or a container)."""
        self.failed[failure.subject] = failure

    def merge(self, other: RefreshResult) -> None:
        """Add another result's entries to this one."""
        self.pulled += other.pulled
        self.recreated += other.recreated
        self.unchanged += other.unchanged
        self.failed.update(other.failed)
        self.digests.update(other.digests)
        self.repaired.update(other.repaired)
        self.removed_images += other.removed_images
        self.skipped.update(other.skipped)
        self.deferred.update(other.deferred)
        self.quarantine.update(other.quarantine)
        self.held.update(other.held)

    def as_json(self) -> dict[str, Any]:
        """The contract's JSON shape, lists sorted so answers are stable."""
        return {
            "pulled": sorted(self.pulled),
            "recreated": sorted(self.recreated),
            "unchanged": sorted(self.unchanged),
            "failed": {name: self.failed[name].reason for name in sorted(self.failed)},
            "digests": dict(sorted(self.digests.items())),
            "repaired": {name: str(self.repaired[name]) for name in sorted(self.repaired)},
            "removed_images": sorted(self.removed_images),
            "skipped": dict(sorted(self.skipped.items())),
            "deferred": dict(sorted(self.deferred.items())),
        }
