"""A broken new image on the real engine: its replacement is rolled back, and the workspace
runs on as it was, with its data, on every engine (the containerd image store included,
where the old image is no longer named by any tag when the old container starts again)."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.cli import build_engine
from receiver.container import aside_name
from receiver.errors import Cause
from receiver.refresh import RefreshService
from tests.support.stack import QUICK_STOP_CMD, Stack
from tests.support.workspaces import Runtime

BROKEN = {
    # The command the image names is not in it: the replacement never starts.
    "missing command": {"cmd": ["/bin/no-such-command"]},
    # The image's own health check always fails: the replacement turns unhealthy.
    "failing health check": {
        "cmd": QUICK_STOP_CMD,
        "changes": ['HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/bin/false"]'],
    },
}


def state(stack: Stack, name: str) -> dict[str, Any]:
    inspect: dict[str, Any] = stack.client.api.inspect_container(name)
    return inspect


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_broken_image_is_rolled_back_and_the_workspace_runs_on(stack: Stack, broken: str) -> None:
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1", volumes=["/data"])
    name = runtime.workspace("one", v1)
    stack.exec(name, "sh", "-c", "echo precious > /data/file")
    before = state(stack, name)
    runtime.publish("v2", volumes=["/data"], **BROKEN[broken])
    settings = runtime.settings(SWAP_GRACE_SECONDS="2", SWAP_HEALTH_TIMEOUT="20")
    engine = build_engine(settings)
    try:
        result = RefreshService(settings, engine).refresh()
    finally:
        engine.close()

    assert result.pulled == [runtime.name]
    assert result.recreated == []
    failure = result.failed[name]
    assert failure.cause is Cause.IMAGE
    assert failure.restored is True
    after = state(stack, name)
    assert after["Id"] == before["Id"]
    assert after["Image"] == v1.image_id
    assert after["State"]["Running"] is True
    assert stack.read_file(name, "/data/file") == "precious"
    assert stack.read_file(name, "/version") == "v1"
    leftovers = stack.client.api.containers(all=True, filters={"name": runtime.prefix})
    assert [c["Names"] for c in leftovers] == [[f"/{name}"]]
    assert not [c for c in leftovers if aside_name(name) in c["Names"][0]]
