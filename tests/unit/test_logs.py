"""JSON logs are one object per line, carrying `extra=` fields."""

from __future__ import annotations

import json
import logging

from receiver.logs import JsonFormatter


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
