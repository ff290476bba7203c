"""Engine faults on the real stack: the receiver (its own process) talks to the real engine
through tests/engine_proxy.py, which takes the engine away at start, in the middle of a
pull, or in the middle of a swap. Each test ends, once the engine is back, with every
workspace container present, running, on the newest image, its volume data intact, and no
container left aside; `/healthz` answers throughout and `/readyz` follows the engine."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from receiver.container import parse_aside
from tests.support import deliveries
from tests.support.engine_proxy import CREATE, PULL, START, Cut, EngineProxy
from tests.support.service import ReceiverProcess, wait_for
from tests.support.stack import QUICK_STOP_CMD, Published, Stack
from tests.support.workspaces import receiver_env

from .test_webhook_real import SECRET


@dataclass
class Workspaces:
    """A runtime with two running `ws-` containers on v1, each with a file in a volume."""

    runtime: str
    prefix: str
    v1: Published
    proxy: EngineProxy

    @property
    def repository(self) -> str:
        return f"org/workspace-template-{self.runtime}"

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}one", f"{self.prefix}two"]


@pytest.fixture
def ws(stack: Stack) -> Iterator[Workspaces]:
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('ws')}-"
    stack.track_container(prefix)
    repository = f"org/workspace-template-{runtime}"
    v1 = stack.publish(repository, version="v1", cmd=QUICK_STOP_CMD)
    with EngineProxy(stack.docker_host) as proxy:
        made = Workspaces(runtime, prefix, v1, proxy)
        for name in made.names:
            stack.run_container(name, v1.ref, volumes=["/data"])
            stack.exec(name, "sh", "-c", f"echo precious-{name} > /data/file")
        yield made


def serve(stack: Stack, ws: Workspaces, log: Path, **extra: str) -> ReceiverProcess:
    """The receiver as its own process, its engine behind the proxy."""
    env = {
        **receiver_env(stack, ws.runtime, ws.prefix),
        "DOCKER_HOST": ws.proxy.docker_host,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        # A transient failure is tried again by itself: soon, in these tests.
        "RETRY_MIN_SECONDS": "1",
        "RETRY_MAX_SECONDS": "2",
        **extra,
    }
    return ReceiverProcess(env, log)


def readiness(server: ReceiverProcess) -> tuple[int, int]:
    """The status codes of /healthz and /readyz."""
    with httpx.Client(base_url=server.base, timeout=10) as http:
        return http.get("/healthz").status_code, http.get("/readyz").status_code


def deliver(server: ReceiverProcess, ws: Workspaces, digest: str, delivery: str) -> str:
    """A signed `package` delivery for the runtime's tag at `digest`; what it did."""
    body = deliveries.package_body(f"workspace-template-{ws.runtime}", digest, owner="Org")
    answer = deliveries.deliver(server.base, body, SECRET, delivery=delivery, timeout=10)
    assert answer.status_code == 202, answer.text
    outcome: str = answer.json()["runtimes"][ws.runtime]
    return outcome


def book(server: ReceiverProcess, token: str, runtime: str) -> dict[str, Any]:
    """The status page's record of the runtime: seen digest, last refresh, ..."""
    record: dict[str, Any] = server.status(token)["runtimes"][runtime]
    return record


def refreshed_since(server: ReceiverProcess, token: str, runtime: str, after: str | None) -> bool:
    """Whether a refresh was recorded after the one stamped `after` and none is running."""
    record = book(server, token, runtime)
    last = record["last_refresh"]
    return last is not None and last["at"] != after and not record["refreshing"]


def last_refresh_at(server: ReceiverProcess, token: str, runtime: str) -> str | None:
    last = book(server, token, runtime)["last_refresh"]
    return None if last is None else str(last["at"])


def admin_refresh(server: ReceiverProcess, token: str, runtime: str) -> dict[str, Any]:
    answer = server.refresh(token, runtimes=[runtime])
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def containers(stack: Stack, prefix: str) -> dict[str, dict[str, Any]]:
    """Every container whose name starts with `prefix`, by name, inspected."""
    found: dict[str, dict[str, Any]] = {}
    for row in stack.client.api.containers(all=True, filters={"name": prefix}):
        try:
            inspect = stack.client.api.inspect_container(row["Id"])
        except docker.errors.NotFound:
            continue
        name = str(inspect["Name"]).lstrip("/")
        if name.startswith(prefix):
            found[name] = inspect
    return found


def state(stack: Stack, ws: Workspaces) -> dict[str, tuple[str, bool]]:
    """(image id, running) of every container of the workspaces, asides included."""
    return {
        name: (str(c["Image"]), bool(c["State"]["Running"]))
        for name, c in containers(stack, ws.prefix).items()
    }


