"""A container removed by hand in the middle of its swap, on the real engine: whichever of
the two goes, the workspace is left with one container, under its name, running."""

from __future__ import annotations

import threading
import time

import pytest

from receiver.cli import build_engine
from receiver.container import aside_name
from receiver.refresh import RefreshService
from receiver.result import RefreshResult
from tests.support.stack import Stack
from tests.support.workspaces import Runtime


@pytest.mark.parametrize("removed", ["the replacement", "the old container"])
def test_a_container_removed_by_hand_mid_swap(stack: Stack, removed: str) -> None:
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1")
    name = runtime.workspace("one", v1)
    v2 = runtime.publish("v2")
    settings = runtime.settings(SWAP_GRACE_SECONDS="3")
    engine = build_engine(settings)
    results: list[RefreshResult] = []
    worker = threading.Thread(
        target=lambda: results.append(RefreshService(settings, engine).refresh())
    )
    worker.start()
    aside = aside_name(name)
    deadline = time.monotonic() + 30
    while stack.running_image(aside) is None or stack.running_image(name) != (
        v2.image_id,
        True,
    ):
        assert time.monotonic() < deadline, "the swap never reached its grace period"
        time.sleep(0.05)
    stack.client.api.remove_container(name if removed == "the replacement" else aside, force=True)
    worker.join(timeout=60)
    engine.close()

    result = results[0]
    assert stack.running_image(aside) is None
    if removed == "the replacement":
        # A forced removal kills before it removes: the swap may see either the exit or the
        # disappearance first. Either way the old container is back, under its name.
        assert result.failed[name].restored
        assert stack.running_image(name) == (v1.image_id, True)
    else:
        assert result.recreated == [name]
        assert stack.running_image(name) == (v2.image_id, True)
