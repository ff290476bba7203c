"""Run the ASGI app under uvicorn; SIGTERM or SIGINT shut it down cleanly with exit status 0."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

# In-flight requests (an admin refresh waits for its swaps) get this long after SIGTERM.
GRACEFUL_SHUTDOWN_SECONDS = 60


OPTIONS: dict[str, Any] = {
    # The production server stack, named rather than left to "auto": the C HTTP parser and
    # the libuv event loop (the webhook route's ingest rate is twice asyncio's and h11's).
    "http": "httptools",
    "loop": "uvloop",
    "ws": "none",  # no websocket routes: nothing to import for them
    "log_config": None,  # logs.py has set up logging already
    "server_header": False,
    # The webhook route logs what each delivery did; a second line per request from
    # uvicorn's access log would double the logging cost of a flood of deliveries.
    "access_log": False,
    "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
}


class _Server(uvicorn.Server):
    """uvicorn's server without re-raising the captured signal after shutdown.

    uvicorn re-raises it so the process dies by the signal; a service manager then sees
    a crash (status 143) instead of the clean stop this was.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Serve `app` until a signal asks it to stop."""
    _Server(uvicorn.Config(app, host=host, port=port, **OPTIONS)).run()
