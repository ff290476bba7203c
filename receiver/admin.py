"""Admin routes: an operator or CI asks for a refresh and gets the per-runtime result."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .admin_auth import AdminTokens, bearer_token
from .coordinator import Coordinator
from .errors import AdminTokenError, EngineUnavailable, UnknownRuntime
from .outcomes import ADMIN
from .web import ClientGone, error, gone, read_capped

MAX_BODY = 64 * 1024
_FIELDS = {"runtimes", "recreate", "force"}


@dataclass(frozen=True)
class RefreshRequest:
    """A validated admin refresh request."""

    runtimes: list[str] | None = None
    recreate: bool = True
    force: bool = False


def parse_refresh_request(body: bytes) -> RefreshRequest:
    """Parse the optional JSON body; raise ValueError with a message for the caller."""
    if not body.strip():
        return RefreshRequest()
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    runtimes = data.get("runtimes")
    # An explicit null is refused, not read as "all": leave the field out to mean all.
    if "runtimes" in data and (
        not isinstance(runtimes, list) or not all(isinstance(item, str) for item in runtimes)
    ):
        raise ValueError("runtimes must be a list of runtime names")
    for key in ("recreate", "force"):
        if key in data and not isinstance(data[key], bool):
            raise ValueError(f"{key} must be true or false")
    return RefreshRequest(
        runtimes=runtimes,
        recreate=data.get("recreate", True),
        force=data.get("force", False),
    )


def authorize(request: Request, tokens: AdminTokens | None) -> JSONResponse | None:
    """None when the request carries a valid admin token, else the answer to send."""
    if tokens is None:
        return error(503, "admin routes are disabled: ADMIN_SECRET_KEY is not set")
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return error(401, "admin token required", **{"WWW-Authenticate": "Bearer"})
    try:
        tokens.verify(token)
    except AdminTokenError as exc:
        return error(401, str(exc), **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return None


def routes(
    *,
    coordinator: Coordinator,
    tokens: AdminTokens | None,
    status: Callable[[], dict[str, Any]],
) -> list[Route]:
    """The admin routes, bound to the coordinator, the token verifier and the status source."""

    async def refresh(request: Request) -> JSONResponse:
        denied = authorize(request, tokens)
        if denied is not None:
            return denied
        try:
            body = await read_capped(request, MAX_BODY)
        except ClientGone:
            return gone()  # nothing done, and no one to tell
        if body is None:
            return error(413, f"body larger than {MAX_BODY} bytes")
        try:
            wanted = parse_refresh_request(body)
        except ValueError as exc:
            return error(400, str(exc))
        try:
            result = await coordinator.refresh(
                wanted.runtimes, recreate=wanted.recreate, force=wanted.force, source=ADMIN
            )
        except UnknownRuntime as exc:
            return error(400, str(exc))
        except EngineUnavailable as exc:
            return error(500, str(exc))
        return JSONResponse(result.as_json())

    async def show_status(request: Request) -> JSONResponse:
        denied = authorize(request, tokens)
        return denied if denied is not None else JSONResponse(status())

    return [
        Route("/admin/workspace-images/refresh", refresh, methods=["POST"]),
        Route("/admin/status", show_status, methods=["GET"]),
    ]
