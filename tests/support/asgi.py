"""A small synchronous client that sends requests straight into an ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from starlette.types import ASGIApp

T = TypeVar("T")


class AppClient:
    """Runs requests through httpx's ASGI transport on one event loop that lives between them,
    so background work an answer started (a scheduled refresh) keeps running."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._runner = asyncio.Runner()
        self._lifespan = contextlib.AsyncExitStack()

    def start(self) -> None:
        """Run the app's lifespan startup (httpx's ASGI transport does not)."""
        app: Any = self.app
        self.run(self._lifespan.enter_async_context(app.router.lifespan_context(app)))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop (e.g. to wait for background work)."""
        return self._runner.run(coroutine)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
                return await client.request(method, path, **kwargs)

        return self.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        """Run the lifespan shutdown if it was started, then close the event loop."""
        self.run(self._lifespan.aclose())
        self._runner.close()
