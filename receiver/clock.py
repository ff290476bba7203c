"""Time as the receiver reads it: wall time for records, monotonic time for durations.

One protocol, so a test can hand every part the same fake clock and move time itself.
`wall()` is Unix time (what a status page shows); `monotonic()` is for deadlines and
durations; `sleep` blocks a worker thread; `pause` waits on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """The clock every time-dependent part takes."""

    def wall(self) -> float:
        """Seconds since the Unix epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations and deadlines)."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for `seconds`."""

    async def pause(self, seconds: float) -> None:
        """Wait `seconds` on the event loop."""


class SystemClock:
    """The real clock."""

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    def monotonic(self) -> float:
        """The process's monotonic clock."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """time.sleep."""
        time.sleep(seconds)

    async def pause(self, seconds: float) -> None:
        """asyncio.sleep."""
        await asyncio.sleep(seconds)


SYSTEM = SystemClock()
