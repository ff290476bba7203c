"""GET /metrics: deliveries, refreshes, recreated containers, poll ticks, trigger-to-running."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.coordinator import RefreshEvent
from receiver.metrics import Metrics, event_label
from receiver.outcomes import POLL, Failure
from receiver.result import RefreshResult
from tests.support import deliveries, wiring
from tests.support.asgi import AppClient
from tests.support.fakes import STALE_DIGEST, engine_with_stale_workspace

SECRET = "s3cret"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def client(auto_refresh: str = "false") -> AppClient:
    engine = engine_with_stale_workspace()
    settings = wiring.settings(GITHUB_WEBHOOK_SECRET=SECRET, IMAGE_AUTO_REFRESH=auto_refresh)
    return wiring.app_client(engine, settings, registry=wiring.registry_answering(STALE_DIGEST))


def package_body() -> bytes:
    return deliveries.package_body("workspace-template-a", STALE_DIGEST)


def deliver(
    app: AppClient, body: bytes, event: str, secret: str = SECRET, delivery: str = "d-1"
) -> int:
    headers = deliveries.headers(body, secret, event=event, delivery=delivery)
    return app.post("/webhooks/github", content=body, headers=headers).status_code


def settled_samples(app: AppClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics page's samples once the refreshes the deliveries started are done; the
    app is closed."""
    runner: Any = app.app
    app.run(runner.state.coordinator.idle())
    found = samples(app.get("/metrics").text)
    app.close()
    return found


def test_deliveries_refreshes_and_trigger_to_running_are_counted() -> None:
    """A signed package delivery, a forged one, a ping and a made-up event: each counted
    under its event and outcome; the refresh it caused, its containers and its latency too."""
    app = client()
    assert deliver(app, package_body(), "package") == 202
    assert deliver(app, package_body(), "package", secret="forged") == 401
    ping = deliveries.PING_FIXTURE.read_bytes()
    assert deliver(app, ping, "ping") == 200
    assert deliver(app, b"{}", "made-up-event-name") == 202
    runner: Any = app.app
    app.run(runner.state.coordinator.idle())
    response = app.get("/metrics")
    app.close()
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    delivered = "receiver_webhook_deliveries_total"
    assert found[(delivered, (("event", "package"), ("outcome", "accepted")))] == 1
    assert found[(delivered, (("event", "package"), ("outcome", "unauthorized")))] == 1
    assert found[(delivered, (("event", "ping"), ("outcome", "ping")))] == 1
    assert found[(delivered, (("event", "other"), ("outcome", "ignored")))] == 1
    refreshed = (("outcome", "recreated"), ("runtime", "a"), ("source", "webhook:package"))
    assert found[("receiver_refreshes_total", refreshed)] == 1
    assert found[("receiver_containers_recreated_total", (("runtime", "a"),))] == 1
    assert found[("receiver_refresh_duration_seconds_count", (("runtime", "a"),))] == 1
    assert found[("receiver_trigger_to_running_seconds_count", (("runtime", "a"),))] == 1


def test_poll_ticks_are_counted_and_timed() -> None:
    """With the poller on, its first tick shows in the tick counter, histogram and gauge."""
    app = client(auto_refresh="true")
    app.start()
    runner: Any = app.app

    async def first_tick() -> None:
        async with asyncio.timeout(5):
            while runner.state.poller.last_tick is None:
                await asyncio.sleep(0.005)

    app.run(first_tick())
    found = samples(app.get("/metrics").text)
    app.close()
    assert found[("receiver_poll_ticks_total", ())] == 1
    assert found[("receiver_poll_tick_duration_seconds_count", ())] == 1
    assert found[("receiver_last_poll_timestamp_seconds", ())] > 1_600_000_000


@pytest.mark.parametrize(
    ("event", "label"),
    [("package", "package"), ("ping", "ping"), ("x" * 500, "other"), (None, "other")],
)
def test_event_labels_are_bounded(event: str | None, label: str) -> None:
    """An unsigned header must not grow the label set: unknown events are `other`."""
    assert event_label(event) == label


def test_a_failed_refresh_is_counted_as_failed_without_latency() -> None:
    """Failures count under `failed`; trigger-to-running only measures successes."""
    metrics = Metrics()
    result = RefreshResult(failed={"a": Failure("a", "pull failed")})
    metrics.refreshed(RefreshEvent("a", POLL, None, result, 1.0, 2.0))
    found = samples(metrics.render().decode())
    failed = (("outcome", "failed"), ("runtime", "a"), ("source", "poll"))
    assert found[("receiver_refreshes_total", failed)] == 1
    assert ("receiver_trigger_to_running_seconds_count", (("runtime", "a"),)) not in found


def test_an_accepted_delivery_is_counted_as_accepted_whatever_its_guid_says() -> None:
    """The outcome comes from what the route decided, not from words in the answer: a
    delivery whose X-GitHub-Delivery reads `ignored` is still an accepted one."""
    app = client()
    assert deliver(app, package_body(), "package", delivery="ignored") == 202
    found = settled_samples(app)
    delivered = "receiver_webhook_deliveries_total"
    assert found[(delivered, (("event", "package"), ("outcome", "accepted")))] == 1
    assert (delivered, (("event", "package"), ("outcome", "ignored"))) not in found


def test_a_delivery_is_counted_under_the_event_it_was_handled_as() -> None:
    """The event label reads the header as the route does: `package ` with a trailing
    space is handled as a package delivery, and counted as one, refused or not."""
    app = client()
    assert deliver(app, package_body(), "package\t ") == 202
    assert deliver(app, package_body(), " package", secret="forged") == 401
    found = settled_samples(app)
    delivered = "receiver_webhook_deliveries_total"
    assert found[(delivered, (("event", "package"), ("outcome", "accepted")))] == 1
    assert found[(delivered, (("event", "package"), ("outcome", "unauthorized")))] == 1
    assert [key for key in found if key[0] == delivered and ("event", "other") in key[1]] == []
