"""Logging set-up: plain text for people, one JSON object per line for collectors."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# What a log line is about (delivery id, runtime, container), set around the work and
# copied into every record made meanwhile, in this task or thread and the tasks it starts.
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "receiver_log_context", default=types.MappingProxyType({})
)
CONTEXT_KEYS = ("delivery", "runtime", "container")


Tag = contextvars.Token[Mapping[str, str]]


def tag(**fields: str) -> Tag:
    """Tag every log record made from now on, here and in the tasks and threads started
    meanwhile, with `fields`, until `untag` gets the token this returns. (The webhook route
    tags each delivery this way: a `with` block costs twice as much.)"""
    outer = _CONTEXT.get()
    return _CONTEXT.set({**outer, **fields} if outer else fields)


def untag(token: Tag) -> None:
    """End what `tag` began."""
    _CONTEXT.reset(token)


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """Tag every log record made inside the `with` block with `fields`."""
    token = tag(**fields)
    try:
        yield
    finally:
        untag(token)


def current_context() -> Mapping[str, str]:
    """The fields in force here (to carry into a thread pool)."""
    return _CONTEXT.get()


class ContextFilter(logging.Filter):
    """Adds the context's fields to each record (without overriding explicit extras)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """`time level logger: message [delivery=… runtime=…]` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_KEYS if hasattr(record, key)
        )
        return f"{line} [{tags}]" if tags else line


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object, with any `extra=` fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request's full URL at INFO: hundreds per poll tick, and NOTIFY_URL
    # (an incoming-webhook URL is a credential) among them. Never at any level.
    logging.getLogger("httpx").setLevel(logging.WARNING)
