"""Every secret set, every route exercised, DEBUG JSON logs: no secret, token or request body
appears in the log, in an answer or in a notification. The run also shows notifications
reaching a (local) incoming webhook after a real refresh."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import deliveries
from tests.support.service import ReceiverProcess
from tests.support.sink import Sink
from tests.support.stack import Stack
from tests.support.token_registry import TokenRegistry
from tests.support.workspaces import Runtime


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as server:
        yield server


def test_no_secret_token_or_body_is_ever_written(
    stack: Stack, token_registry: TokenRegistry, sink: Sink, tmp_path: Path
) -> None:
    token_registry.reset()
    creds = ("reader", token_registry.users["reader"])
    private = Runtime.make(stack, registry=token_registry.registry, namespace="private", auth=creds)
    one = private.workspace("one", private.publish("v1"))
    v2 = private.publish("v2")

    webhook_secrets = [secrets.token_hex(20), secrets.token_hex(20)]
    admin_key = secrets.token_hex(24)
    hook_token = secrets.token_hex(16)
    key_file = tmp_path / "admin_key"
    key_file.write_text(admin_key + "\n")
    env = private.env(
        GHCR_USER=creds[0],
        GHCR_TOKEN=creds[1],
        GITHUB_WEBHOOK_SECRET=",".join(webhook_secrets),
        ADMIN_SECRET_KEY_FILE=str(key_file),
        NOTIFY_URL=sink.url.replace("/hook", f"/{hook_token}"),
        IMAGE_AUTO_REFRESH="true",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
    )
    del env["ADMIN_SECRET_KEY"]
    marker = f"body-marker-{secrets.token_hex(8)}"
    answers: list[str] = []
    server = ReceiverProcess(env, tmp_path / "serve.log")
    try:
        server.wait_ready("/healthz")
        admin_token = server.admin_token(ttl=300)
        deadline = time.monotonic() + 60
        while not sink.received and time.monotonic() < deadline:
            time.sleep(0.1)
        with httpx.Client(base_url=server.base, timeout=60) as client:
            body = json.dumps({"zen": marker, "hook_id": 1}).encode()
            # Each configured secret verifies (200 pong); a wrong one is refused (401).
            for secret, status in [*((s, 200) for s in webhook_secrets), ("wrong-secret", 401)]:
                answer = client.post(
                    "/webhooks/github",
                    content=body,
                    headers=deliveries.headers(body, secret, event="ping", delivery="d-secret"),
                )
                assert answer.status_code == status, answer.text
                answers.append(answer.text)
            bearer = {"Authorization": f"Bearer {admin_token}"}
            for method, path in [
                ("POST", "/admin/workspace-images/refresh"),
                ("GET", "/admin/status"),
                ("GET", "/metrics"),
                ("GET", "/readyz"),
            ]:
                answer = client.request(method, path, headers=bearer)
                assert answer.status_code == 200, answer.text
                answers.append(answer.text)
            answers.append(client.get("/admin/status", headers={"Authorization": "Bearer x"}).text)
    finally:
        assert server.stop(timeout=60) == 0
    log = server.log()

    # The refresh really happened and was told.
    assert stack.client.api.inspect_container(one)["Image"] == v2.image_id
    assert sink.received, log
    note = sink.received[0]
    assert note["runtime"] == private.name
    assert note["recreated"] == [one]
    assert private.name in note["text"]
    # Every log line is one JSON object; the DEBUG level is really on.
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert {line["level"] for line in lines} >= {"debug", "info"}
    captured = "\n".join([log, *answers, json.dumps(sink.received)])
    for secret in [*webhook_secrets, admin_key, creds[1], hook_token, admin_token, marker]:
        assert secret not in captured
