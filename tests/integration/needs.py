"""What an integration test needs from the machine: had, or a failure in CI, or a skip."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

from tests.support.daemons import StackUnavailable

T = TypeVar("T")


def in_ci() -> bool:
    """Whether this is a CI run (`CI=true`), where nothing may be skipped."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(what: str, reason: str) -> NoReturn:
    """Fail under CI (a skip there would hide that nothing was tested), else skip."""
    if in_ci():
        pytest.fail(f"{what} unavailable in CI: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def need(what: str, start: Callable[[], T]) -> T:
    """`start()`'s result, or `unavailable` with the reason it raised StackUnavailable."""
    try:
        return start()
    except StackUnavailable as exc:
        unavailable(what, exc.reason)