def assert_converged(stack: Stack, ws: Workspaces, image: Published, log: str) -> None:
    """Every workspace present, running `image`, data intact; nothing left aside."""
    assert state(stack, ws) == {name: (image.image_id, True) for name in ws.names}, log
    for name in ws.names:
        assert stack.read_file(name, "/data/file") == f"precious-{name}"


def recover(
    stack: Stack, ws: Workspaces, server: ReceiverProcess, token: str, v2: Published, delivery: str
) -> None:
    """Bring the engine back: the planned retry (a redelivery meanwhile joins it) converges
    with the book on v2, without any new trigger."""
    ws.proxy.up()
    server.wait_ready("/readyz")
    assert book(server, token, ws.runtime)["retry_at"] is not None
    assert deliver(server, ws, v2.digest, delivery) == "coalesced"
    wait_for("the retry", lambda: book(server, token, ws.runtime)["seen"] == v2.digest, server)
    wait_for("the book", lambda: not book(server, token, ws.runtime)["refreshing"], server)
    record = book(server, token, ws.runtime)
    assert record["last_refresh"]["ok"] is True, record
    assert record["seen"] == v2.digest
    assert_converged(stack, ws, v2, server.log())


def test_engine_unreachable_at_start(stack: Stack, ws: Workspaces, tmp_path: Path) -> None:
    """Started without its engine, the receiver is up but not ready; a delivery is accepted
    and its refresh fails without moving the book; with the engine back it is ready, and a
    redelivery converges."""
    ws.proxy.down()
    v2 = stack.publish(ws.repository, version="v2", cmd=QUICK_STOP_CMD)
    server = serve(stack, ws, tmp_path / "serve.log")
    try:
        server.wait_ready("/healthz")
        token = server.admin_token()
        assert readiness(server) == (200, 503)

        assert deliver(server, ws, v2.digest, "d-1") == "scheduled"
        wait_for(
            "the refresh to fail", lambda: refreshed_since(server, token, ws.runtime, None), server
        )
        record = book(server, token, ws.runtime)
        assert record["seen"] is None
        assert record["last_refresh"]["ok"] is False
        assert "Docker engine" in record["last_refresh"]["failed"][ws.runtime]
        assert state(stack, ws) == {name: (ws.v1.image_id, True) for name in ws.names}
        assert readiness(server) == (200, 503)

        recover(stack, ws, server, token, v2, "d-1")
    finally:
        assert server.stop() == 0


def test_engine_unreachable_at_start_the_poller_converges(
    stack: Stack, ws: Workspaces, tmp_path: Path
) -> None:
    """With the poller on and no delivery at all: the first tick cannot read the host and
    seeds nothing; the next tick, with the engine back, boots, sees v2 and converges."""
    ws.proxy.down()
    v2 = stack.publish(ws.repository, version="v2", cmd=QUICK_STOP_CMD)
    server = serve(stack, ws, tmp_path / "serve.log", IMAGE_AUTO_REFRESH="true", POLL_INTERVAL="10")
    try:
        server.wait_ready("/healthz")
        token = server.admin_token()
        wait_for("the first tick", lambda: book(server, token, ws.runtime)["last_poll"], server)
        assert book(server, token, ws.runtime)["seen"] is None
        assert readiness(server) == (200, 503)
        ws.proxy.up()
        server.wait_ready("/readyz")
        wait_for(
            "the next tick's refresh",
            lambda: book(server, token, ws.runtime)["seen"] == v2.digest,
            server,
        )
        assert_converged(stack, ws, v2, server.log())
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("at", ["request", "response"])
def test_engine_lost_during_a_pull(stack: Stack, ws: Workspaces, tmp_path: Path, at: str) -> None:
    """The engine goes before the pull reaches it, or while its progress streams: the pull
    fails, nothing is touched, the book stays on v1; once it is back, a redelivery converges."""
    server = serve(stack, ws, tmp_path / "serve.log")
    try:
        server.wait_ready("/readyz")
        token = server.admin_token()
        wait_for("the boot seed", lambda: book(server, token, ws.runtime)["seen"], server)
        assert book(server, token, ws.runtime)["seen"] == ws.v1.digest
        v2 = stack.publish(ws.repository, version="v2", cmd=QUICK_STOP_CMD)
        ws.proxy.cut_on(Cut(PULL, at="response" if at == "response" else "request"))

        assert deliver(server, ws, v2.digest, "d-1") == "scheduled"
        wait_for("the cut", lambda: not ws.proxy.is_up, server)
        wait_for(
            "the refresh to fail", lambda: refreshed_since(server, token, ws.runtime, None), server
        )
        assert len(ws.proxy.fired) == 1
        record = book(server, token, ws.runtime)
        assert record["seen"] == ws.v1.digest
        assert record["last_refresh"]["ok"] is False
        assert "pull" in record["last_refresh"]["failed"][ws.runtime]
        assert state(stack, ws) == {name: (ws.v1.image_id, True) for name in ws.names}
        assert readiness(server) == (200, 503)

        recover(stack, ws, server, token, v2, "d-2")
    finally:
        assert server.stop() == 0


