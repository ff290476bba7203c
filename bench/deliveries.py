"""The benchmarks' view of tests/support/deliveries: runtimes' images, bodies and traffic mixes."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx

from tests.support import deliveries
from tests.support.deliveries import OWNER, headers, sign

__all__ = [
    "OWNER",
    "deliver",
    "headers",
    "image_template",
    "memory_mix",
    "new_secret",
    "package_body",
    "repository",
    "sign",
]


def package_body(runtime: str, digest: str, tag: str = "latest") -> bytes:
    """The `package` delivery GitHub sends for the tagged push of the runtime's image
    (~11 KB: the real multi-arch index capture with owner, name, tag and digest set)."""
    return deliveries.package_body(deliveries.template_name(runtime), digest, tag)


def image_template(registry: str) -> str:
    """IMAGE_TEMPLATE for runtimes whose images the benchmark publishes to `registry`."""
    return f"{registry}/{OWNER}/workspace-template-{{runtime}}:latest"


def repository(runtime: str) -> str:
    """The registry repository of a runtime's image."""
    return f"{OWNER}/{deliveries.template_name(runtime)}"


def deliver(base: str, body: bytes, secret: str, event: str = "package") -> httpx.Response:
    """POST one signed delivery to a server's /webhooks/github."""
    return deliveries.deliver(base, body, secret, event=event)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def memory_mix(runtime: str, digest: str, secret: str) -> list[dict[str, Any]]:
    """The mixed traffic of the memory benchmark, as (weight, headers, body) entries:
    mostly the unchanged-digest coalescing path, plus forged signatures, untagged platform
    manifests, unwatched packages, other events and pings."""
    unchanged = package_body(runtime, digest)
    untagged = package_body(runtime, "sha256:" + "1" * 64, tag="")
    unwatched = package_body("not-watched", digest)
    issues = json.dumps({"action": "opened", "issue": {"number": 1}}).encode()
    ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()

    def entry(weight: int, body: bytes, event: str, signer: str = secret) -> dict[str, Any]:
        hdrs = headers(body, signer, event=event)
        del hdrs["X-GitHub-Delivery"]  # the load generator makes one per request
        return {"weight": weight, "headers": hdrs, "body": body.decode()}

    return [
        entry(14, unchanged, "package"),
        entry(2, unchanged, "package", signer="not-the-secret"),
        entry(2, untagged, "package"),
        entry(1, unwatched, "package"),
        entry(1, issues, "issues"),
        entry(1, ping, "ping"),
    ]
