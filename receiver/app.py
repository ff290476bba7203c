"""The ASGI application: composes the route modules around the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from . import admin, probes, registry, status, webhooks
from .admin_auth import AdminTokens
from .book import DigestBook
from .config import Config
from .coordinator import Coordinator, Listener, Refresher
from .engine import Engine
from .errors import EngineError
from .metrics import Metrics
from .notify import Notifier
from .poller import Poller, Tick, registry_fetch
from .refresh import RefreshService
from .registry import RegistryClient

log = logging.getLogger(__name__)

# Background refreshes get this long to finish at shutdown before they are cancelled.
DRAIN_SECONDS = 60
NOTIFY_DRAIN_SECONDS = 10

# What Starlette calls at startup for the context that lasts until shutdown.
Lifespan = Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]


@dataclass
class Parts:
    """What the routes and the lifespan talk to, built by build_app (or by a test)."""

    coordinator: Coordinator
    registry: RegistryClient
    tokens: AdminTokens | None
    metrics: Metrics
    notifier: Notifier | None = None
    on_shutdown: Callable[[], Awaitable[None]] | None = None


async def _http_error(_: Request, exc: Exception) -> Response:
    # Starlette's own 404/405 answers in the same JSON shape as ours (the OpenAPI says so).
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _poller(settings: Config, parts: Parts) -> Poller | None:
    """The registry poller when IMAGE_AUTO_REFRESH is on."""
    if not settings.auto_refresh:
        return None
    images = {runtime: settings.image_for(runtime) for runtime in settings.runtimes}

    def on_tick(tick: Tick) -> None:
        parts.metrics.tick(tick.finished - tick.started, tick.finished)

    return Poller(
        parts.coordinator,
        registry_fetch(parts.registry, images),
        settings.poll_interval,
        clock=parts.coordinator.clock,
        on_tick=on_tick,
    )


def _lifespan(parts: Parts, poller: Poller | None) -> Lifespan:
    """Start: boot (repair, seed) then the poller. Stop: the poller, then drain, then tell."""
    coordinator = parts.coordinator

    async def background() -> None:
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
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await coordinator.drain(DRAIN_SECONDS)
        if parts.notifier is not None:
            await parts.notifier.drain(NOTIFY_DRAIN_SECONDS)
        if parts.on_shutdown is not None:
            await parts.on_shutdown()

    return lifespan


class ReceiverApp(Starlette):
    """The Starlette application, with one fast lane: a `POST /webhooks/github` goes straight
    to its endpoint, past Starlette's error and exception middleware and its router.

    A flood of deliveries is the load the receiver must take, and those layers cost as much
    per delivery as decoding it (docs/benchmarks.md). The endpoint answers every outcome
    itself and raises nothing on purpose; should it fail, uvicorn logs the error and
    answers 500, as the middleware would. The route stays in the table, where other methods
    get the JSON 405. Middleware added to this app does not see the lane: the endpoint must
    do itself whatever such middleware would.
    """

    def __init__(
        self,
        *,
        webhook: webhooks.WebhookEndpoint,
        routes: Sequence[BaseRoute],
        lifespan: Lifespan,
    ) -> None:
        super().__init__(
            routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
        )
        self.webhook = webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == webhooks.PATH and scope["method"] == "POST":
            await self.webhook(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Config, engine: Engine, parts: Parts) -> ReceiverApp:
    """Build the application; everything it talks to is passed in."""
    coordinator = parts.coordinator
    images = {runtime: settings.image_for(runtime) for runtime in settings.runtimes}
    poller = _poller(settings, parts)
    hook = webhooks.WebhookEndpoint(
        coordinator=coordinator,
        registry=parts.registry,
        images=images,
        secrets=settings.webhook_secrets,
        dispatch_types=settings.dispatch_event_types,
        max_body=settings.webhook_max_body,
        metrics=parts.metrics,
    )
    app = ReceiverApp(
        webhook=hook,
        routes=[
            hook.route(),
            *probes.routes(engine=engine, metrics=parts.metrics),
            *admin.routes(
                coordinator=coordinator,
                tokens=parts.tokens,
                status=lambda: status.snapshot(coordinator.book, images, poller),
            ),
        ],
        lifespan=_lifespan(parts, poller),
    )
    # Exposed for tests and benchmarks that wait for background work.
    app.state.coordinator = coordinator
    app.state.poller = poller
    app.state.metrics = parts.metrics
    return app


def build_app(
    settings: Config,
    engine: Engine,
    service: Refresher | None = None,
    http: httpx.AsyncClient | None = None,
) -> ReceiverApp:
    """Compose the service: refresh service, digest book, coordinator, registry client, tokens,
    metrics and notifications."""
    service = service or RefreshService(settings, engine)
    metrics = Metrics()
    # TLS is always verified; a registry on loopback is reached over plain HTTP (registry.py).
    http = http or registry.http_client()
    notifier = Notifier(http, settings.notify_url) if settings.notify_url else None
    listeners: list[Listener] = [metrics.refreshed]
    if notifier is not None:
        listeners.append(notifier)
    parts = Parts(
        coordinator=Coordinator(service, DigestBook(settings.runtimes), listeners=listeners),
        registry=RegistryClient(
            http, settings.registry_auth, insecure=settings.insecure_registries
        ),
        tokens=AdminTokens(settings.admin_keys) if settings.admin_keys else None,
        metrics=metrics,
        notifier=notifier,
        on_shutdown=http.aclose,
    )
    return create_app(settings, engine, parts)
