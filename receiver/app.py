"""The ASGI application: composes the route modules around the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import admin, openapi, status, webhooks
from .admin_auth import AdminTokens
from .config import Config
from .digests import Coordinator, DigestBook, Listener
from .engine import Engine
from .errors import EngineError
from .metrics import CONTENT_TYPE, Metrics
from .notify import Notifier
from .poller import Poller, registry_fetch
from .refresh import RefreshService
from .registry import RegistryClient

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Background refreshes get this long to finish at shutdown before they are cancelled.
DRAIN_SECONDS = 60
NOTIFY_DRAIN_SECONDS = 10


@dataclass
class Parts:
    """What the routes and the lifespan talk to, built by build_app (or by a test)."""

    coordinator: Coordinator
    registry: RegistryClient
    tokens: AdminTokens | None
    metrics: Metrics
    notifier: Notifier | None = None
    on_shutdown: Callable[[], Awaitable[None]] | None = None


def create_app(settings: Config, engine: Engine, parts: Parts) -> Starlette:
    """Build the application; everything it talks to is passed in."""
    coordinator, registry, metrics = parts.coordinator, parts.registry, parts.metrics

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            await to_thread.run_sync(engine.ping)
        except EngineError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def show_metrics(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def show_openapi(_: Request) -> JSONResponse:
        return JSONResponse(openapi.document())

    async def http_error(_: Request, exc: Exception) -> Response:
        # Starlette's own 404/405 answers in the same JSON shape as ours (the OpenAPI says so).
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

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
        # Stop observing first, then let refreshes in flight finish (bounded), then tell.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await coordinator.drain(DRAIN_SECONDS)
        if parts.notifier is not None:
            await parts.notifier.drain(NOTIFY_DRAIN_SECONDS)
        if parts.on_shutdown is not None:
            await parts.on_shutdown()

    images = {runtime: settings.image_for(runtime) for runtime in settings.runtimes}
    poller = (
        Poller(
            coordinator,
            registry_fetch(registry, images),
            settings.poll_interval,
            on_tick=lambda tick: metrics.tick(tick.finished - tick.started, tick.finished),
        )
        if settings.auto_refresh
        else None
    )
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", show_metrics, methods=["GET"]),
            Route("/openapi.json", show_openapi, methods=["GET"]),
            *admin.routes(
                coordinator,
                parts.tokens,
                lambda: status.snapshot(coordinator.book, images, poller),
            ),
            *webhooks.routes(
                coordinator,
                registry,
                images,
                settings.webhook_secrets,
                settings.dispatch_event_types,
                settings.webhook_max_body,
                metrics,
            ),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    # Exposed for status pages and for tests that wait for background refreshes.
    app.state.coordinator = coordinator
    app.state.poller = poller
    app.state.metrics = metrics
    return app


def build_app(
    settings: Config,
    engine: Engine,
    service: RefreshService | None = None,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    """Compose the service: refresh service, digest book, coordinator, registry client, tokens,
    metrics and notifications."""
    service = service or RefreshService(settings, engine)
    metrics = Metrics()
    # TLS is always verified; a registry on loopback is reached over plain HTTP (registry.py).
    http = http or httpx.AsyncClient(timeout=REGISTRY_TIMEOUT)
    notifier = Notifier(http, settings.notify_url) if settings.notify_url else None
    listeners: list[Listener] = [
        lambda e: metrics.refresh(e.runtime, e.source, e.result, e.seconds, e.since_trigger)
    ]
    if notifier is not None:
        listeners.append(notifier)
    parts = Parts(
        coordinator=Coordinator(service, DigestBook(settings.runtimes), listeners=listeners),
        registry=RegistryClient(http, settings.registry_auth),
        tokens=AdminTokens(settings.admin_keys) if settings.admin_keys else None,
        metrics=metrics,
        notifier=notifier,
        on_shutdown=http.aclose,
    )
    return create_app(settings, engine, parts)
