"""The probe routes: liveness, readiness (the engine answers), metrics, the OpenAPI document."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import openapi
from .engine import Engine
from .errors import EngineError
from .metrics import CONTENT_TYPE, Metrics


def routes(*, engine: Engine, metrics: Metrics) -> list[Route]:
    """`/healthz`, `/readyz`, `/metrics` and `/openapi.json`."""

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

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", show_metrics, methods=["GET"]),
        Route("/openapi.json", show_openapi, methods=["GET"]),
    ]
