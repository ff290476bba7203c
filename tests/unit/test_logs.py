"""JSON logs are one object per line, carrying `extra=` fields."""

from __future__ import annotations

import json
import logging

import pytest

from receiver.logs import JsonFormatter, TextFormatter, setup
from tests.support.fakes import engine_with_stale_workspace

from .test_webhooks import Registry, client_for, headers, idle, package_body


def test_json_lines_carry_message_level_and_extras() -> None:
    """Each record becomes one JSON object with its extra fields as keys."""
    record = logging.LogRecord(
        "receiver.refresh", logging.INFO, __file__, 1, "pulled %s", ("a",), None
    )
    record.runtime = "claude-code"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "pulled a"
    assert entry["level"] == "info"
    assert entry["logger"] == "receiver.refresh"
    assert entry["runtime"] == "claude-code"


def test_http_client_request_lines_are_never_logged() -> None:
    """httpx's per-request INFO lines carry full URLs (NOTIFY_URL is a credential) and would
    flood the log every poll tick: silenced at every level, DEBUG included."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for wanted in ("INFO", "DEBUG"):
            setup(wanted)
            assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(logging.NOTSET)


def test_refresh_lines_carry_the_delivery_and_the_runtime(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signed delivery's refresh logs, even from the swap's worker threads, carry the
    delivery id, the runtime and the container they are about."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup("INFO", "json")
    try:
        client = client_for(engine_with_stale_workspace(), Registry())
        body = package_body()
        assert (
            client.post("/webhooks/github", content=body, headers=headers(body)).status_code == 202
        )
        idle(client)
        client.close()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    pulled = [line for line in lines if "pulled" in line["msg"]]
    assert pulled
    assert (pulled[0]["delivery"], pulled[0]["runtime"]) == ("d-1", "a")
    swapped = [line for line in lines if line["msg"].startswith("runtime a: recreated ws-1")]
    assert swapped
    assert (swapped[0]["container"], swapped[0]["delivery"]) == ("ws-1", "d-1")


def test_text_lines_end_with_their_tags() -> None:
    """People get the same tags at the end of the line."""
    record = logging.LogRecord("receiver.swap", logging.INFO, __file__, 1, "done", (), None)
    record.runtime, record.container = "a", "ws-1"
    assert TextFormatter().format(record).endswith("receiver.swap: done [runtime=a container=ws-1]")
