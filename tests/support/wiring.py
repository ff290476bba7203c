"""The receiver wired up over a fake engine for unit tests: settings, service, app client."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from receiver import config
from receiver.app import build_app
from receiver.clock import Clock
from receiver.refresh import RefreshService
from receiver.swap import Swapper
from tests.support.asgi import AppClient
from tests.support.fakes import FakeClock, FakeEngine

TEMPLATE = "ghcr.io/org/workspace-template-{runtime}:latest"

Handler = Callable[[httpx.Request], httpx.Response]


def settings(runtimes: str = "a", **env: str) -> config.Config:
    """Settings as `config.load` makes them, for `runtimes` on the test template."""
    return config.load({"RUNTIMES": runtimes, "IMAGE_TEMPLATE": TEMPLATE, **env})


def service(
    engine: FakeEngine, settings: config.Config, clock: Clock | None = None
) -> RefreshService:
    """A refresh service whose swaps wait on `clock` (a fresh fake one by default)."""
    return RefreshService(settings, engine, Swapper(engine, settings.swap, clock or FakeClock()))


def registry_answering(digest: str) -> Handler:
    """An open registry (no auth) whose every tag points at `digest`."""

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Docker-Content-Digest": digest})

    return answer


def app_client(
    engine: FakeEngine,
    settings: config.Config,
    *,
    registry: Handler | None = None,
    refresh: RefreshService | None = None,
) -> AppClient:
    """The whole app over `engine`, its registry calls answered by `registry`."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(registry)) if registry else None
    return AppClient(build_app(settings, engine, refresh or service(engine, settings), http))
