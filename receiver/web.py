"""HTTP helpers every route module shares: JSON error answers and capped body reads."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


def error(status: int, message: str, **headers: str) -> JSONResponse:
    """A JSON error answer."""
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
