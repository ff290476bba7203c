"""Crash repair on the real engine: a receiver SIGKILLed in the middle of a swap leaves the
old container aside; the next start finishes the swap or undoes it, losing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.container import aside_name
from tests.support.service import ReceiverProcess, wait_for
from tests.support.stack import Published, Stack
from tests.support.workspaces import Runtime


def kill_mid_swap(stack: Stack, tmp_path: Path) -> tuple[Runtime, Published, Published]:
    """Start a receiver whose first poll swaps `<prefix>one` onto v2, and SIGKILL it while
    the new container serves its grace period and the old one waits aside."""
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1")
    one = runtime.workspace("one", v1, volumes=["/data"])
    stack.exec(one, "sh", "-c", "echo precious > /data/file")
    v2 = runtime.publish("v2")
    env = runtime.env(IMAGE_AUTO_REFRESH="true", SWAP_GRACE_SECONDS="60")
    server = ReceiverProcess(env, tmp_path / "killed.log")
    aside = aside_name(one)

    def mid_swap() -> bool:
        new = stack.named(one)
        if stack.named(aside) is None or new is None or new["Image"] != v2.image_id:
            return False
        state = new["State"]
        return isinstance(state, dict) and bool(state["Running"])

    try:
        wait_for("the swap to reach its grace period", mid_swap, server)
    finally:
        server.process.kill()
        server.process.wait(timeout=30)
    return runtime, v1, v2


def restart(runtime: Runtime, log: Path) -> str:
    """A new receiver (no poller) boots, repairs, and is stopped again; its log."""
    server = ReceiverProcess(runtime.env(), log)
    try:
        server.wait_ready("/healthz")
        wait_for("the boot repair", lambda: "repair" in server.log(), server, timeout=30)
    finally:
        assert server.stop(timeout=60) == 0
    return server.log()


@pytest.mark.parametrize("replacement", ["running", "stopped by hand", "removed by hand"])
def test_sigkill_mid_swap_is_repaired_at_the_next_start(
    stack: Stack, tmp_path: Path, replacement: str
) -> None:
    runtime, v1, v2 = kill_mid_swap(stack, tmp_path)
    name = f"{runtime.prefix}one"
    if replacement == "stopped by hand":
        stack.client.api.stop(name, timeout=1)
    elif replacement == "removed by hand":
        stack.client.api.remove_container(name, force=True)
    log = restart(runtime, tmp_path / "restarted.log")

    assert stack.named(f"{name}-receiver-aside") is None, log
    container = stack.named(name)
    assert container is not None, log
    state = container["State"]
    assert isinstance(state, dict)
    assert state["Running"] is True
    # A proven replacement is kept; anything else gives the old container back.
    assert container["Image"] == (v2.image_id if replacement == "running" else v1.image_id)
    assert stack.read_file(name, "/data/file").strip() == "precious"


def test_sigterm_lets_a_swap_in_flight_finish(stack: Stack, tmp_path: Path) -> None:
    """SIGTERM during a swap's grace period: the swap completes, then the process exits 0."""
    runtime = Runtime.make(stack)
    one = runtime.workspace("one", runtime.publish("v1"))
    v2 = runtime.publish("v2")
    env = runtime.env(IMAGE_AUTO_REFRESH="true", SWAP_GRACE_SECONDS="3")
    server = ReceiverProcess(env, tmp_path / "terminated.log")
    aside = aside_name(one)
    try:
        wait_for("the swap to start", lambda: stack.named(aside) is not None, server)
    finally:
        code = server.stop(timeout=60)
    assert code == 0
    container = stack.named(one)
    assert container is not None
    assert container["Image"] == v2.image_id
    assert stack.named(aside) is None
    assert "recreated" in server.log()
