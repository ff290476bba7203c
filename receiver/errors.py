"""The receiver's exception tree: one base, structured attributes, no text to parse."""

from __future__ import annotations


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose."""

    def __init__(self, message: str, *, runtime: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.runtime = runtime

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
    """The Docker engine refused or failed an operation."""


class EngineUnavailable(EngineError):
    """The Docker engine cannot be reached at all (listing or ping failed)."""


class PullError(EngineError):
    """Pulling an image failed, including errors reported inside the pull stream."""


class SwapError(ReceiverError):
    """Recreating one container failed; the old container was restored."""

    def __init__(self, message: str, *, container: str, restored: bool) -> None:
        super().__init__(message)
        self.container = container
        self.restored = restored


class UnknownRuntime(ReceiverError):
    """A caller named a runtime that is not configured."""


class AdminTokenError(ReceiverError):
    """An admin token is missing, malformed, forged, expired or signed by no known key."""
