"""The ingest ceiling: a bare ASGI app that reads the body and checks the HMAC, nothing else.

Run as ``python -m bench.ceiling --port P`` with ``BENCH_SECRET`` set; it is served by
``receiver.server.serve``, the receiver's own uvicorn settings (one worker, same parser).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from receiver.server import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def make_app(secret: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app: 202 for a body signed with `secret`, 401 otherwise."""
    key = secret.encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-hub-signature-256":
                given = value
        expected = b"sha256=" + hmac.new(key, bytes(body), hashlib.sha256).hexdigest().encode()
        ok = hmac.compare_digest(expected, given)
        answer = b'{"ok":true}' if ok else b'{"error":"bad signature"}'
        await send(
            {
                "type": "http.response.start",
                "status": 202 if ok else 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(make_app(os.environ["BENCH_SECRET"]), "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
