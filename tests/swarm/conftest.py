"""Fixtures for tests on a real Docker Swarm (tests/support/swarm.py): a one-node swarm
for the session, a three-node one where a test module asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.needs import need
from tests.support.swarm import Swarm
from tests.support.swarm_runtime import SwarmRuntime

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/swarm as `swarm`."""
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.swarm)


def start_swarm(nodes: int) -> Iterator[Swarm]:
    """A swarm of `nodes` nodes, torn down completely afterwards."""
    with need(f"a {nodes}-node swarm", lambda: Swarm.start(nodes)) as swarm:
        yield swarm


@pytest.fixture(scope="session")
def swarm1() -> Iterator[Swarm]:
    """One manager node (the bulk of the cases need no more)."""
    yield from start_swarm(1)


def runtime_on(swarm: Swarm) -> Iterator[SwarmRuntime]:
    """A runtime of its own on `swarm`, its services removed afterwards."""
    with SwarmRuntime(swarm) as made:
        yield made


@pytest.fixture
def runtime(swarm1: Swarm) -> Iterator[SwarmRuntime]:
    """A runtime on the one-node swarm."""
    yield from runtime_on(swarm1)
