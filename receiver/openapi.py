"""The OpenAPI 3.1 description of the HTTP surface, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

from . import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RESULT = {
    "type": "object",
    "required": ["pulled", "recreated", "unchanged", "failed", "digests"],
    "properties": {
        "pulled": _STRINGS,
        "recreated": _STRINGS,
        "unchanged": _STRINGS,
        "failed": _STRING_MAP,
        "digests": _STRING_MAP,
        "repaired": _STRING_MAP,
        "removed_images": _STRINGS,
        "skipped": {**_STRING_MAP, "description": "containers that opted out, with why"},
        "deferred": {
            **_STRING_MAP,
            "description": "containers left waiting (hook said not now, paused, canary "
            "not proven, digest quarantined), with why; tried again later",
        },
    },
}
_NULLABLE_STRING = {"type": ["string", "null"]}
_STATUS = {
    "type": "object",
    "properties": {
        "runtimes": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "image": {"type": "string"},
                    "seen": _NULLABLE_STRING,
                    "refreshing": {"type": "boolean"},
                    "quarantined": {
                        "type": ["object", "null"],
                        "description": "a digest held after its canary failed by the image",
                        "properties": {
                            "digest": {"type": "string"},
                            "reason": {"type": "string"},
                            "since": {"type": "string", "format": "date-time"},
                        },
                    },
                    "retry_at": {**_NULLABLE_STRING, "description": "the next retry"},
                    "available": {
                        **_NULLABLE_STRING,
                        "description": "notify mode: the newest digest reported",
                    },
                },
            },
        },
        "poller": {"type": "object"},
    },
}
_REFRESH_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "runtimes": _STRINGS,
        "recreate": {"type": "boolean", "default": True},
        "force": {"type": "boolean", "default": False},
    },
}
_WEBHOOK_ANSWER = {
    "type": "object",
    "properties": {
        "delivery": {"type": "string"},
        "event": {"type": "string"},
        "runtimes": {
            "type": "object",
            "description": "per runtime what the delivery started",
            "additionalProperties": {
                "type": "string",
                "enum": [
                    "scheduled",
                    "queued",
                    "coalesced",
                    "unchanged",
                    "resolving",
                    "quarantined",
                    "available",
                ],
            },
        },
        "ignored": {"type": "string"},
        "pong": {"type": "boolean"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "malformed request, unknown runtime or unknown field",
        401: "missing or invalid signature or admin token",
        405: "method not allowed",
        413: "body too large",
        415: "unsupported content type",
        500: "containers cannot be listed at all (engine unreachable)",
        503: "disabled: no secret or admin key configured",
    }
    return {str(status): _json(_ERROR, reasons[status]) for status in statuses}


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    bearer: list[dict[str, list[str]]] = [{"adminToken": []}]
    health = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "workspace image receiver",
            "version": __version__,
            "description": "Keeps workspace containers on the newest published template image.",
        },
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`workspace-image-receiver admin-token` (signed, expiring)",
                }
            }
        },
        "paths": {
            "/webhooks/github": {
                "post": {
                    "summary": "A GitHub webhook delivery (HMAC-SHA256 signed)",
                    "parameters": [
                        {
                            "name": "X-GitHub-Event",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "X-Hub-Signature-256",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                        },
                        {
                            "name": "X-GitHub-Delivery",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"payload": {"type": "string"}},
                                    "required": ["payload"],
                                }
                            },
                        },
                    },
                    "responses": {
                        "200": _json(_WEBHOOK_ANSWER, "ping answered"),
                        "202": _json(_WEBHOOK_ANSWER, "accepted or ignored; work follows"),
                        **_errors(400, 401, 405, 413, 415, 503),
                    },
                }
            },
            "/admin/workspace-images/refresh": {
                "post": {
                    "summary": "Refresh runtimes now and wait for the result",
                    "security": bearer,
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _REFRESH_REQUEST}},
                    },
                    "responses": {
                        "200": _json(
                            _RESULT, "done; failures are listed, per runtime or container"
                        ),
                        **_errors(400, 401, 405, 413, 500, 503),
                    },
                }
            },
            "/admin/status": {
                "get": {
                    "summary": "The digest book and the poller",
                    "security": bearer,
                    "responses": {
                        "200": _json(_STATUS, "per runtime state and poller ticks"),
                        **_errors(401, 405, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "responses": {"200": _json(health, "up"), **_errors(405)},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The Docker engine answers",
                    "responses": {
                        "200": _json(health, "ready"),
                        "503": _json(health, "engine unreachable"),
                        **_errors(405),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(405),
                    },
                }
            },
        },
    }
