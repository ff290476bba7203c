"""The ASGI application: composes the route modules around one refresh service."""

from __future__ import annotations

from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import admin
from .admin_auth import AdminTokens
from .engine import Engine
from .errors import EngineError
from .refresh import RefreshService


def create_app(engine: Engine, service: RefreshService, tokens: AdminTokens | None) -> Starlette:
    """Build the application; everything it talks to is passed in."""

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            await to_thread.run_sync(engine.ping)
        except EngineError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *admin.routes(service, tokens),
        ]
    )
