"""Notifications: a summary with `text` after a refresh that changed or broke something;
failures to notify are logged, never raised, and the URL never appears in the logs."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from receiver.coordinator import RefreshEvent
from receiver.notify import Notifier, summary
from receiver.outcomes import Failure, webhook
from receiver.result import RefreshResult

pytestmark = pytest.mark.anyio

URL = "https://hooks.example.test/services/T000/B000/very-secret-token"
DIGEST = "sha256:" + "ab" * 32


def event(result: RefreshResult) -> RefreshEvent:
    return RefreshEvent("a", webhook("package"), DIGEST, result, 2.5, 3.0)


def test_a_summary_carries_text_and_the_result() -> None:
    """Slack-compatible `text`, plus runtime, source, digest and the result's fields."""
    result = RefreshResult(
        pulled=["a"],
        recreated=["ws-2", "ws-1"],
        failed={"ws-3": Failure("ws-3", "new container is unhealthy")},
        digests={"a": DIGEST},
    )
    body = summary(event(result))
    assert body is not None
    assert body["text"] == (
        "workspace image refresh of a (from webhook:package) to sha256:abababababab"
        " — recreated 2: ws-1, ws-2 — FAILED 1: ws-3: new container is unhealthy"
    )
    assert body["runtime"] == "a"
    assert body["ok"] is False
    assert body["recreated"] == ["ws-1", "ws-2"]
    assert body["digest"] == DIGEST


def test_nothing_changed_nothing_sent() -> None:
    """A refresh that found every container current is not news."""
    assert summary(event(RefreshResult(pulled=["a"], unchanged=["ws-1"]))) is None


async def test_the_notifier_posts_in_the_background() -> None:
    """The listener returns at once; the POST follows with the JSON summary."""
    sent: list[dict[str, object]] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, text="ok")

    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http:
        notifier = Notifier(http, URL)
        notifier(event(RefreshResult(pulled=["a"], recreated=["ws-1"])))
        assert sent == []
        await notifier.drain(5)
    assert [body["recreated"] for body in sent] == [["ws-1"]]


@pytest.mark.parametrize("failure", ["refused", "unreachable", "slow"])
async def test_failures_to_notify_are_logged_and_never_raised(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500, a dead endpoint or a timeout: one warning, no exception, no URL in the log."""

    async def endpoint(request: httpx.Request) -> httpx.Response:
        if failure == "unreachable":
            raise httpx.ConnectError("connection refused", request=request)
        if failure == "slow":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(500)

    caplog.set_level(logging.INFO)
    caplog.set_level(logging.WARNING, logger="httpx")  # as logs.setup() leaves it
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http:
        notifier = Notifier(http, URL)
        notifier(event(RefreshResult(failed={"a": Failure("a", "pull failed")})))
        await notifier.drain(5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "notification for a" in warnings[0].getMessage()
    assert "very-secret-token" not in caplog.text


async def test_a_flood_of_notifications_is_bounded() -> None:
    """Beyond MAX_PENDING in flight, notifications are dropped rather than piling up."""
    release = asyncio.Event()
    started = 0

    async def endpoint(_: httpx.Request) -> httpx.Response:
        nonlocal started
        started += 1
        await release.wait()
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http:
        notifier = Notifier(http, URL)
        for _ in range(150):
            notifier(event(RefreshResult(recreated=["ws-1"])))
        await asyncio.sleep(0.01)
        release.set()
        await notifier.drain(5)
    assert started == 100


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
