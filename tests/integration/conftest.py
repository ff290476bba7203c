"""Fixtures for tests that need a real Docker engine and registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, StackUnavailable

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
