"""Fixtures for tests that need a real Docker engine and registry."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, StackUnavailable
from tests.token_registry import TokenRegistry

_HERE = Path(__file__).parent


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as `integration`."""
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """One engine and registry for the whole session, started on first use."""
    try:
        started = Stack.start()
    except StackUnavailable as exc:
        # CI must have the stack: a skip there would hide that nothing was tested.
        if _in_ci():
            pytest.fail(f"test stack unavailable in CI: {exc.reason}")
        pytest.skip(f"test stack unavailable: {exc.reason}")
    with started:
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
    try:
        started = TokenRegistry.start(
            users={"reader": secrets.token_urlsafe(16)}, public=("public/",)
        )
    except StackUnavailable as exc:
        if _in_ci():
            pytest.fail(f"token registry unavailable in CI: {exc.reason}")
        pytest.skip(f"token registry unavailable: {exc.reason}")
    with started:
        yield started
