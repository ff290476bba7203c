"""Registry faults on the real stack: the poller's tick records the fault, every container
stays present and running on its image, and once the fault clears the next tick converges.

The registry is the stack's real one behind tests/faults.py's proxy; the engine is real; the
poller, coordinator and refresh service are the receiver's own, ticked by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from receiver import config
from receiver.book import DigestBook
from receiver.cli import build_engine
from receiver.coordinator import Coordinator
from receiver.outcomes import PollOutcome, TriggerOutcome
from receiver.poller import Poller, registry_fetch
from receiver.refresh import RefreshService
from receiver.registry import RegistryClient
from tests.support.faults import Fault, FaultProxy
from tests.support.stack import Published, Stack
from tests.support.token_registry import TokenRegistry
from tests.support.workspaces import Runtime

CLIENT_TIMEOUT = httpx.Timeout(2.0, connect=2.0)
FETCH_FAILED, SCHEDULED = PollOutcome.FETCH_FAILED, TriggerOutcome.SCHEDULED
Outcome = PollOutcome | TriggerOutcome


@dataclass
class Site:
    """A runtime whose image is reached through the fault proxy, and one ws- container."""

    runtime: Runtime
    proxy: FaultProxy
    v1: Published
    settings: config.Config
    v2: Published | None = None

    def publish_v2(self) -> Published:
        self.v2 = self.runtime.publish("v2")
        return self.v2


@pytest.fixture
def site(stack: Stack) -> Iterator[Site]:
    with FaultProxy(f"http://{stack.registry}") as proxy:
        runtime = Runtime.make(stack)
        v1 = runtime.publish("v1")
        # The workspace and the receiver see the registry only through the proxy.
        runtime.workspace("one", f"{proxy.address}/{runtime.repository}:latest")
        template = runtime.image_template.replace(stack.registry, proxy.address, 1)
        settings = runtime.settings(IMAGE_TEMPLATE=template, SWAP_GRACE_SECONDS="0.3")
        yield Site(runtime, proxy, v1, settings)


def workspace(stack: Stack, site: Site) -> tuple[str, bool]:
    inspect = stack.client.api.inspect_container(f"{site.runtime.prefix}one")
    return inspect["Image"], inspect["State"]["Running"]


async def fault_then_recover(
    stack: Stack,
    site: Site,
    fault: Fault,
    credentials: tuple[str, str] | None = None,
    clear: object = None,
) -> tuple[Outcome, Outcome]:
    """Boot, publish v2, tick under the fault, clear it, tick again: both outcomes."""
    engine = build_engine(site.settings)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        coordinator = Coordinator(
            RefreshService(site.settings, engine), DigestBook(site.settings.runtimes)
        )
        images = {site.runtime.name: site.settings.image_for(site.runtime.name)}
        poller = Poller(coordinator, registry_fetch(RegistryClient(http, credentials), images), 300)
        await coordinator.boot()
        site.publish_v2()
        site.proxy.set(fault)
        first = await poller.tick()
        await coordinator.idle()
        assert workspace(stack, site) == (site.v1.image_id, True)
        assert coordinator.book.seen(site.runtime.name) == site.v1.digest
        site.proxy.set(None)
        if callable(clear):
            clear()
        second = await poller.tick()
        await coordinator.idle()
    engine.close()
    return first.outcomes[site.runtime.name], second.outcomes[site.runtime.name]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(status=500), id="500"),
        pytest.param(Fault(status=404), id="404"),
        pytest.param(Fault(status=429, headers=(("Retry-After", "1"),)), id="429-persisting"),
        pytest.param(Fault(delay=3.0, times=3), id="timeout"),
        pytest.param(Fault(drop=True), id="connection-dropped"),
    ],
)
def test_a_registry_fault_holds_nothing_and_clears(stack: Stack, site: Site, fault: Fault) -> None:
    """The tick fails for the runtime, nothing is touched; after the fault, v2 lands."""
    outcomes = asyncio.run(fault_then_recover(stack, site, fault))
    assert outcomes == (FETCH_FAILED, SCHEDULED)
    assert site.v2 is not None
    assert workspace(stack, site) == (site.v2.image_id, True)


def test_a_short_429_is_waited_out_within_the_tick(stack: Stack, site: Site) -> None:
    """One 429 with Retry-After: 1 is honoured and the same tick goes on to refresh."""
    fault = Fault(status=429, headers=(("Retry-After", "1"),), times=1, methods=("HEAD",))
    outcomes = asyncio.run(_one_tick(site, fault))
    assert outcomes == SCHEDULED
    assert site.v2 is not None
    assert workspace(stack, site) == (site.v2.image_id, True)


async def _one_tick(site: Site, fault: Fault) -> Outcome:
    engine = build_engine(site.settings)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        coordinator = Coordinator(
            RefreshService(site.settings, engine), DigestBook(site.settings.runtimes)
        )
        images = {site.runtime.name: site.settings.image_for(site.runtime.name)}
        client = RegistryClient(http)
        poller = Poller(coordinator, registry_fetch(client, images), 300)
        await coordinator.boot()
        site.publish_v2()
        site.proxy.set(fault)
        tick = await poller.tick()
        await coordinator.idle()
        assert client.counters.rate_limited == 1
    engine.close()
    return tick.outcomes[site.runtime.name]


@pytest.mark.parametrize("failure", ["token service down", "wrong credentials"])
def test_token_service_faults_fail_the_tick_only(
    stack: Stack, token_registry: TokenRegistry, failure: str
) -> None:
    """With the token service answering 503, or credentials it refuses, the tick reports
    the runtime failed and touches nothing; once it answers again, the next tick refreshes."""
    token_registry.reset()
    creds = ("reader", token_registry.users["reader"])
    private = Runtime.make(stack, registry=token_registry.registry, namespace="private", auth=creds)
    runtime = private.name
    v1 = private.publish("v1")
    one = private.workspace("one", v1)
    settings = private.settings(GHCR_USER=creds[0], GHCR_TOKEN=creds[1], SWAP_GRACE_SECONDS="0.3")
    polled_with = creds if failure == "token service down" else (creds[0], "wrong")

    async def run() -> tuple[Outcome, Outcome, Published]:
        engine = build_engine(settings)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
            coordinator = Coordinator(
                RefreshService(settings, engine), DigestBook(settings.runtimes)
            )
            images = {runtime: settings.image_for(runtime)}
            broken = Poller(
                coordinator, registry_fetch(RegistryClient(http, polled_with), images), 300
            )
            fixed = Poller(coordinator, registry_fetch(RegistryClient(http, creds), images), 300)
            await coordinator.boot()
            v2 = private.publish("v2")
            if failure == "token service down":
                token_registry.fail_with = 503
            first = await broken.tick()
            await coordinator.idle()
            inspect = stack.client.api.inspect_container(one)
            assert (inspect["Image"], inspect["State"]["Running"]) == (v1.image_id, True)
            token_registry.reset()
            second = await fixed.tick()
            await coordinator.idle()
        engine.close()
        return first.outcomes[runtime], second.outcomes[runtime], v2

    try:
        first, second, v2 = asyncio.run(run())
    finally:
        token_registry.reset()
    assert (first, second) == (FETCH_FAILED, SCHEDULED)
    inspect = stack.client.api.inspect_container(one)
    assert (inspect["Image"], inspect["State"]["Running"]) == (v2.image_id, True)
