"""The receiver's exception tree: one base, structured attributes, no text to parse."""

from __future__ import annotations

import enum


class Cause(enum.StrEnum):
    """Why something failed, as the rollout policy needs to know it.

    `transient`: nothing is wrong with the image (engine or registry away, rate limited, a
    pull cut short); trying again later can succeed. `image`: the new image itself is at
    fault (its container exits, turns unhealthy, never gets ready). `other`: neither is
    known (an engine refusal, a bad setting).
    """

    TRANSIENT = "transient"
    IMAGE = "image"
    OTHER = "other"


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose; `cause` says what kind it is."""

    cause = Cause.OTHER

    def __init__(
        self, message: str, *, runtime: str | None = None, cause: Cause | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.runtime = runtime
        if cause is not None:
            self.cause = cause

    def __str__(self) -> str:
        return self.message


class ConfigError(ReceiverError):
    """One or more settings are invalid; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


class ImageRefError(ReceiverError):
    """A string is not a valid image reference."""


class EngineError(ReceiverError):
    """The Docker engine refused or failed an operation; `status` is its HTTP status if any."""

    def __init__(
        self, message: str, *, status: int | None = None, cause: Cause | None = None
    ) -> None:
        super().__init__(message, cause=cause)
        self.status = status


class EngineUnavailable(EngineError):
    """The Docker engine cannot be reached at all (listing or ping failed)."""

    cause = Cause.TRANSIENT


class PullError(EngineError):
    """Pulling an image failed, including errors reported inside the pull stream."""

    cause = Cause.TRANSIENT


class SwapError(ReceiverError):
    """Recreating one container failed; `restored` says whether the old one is back."""

    def __init__(self, message: str, *, container: str, restored: bool, cause: Cause) -> None:
        super().__init__(message, cause=cause)
        self.container = container
        self.restored = restored


class NotReady(ReceiverError):
    """A new container did not get ready (it exited, turned unhealthy or timed out)."""

    cause = Cause.IMAGE


class UnknownRuntime(ReceiverError):
    """A caller named a runtime that is not configured."""


class AdminTokenError(ReceiverError):
    """An admin token is missing, malformed, forged, expired or signed by no known key."""
