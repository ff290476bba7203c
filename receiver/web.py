"""HTTP helpers every route module shares: JSON answers and capped body reads.

The Starlette forms serve the admin and probe routes; the bare ASGI forms serve the webhook
route, which a flood of deliveries runs thousands of times a second.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive

_JSON_HEADERS = ((b"content-type", b"application/json"),)
CLIENT_CLOSED = 499
_encode = msgspec.json.Encoder().encode


class ClientGone(Exception):
    """The client disconnected before its request body was in."""


def error(status: int, message: str, **headers: str) -> JSONResponse:
    """A JSON error answer."""
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def gone() -> JSONResponse:
    """The answer for a client that left before its request body was in: it reaches no one,
    and is 499 (nginx's "client closed request") rather than the 500 of an unhandled error."""
    return error(CLIENT_CLOSED, "the client closed the request")


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past `limit` bytes."""
    return await receive_capped(request.receive, limit, request.headers.get("content-length"))


async def receive_capped(receive: Receive, limit: int, declared: str | None) -> bytes | None:
    """A bare ASGI request's body, or None as soon as it grows past `limit` bytes (or its
    Content-Length says it will). Raises ClientGone when the client disconnects."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
        # The whole body in one message: the usual case, and no copy.
        return body if len(body) <= limit else None
    collected = bytearray()
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone
        collected += message.get("body", b"")
        if len(collected) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(collected)
        message = await receive()


def json_body(document: object) -> bytes:
    """`document` as compact UTF-8 JSON."""
    return _encode(document)


def json_start(status: int, body: bytes) -> Message:
    """The `http.response.start` message of a bare ASGI answer carrying `body` (JSON)."""
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode("ascii"))],
    }


def body_message(body: bytes) -> Message:
    """The `http.response.body` message that ends an answer."""
    return {"type": "http.response.body", "body": body}
