"""Capped body reads over bare ASGI, and the webhook and admin routes when a client goes away."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from receiver.admin_auth import AdminTokens
from receiver.web import CLIENT_CLOSED, ClientGone, receive_capped
from tests.support import deliveries, wiring
from tests.support.fakes import engine_with_stale_workspace


def receiver_of(*messages: dict[str, Any]) -> Any:
    """An ASGI `receive` handing out `messages` in turn."""
    queue: Iterator[dict[str, Any]] = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(queue)

    return receive


def chunk(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def read(limit: int, declared: str | None, *messages: dict[str, Any]) -> bytes | None:
    return asyncio.run(receive_capped(receiver_of(*messages), limit, declared))


def test_a_body_in_one_message_or_in_chunks() -> None:
    assert read(10, "5", chunk(b"hello", False)) == b"hello"
    assert read(10, None, chunk(b"he", True), chunk(b"", True), chunk(b"llo", False)) == b"hello"


def test_too_large_by_its_declared_length_or_as_it_arrives() -> None:
    """A Content-Length over the cap is refused before anything is read; a body that grows
    past it is refused as soon as it does."""
    assert read(4, "5", chunk(b"never read", False)) is None
    assert read(4, None, chunk(b"hel", True), chunk(b"lo", True)) is None
    assert read(4, None, chunk(b"hello", False)) is None


def test_a_client_that_leaves_mid_body() -> None:
    with pytest.raises(ClientGone):
        read(10, None, chunk(b"he", True), {"type": "http.disconnect"})


def post_and_leave(app: Any, path: str, headers: dict[str, str], part: bytes) -> list[Any]:
    """POST to `app` a body of which only `part` arrives before the client disconnects;
    the messages the app sent back."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receiver_of(chunk(part, True), {"type": "http.disconnect"}), send))
    return sent


def test_the_webhook_route_answers_nobody_who_left_and_does_nothing() -> None:
    """A delivery whose client disconnects before its body is in: no answer, no count, no
    engine call."""
    engine = engine_with_stale_workspace()
    settings = wiring.settings(GITHUB_WEBHOOK_SECRET="s3cret")
    app: Any = wiring.app_client(engine, settings).app
    body = deliveries.package_body("workspace-template-a", "sha256:" + "2" * 64)
    headers = deliveries.headers(body, "s3cret")
    assert post_and_leave(app, "/webhooks/github", headers, body[:100]) == []
    assert engine.ops() == []
    assert b"receiver_webhook_deliveries_total{" not in app.state.metrics.render()


def test_the_admin_route_does_nothing_for_a_client_that_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An admin refresh whose client disconnects mid-body starts nothing and is no server
    error (no traceback in the log): its answer, 499, reaches no one."""
    engine = engine_with_stale_workspace()
    settings = dataclasses.replace(wiring.settings(), admin_keys=("key",))
    app: Any = wiring.app_client(engine, settings).app
    headers = {"authorization": f"Bearer {AdminTokens(['key']).mint()}"}
    sent = post_and_leave(app, "/admin/workspace-images/refresh", headers, b'{"runtimes": ')
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [CLIENT_CLOSED]
    assert engine.ops() == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
