"""Fixtures for tests that need a real Docker engine and registry."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import Stack
from tests.support.token_registry import TokenRegistry

from .needs import need

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as `integration`."""
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """One engine and registry for the whole session, started on first use."""
    with need("test stack", Stack.start) as started:
        yield started


@pytest.fixture(scope="session")
def token_registry(stack: Stack) -> Iterator[TokenRegistry]:
    """A GHCR-like token-auth registry for the whole session, next to the stack's engine.

    One user, ``reader``, whose password is ``token_registry.users["reader"]``, may pull
    and push everywhere; anonymous clients may pull only repositories under ``public/``.
    Tests that change its switches (``fail_with``, ``clock_offset``, ``expires_in``)
    call ``token_registry.reset()`` afterwards.
    """
    del stack  # needed only to run first and close last: images are pushed by its engine
    users = {"reader": secrets.token_urlsafe(16)}
    start = functools.partial(TokenRegistry.start, users=users, public=("public/",))
    with need("token registry", start) as started:
        yield started
