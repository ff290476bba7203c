"""The ASGI application: composes the route modules around the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import admin, status, webhooks
from .admin_auth import AdminTokens
from .config import Config
from .digests import Coordinator, DigestBook
from .engine import Engine
from .errors import EngineError
from .poller import Poller, registry_fetch
from .refresh import RefreshService
from .registry import RegistryClient

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Background refreshes get this long to finish at shutdown before they are cancelled.
DRAIN_SECONDS = 60


def create_app(
    settings: Config,
    engine: Engine,
    coordinator: Coordinator,
    registry: RegistryClient,
    tokens: AdminTokens | None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """Build the application; everything it talks to is passed in."""

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            await to_thread.run_sync(engine.ping)
        except EngineError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def background() -> None:
        # Boot: repair cut-short swaps and seed the book from the host, before the first tick.
        try:
            await coordinator.boot()
        except EngineError as exc:
            log.warning("boot: cannot read the host's images yet (%s); the poller retries", exc)
        if poller is not None:
            await poller.run()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(background(), name="receiver-background")
        yield
        # Stop observing first, then let refreshes in flight finish (bounded).
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await coordinator.drain(DRAIN_SECONDS)
        if on_shutdown is not None:
            await on_shutdown()

    images = {runtime: settings.image_for(runtime) for runtime in settings.runtimes}
    poller = (
        Poller(coordinator, registry_fetch(registry, images), settings.poll_interval)
        if settings.auto_refresh
        else None
    )
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *admin.routes(
                coordinator, tokens, lambda: status.snapshot(coordinator.book, images, poller)
            ),
            *webhooks.routes(
                coordinator,
                registry,
                images,
                settings.webhook_secrets,
                settings.dispatch_event_types,
                settings.webhook_max_body,
            ),
        ],
        lifespan=lifespan,
    )
    # Exposed for status pages and for tests that wait for background refreshes.
    app.state.coordinator = coordinator
    app.state.poller = poller
    return app


def build_app(
    settings: Config,
    engine: Engine,
    service: RefreshService | None = None,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    """Compose the service: refresh service, digest book, coordinator, registry client, tokens."""
    service = service or RefreshService(settings, engine)
    coordinator = Coordinator(service, DigestBook(settings.runtimes))
    # TLS is always verified; a registry on loopback is reached over plain HTTP (registry.py).
    http = http or httpx.AsyncClient(timeout=REGISTRY_TIMEOUT)
    registry = RegistryClient(http, settings.registry_auth)
    tokens = AdminTokens(settings.admin_keys) if settings.admin_keys else None
    return create_app(settings, engine, coordinator, registry, tokens, on_shutdown=http.aclose)
