"""The service's lifespan (boot seeding, the poller) and `GET /admin/status`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from receiver.admin_auth import AdminTokens
from tests.support import wiring
from tests.support.asgi import AppClient
from tests.support.fakes import STALE_DIGEST, STALE_NEW, FakeEngine, engine_with_stale_workspace

STATUS = "/admin/status"


def app_client(
    engine: FakeEngine, env: dict[str, str], keys: tuple[str, ...] = ("key",)
) -> AppClient:
    settings = dataclasses.replace(wiring.settings(**env), admin_keys=keys)
    return wiring.app_client(engine, settings, registry=wiring.registry_answering(STALE_DIGEST))


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {AdminTokens(['key']).mint()}"}


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_the_poller_starts_with_the_service_and_its_first_tick_refreshes() -> None:
    """IMAGE_AUTO_REFRESH=true: the lifespan seeds from the host, ticks at once, and the
    status page shows the observation, the refresh and the next tick."""
    engine = engine_with_stale_workspace()
    client = app_client(engine, {"IMAGE_AUTO_REFRESH": "true"})
    client.start()
    app: Any = client.app
    client.run(until(lambda: app.state.poller.last_tick is not None))
    client.run(app.state.coordinator.idle())
    status = client.get(STATUS, headers=auth()).json()
    client.close()
    assert engine.by_name("ws-1")["Image"] == STALE_NEW  # type: ignore[index]
    runtime = status["runtimes"]["a"]
    assert runtime["image"] == "ghcr.io/org/workspace-template-a:latest"
    assert runtime["seen"] == STALE_DIGEST
    assert runtime["last_poll"]["digest"] == STALE_DIGEST
    assert runtime["last_poll"]["error"] is None
    assert runtime["last_trigger"]["source"] == "poll"
    assert runtime["last_refresh"]["ok"] is True
    assert runtime["last_refresh"]["recreated"] == ["ws-1"]
    assert runtime["last_refresh"]["at"].endswith("Z")
    poller = status["poller"]
    assert poller["enabled"] is True
    assert poller["interval_seconds"] == 300
    assert poller["ticks"] == 1
    assert poller["last_tick"]["outcomes"] == {"a": "scheduled"}
    assert poller["next_tick"].endswith("Z")


def test_without_auto_refresh_there_is_no_poller_but_boot_seeding_runs() -> None:
    """The poller is opt-in; the host's digest is still read at start for the webhooks."""
    engine = FakeEngine()
    engine.images["ghcr.io/org/workspace-template-a:latest"] = engine.publish(
        "ghcr.io/org/workspace-template-a:latest", STALE_NEW, STALE_DIGEST
    )
    client = app_client(engine, {})
    client.start()
    app: Any = client.app
    client.run(until(lambda: app.state.coordinator.book.states["a"].host_checked))
    status = client.get(STATUS, headers=auth()).json()
    client.close()
    assert status["poller"] == {"enabled": False}
    assert status["runtimes"]["a"]["seen"] == STALE_DIGEST
    assert status["runtimes"]["a"]["last_refresh"] is None
    assert [call[0] for call in engine.calls if call[0] == "pull"] == []


def test_status_needs_an_admin_token() -> None:
    """No token → 401; no key configured → 503."""
    engine = FakeEngine()
    client = app_client(engine, {})
    assert client.get(STATUS).status_code == 401
    client.close()
    closed = app_client(engine, {}, keys=())
    assert closed.get(STATUS, headers=auth()).status_code == 503
    closed.close()