SWAP_CUTS = {
    # The old container is aside (running); the replacement's create never arrives.
    "after-rename-aside": Cut(CREATE),
    # The old container is stopped aside; the replacement exists but is never started.
    "at-start-of-new": Cut(START),
    # The replacement has started; the engine goes during its grace period.
    "after-new-started": Cut(START, at="response"),
}


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("where", list(SWAP_CUTS))
def test_engine_lost_during_a_swap(
    stack: Stack, ws: Workspaces, tmp_path: Path, where: str, parallelism: int
) -> None:
    """The engine goes in the middle of a swap, so the swap cannot even restore: the old
    container is left aside under its recognisable name. Once the engine is back, the next
    refresh repairs that first and then converges on v2.

    One at a time, the second container's turn comes with the engine gone: it fails alone,
    untouched, and the first one's failure is still reported. Two at a time, both swaps are
    in flight when the engine goes."""
    # No canary: this is about swaps in flight together (a failed canary holds the rest).
    server = serve(
        stack,
        ws,
        tmp_path / "serve.log",
        SWAP_PARALLELISM=str(parallelism),
        ROLLOUT_CANARY="0",
    )
    try:
        server.wait_ready("/readyz")
        token = server.admin_token()
        v2 = stack.publish(ws.repository, version="v2", cmd=QUICK_STOP_CMD)
        ws.proxy.cut_on(SWAP_CUTS[where])

        cut_short = admin_refresh(server, token, ws.runtime)
        assert len(ws.proxy.fired) == 1
        assert not ws.proxy.is_up
        assert cut_short["recreated"] == []
        assert set(cut_short["failed"]) == set(ws.names), cut_short
        assert any("RESTORE FAILED" in reason for reason in cut_short["failed"].values())
        left = state(stack, ws)
        asides = {parsed.name for parsed in map(parse_aside, left) if parsed is not None}
        assert asides, left
        # Every workspace is still there, under its name or aside.
        for name in ws.names:
            assert name in left or name in asides, left
        if parallelism == 1:
            (untouched,) = set(ws.names) - asides
            assert left[untouched] == (ws.v1.image_id, True)
            assert "Docker engine unreachable" in cut_short["failed"][untouched]
        assert readiness(server) == (200, 503)
        assert book(server, token, ws.runtime)["seen"] == ws.v1.digest

        ws.proxy.up()
        server.wait_ready("/readyz")
        repaired = admin_refresh(server, token, ws.runtime)
        assert repaired["failed"] == {}, repaired
        assert set(repaired["repaired"]) == asides, repaired
        assert repaired["digests"] == {ws.runtime: v2.digest}
        assert book(server, token, ws.runtime)["seen"] == v2.digest
        assert_converged(stack, ws, v2, server.log())
    finally:
        assert server.stop() == 0


def test_the_proxy_follows_pipelined_requests_and_cuts_the_chosen_one(stack: Stack) -> None:
    """Three requests written at once on one connection, two with bodies (chunked, then
    Content-Length): the proxy sees each request line and the engine answers each. A cut
    on the second ping, written next, closes the connection without an answer."""
    body = b'{"Image": "no-such-image-for-the-proxy-test"}'
    name = stack.unique("proxy-test")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    requests = [
        b"GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\n\r\n",
        b"POST /v1.41/containers/create?name=%s HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%s"
        % (name.encode(), chunked),
        b"POST /v1.41/containers/create?name=%s HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (name.encode(), len(body), body),
        b"GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\n\r\n",
    ]
    with EngineProxy(stack.docker_host) as proxy:
        proxy.cut_on(Cut(r"^GET /v1\.41/_ping ", after=2, down=False))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(proxy.path))
            client.sendall(b"".join(requests[:3]))
            answers = b""
            while len(statuses(answers)) < 3:
                answers += client.recv(65536)
            client.sendall(requests[3])
            while chunk := client.recv(65536):
                answers += chunk
        assert proxy.seen == [r.split(b"\r\n", 1)[0].decode() for r in requests]
        assert proxy.fired == [proxy.seen[-1]]
        assert proxy.is_up
    assert statuses(answers) == [b"200", b"404", b"404"], answers


def statuses(answers: bytes) -> list[bytes]:
    """The status codes of the HTTP answers in a byte stream (a body may not end in a
    newline, so a status line is not always at the start of one)."""
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)
