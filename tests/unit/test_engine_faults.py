"""The engine going away mid-answer or mid-refresh: a failure recorded, never a crash.

Found on the real stack (tests/integration/test_engine_faults_real.py): a pull stream cut
short raised urllib3's ProtocolError out of the Docker adapter, which crashed the
background refresh unrecorded; and an engine gone when a container's turn to be swapped
came made the whole refresh raise, losing the other containers' outcomes (the admin route
answered 500 instead of listing a restore that failed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import docker
import pytest
import requests.exceptions
import urllib3.exceptions

from receiver.docker_engine import DockerEngine
from receiver.errors import EngineUnavailable, PullError
from receiver.imageref import parse
from tests.support import wiring
from tests.support.fakes import (
    STALE_DIGEST,
    STALE_NEW,
    STALE_OLD,
    STALE_REF,
    FakeEngine,
    container,
)

CUT_SHORT = "Connection broken: IncompleteRead(0 bytes read)"


class CutShortAPI:
    """The SDK client's answers when the engine dies in the middle of them."""

    def pull(self, *_: Any, **__: Any) -> Iterator[dict[str, Any]]:
        yield {"status": "Pulling from org/workspace-template-a"}
        raise urllib3.exceptions.ProtocolError(CUT_SHORT)

    def inspect_container(self, _: str) -> dict[str, Any]:
        raise requests.exceptions.ChunkedEncodingError(CUT_SHORT)


def adapter() -> DockerEngine:
    engine = DockerEngine({}, platform="linux/amd64")
    engine._api = cast(docker.APIClient, CutShortAPI())
    return engine


def test_a_pull_stream_cut_short_is_a_pull_error() -> None:
    """The pull's progress stream ends mid-chunk: a PullError, which the refresh records."""
    with pytest.raises(PullError, match="engine unreachable"):
        adapter().pull(parse(STALE_REF))


def test_an_answer_cut_short_is_engine_unavailable() -> None:
    """An answer whose body is cut short means the engine went away: EngineUnavailable."""
    with pytest.raises(EngineUnavailable, match="IncompleteRead"):
        adapter().inspect_container("abc")


class EngineGoesAway(FakeEngine):
    """Answers until it receives a `last` call, which it never carries out; gone after."""

    def __init__(self, last: str) -> None:
        super().__init__()
        self.last = last
        self.gone = False

    def _record(self, *call: str) -> None:
        if not self.gone and call[0] != self.last:
            super()._record(*call)
            return
        self.gone = True
        self.calls.append(call)
        raise EngineUnavailable("Docker engine unreachable: Connection refused")


def test_an_engine_gone_mid_refresh_fails_each_container_and_keeps_every_outcome() -> None:
    """One container at a time: the first swap's create finds the engine gone (its restore
    fails too), the second container's turn finds it still gone. Both are reported failed,
    each with its own reason, and the refresh returns instead of raising."""
    engine = EngineGoesAway(last="create")
    engine.publish(STALE_REF, STALE_NEW, STALE_DIGEST)
    for name in ("ws-1", "ws-2"):
        engine.add(container(name, STALE_REF, STALE_OLD))
    # No canary: both containers get their turn (a canary failing would hold the other).
    service = wiring.service(engine, wiring.settings(SWAP_PARALLELISM="1", ROLLOUT_CANARY="0"))

    result = service.refresh_runtime("a")

    assert result.recreated == []
    assert sorted(result.failed) == ["ws-1", "ws-2"]
    reasons = sorted(failure.reason for failure in result.failed.values())
    assert any("RESTORE FAILED" in reason for reason in reasons)
    assert any(reason.startswith("Docker engine unreachable") for reason in reasons)
    # The one whose swap began waits aside for repair; the other was never touched.
    names = sorted(str(c["Name"]) for c in engine.containers.values())
    assert len([n for n in names if n.endswith("-receiver-aside")]) == 1
