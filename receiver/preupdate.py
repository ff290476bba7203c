"""The pre-update hook: ask a running workspace whether now is a good time for its swap.

The command (the container's `workspace-image-receiver.pre-update` label, else
PRE_UPDATE_COMMAND) runs as `sh -c <command>` inside the old container, bounded by
PRE_UPDATE_TIMEOUT: exit 0 lets the swap go on; exit 75 (EX_TEMPFAIL, "try again later")
defers it, the container untouched; any other exit, or running out of time, fails it.
Either way the runtime is tried again later. An agent in the middle of a task says 75.
"""

from __future__ import annotations

from .container import Container
from .engine import Engine
from .errors import ReceiverError

DEFER_STATUS = 75  # EX_TEMPFAIL from sysexits.h


class PreUpdateFailed(ReceiverError):
    """The hook failed (an exit other than 0 and 75) or did not answer in time."""


def ask(engine: Engine, container: Container, command: str, timeout: float) -> str | None:
    """None when the swap may go on, else why it waits; PreUpdateFailed when the hook fails."""
    status = engine.exec(container.id, ["sh", "-c", command], timeout)
    if status is None:
        raise PreUpdateFailed(f"pre-update hook still running after {timeout:g}s")
    if status == DEFER_STATUS:
        return f"pre-update hook: not now (exit {DEFER_STATUS})"
    if status != 0:
        raise PreUpdateFailed(f"pre-update hook exited {status}")
    return None
