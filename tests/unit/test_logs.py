"""JSON logs are one object per line, carrying `extra=` fields."""

from __future__ import annotations

import json
import logging

from receiver.logs import JsonFormatter, setup


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
