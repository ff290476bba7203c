"""The registry client against a registry as GHCR is one (TLS, HTTP/2 by ALPN), reached
through an HTTPS proxy: a whole poll tick shares one connection.

With HTTP/1.1 every HEAD in flight needs a connection of its own, and a tick every five
minutes finds last tick's connections gone, so it would open (and TLS-handshake) up to
CONCURRENCY connections each time. The client made by `registry.http_client()`, the one the
receiver runs, multiplexes them over HTTP/2 where the registry offers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver.imageref import parse
from receiver.registry import RegistryClient, http_client
from tests.support.tls_registry import HOST, ConnectProxy, TlsRegistry

from .needs import need

RUNTIMES = 40


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ConnectProxy]]:
    """A TLS registry holding RUNTIMES repositories, reached as https://registry.test through
    a CONNECT proxy named by HTTPS_PROXY and trusted through SSL_CERT_FILE; yields the
    digest every tag points at and the proxy."""
    with need("TLS registry", lambda: TlsRegistry(tmp_path)) as registry:
        digest = registry.publish([f"org/workspace-template-r{i}" for i in range(RUNTIMES)])
        with ConnectProxy({f"{HOST}:443": registry.address}) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            monkeypatch.setenv("SSL_CERT_FILE", str(registry.ca_file))
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
                monkeypatch.delenv(name, raising=False)
            yield digest, proxy


def tick(http: httpx.AsyncClient) -> dict[str, str]:
    """One poll tick's lookups for every runtime, over `http`; the digests found."""
    refs = [parse(f"{HOST}/org/workspace-template-r{i}:latest") for i in range(RUNTIMES)]

    async def lookups() -> dict[str, str]:
        async with http:
            found = await RegistryClient(http).digests(refs)
        return {str(ref): str(value) for ref, value in found.items()}

    return asyncio.run(lookups())


def test_a_tick_over_http2_shares_one_connection(remote: tuple[str, ConnectProxy]) -> None:
    """Every runtime's digest is right, and the tick opened one connection."""
    digest, proxy = remote
    found = tick(http_client())
    assert set(found.values()) == {digest}
    assert len(found) == RUNTIMES
    assert proxy.tunnels == [f"{HOST}:443"]


def test_over_http1_the_same_tick_needs_a_connection_per_head_in_flight(
    remote: tuple[str, ConnectProxy],
) -> None:
    """The control: the same tick with HTTP/2 off opens more than one connection, so one
    tunnel above means multiplexing. (How many more depends on how fast answers come back
    and free a connection for the next HEAD: at least a second one while the first HEAD
    of the batch is in flight.)"""
    digest, proxy = remote
    found = tick(httpx.AsyncClient(http2=False))
    assert set(found.values()) == {digest}
    assert len(proxy.tunnels) > 1
