"""GitHub deliveries for tests, benchmarks and the demo: bodies shaped like real ones, signed.

Bodies start from the real multi-arch `package` capture in tests/fixtures/github, pointed
at the package, tag and digest a test needs. Signing is GitHub's: HMAC-SHA256 of the raw
body, hex, `sha256=` in front. This module imports neither pytest nor the receiver: the
flood runs it in a process of its own, as the receiver's client.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).parents[1] / "fixtures" / "github"
PACKAGE_FIXTURE = FIXTURES / "package.published.container.multiarch-index.json"
PING_FIXTURE = FIXTURES / "ping.json"
OWNER = "org"


def sign(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body` signed with `secret`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@functools.cache
def _package_fixture() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PACKAGE_FIXTURE.read_text())
    return loaded


def package_payload(
    name: str, digest: str, tag: str = "latest", *, owner: str = OWNER, pad: int = 0
) -> dict[str, Any]:
    """The real multi-arch delivery's payload, pointed at `owner/name:tag` at `digest`.

    An empty `tag` makes it the untagged delivery of one platform manifest. `pad` adds
    about that many bytes of extra JSON (a list of small objects, as a payload with many
    labels would carry), to make deliveries costlier to parse.
    """
    payload = copy.deepcopy(_package_fixture())
    package = payload["package"]
    package["name"], package["owner"]["login"] = name, owner
    version = package["package_version"]
    version["version"] = digest
    version["container_metadata"]["tag"] = {"name": tag, "digest": digest if tag else ""}
    if pad > 0:
        item = {"k": "label", "v": 1}
        per_item = len(json.dumps(item)) + 2
        payload["padding"] = [item] * max(1, pad // per_item)
    return payload


def package_body(
    name: str, digest: str, tag: str = "latest", *, owner: str = OWNER, pad: int = 0
) -> bytes:
    """`package_payload` as the raw JSON body GitHub sends."""
    return json.dumps(package_payload(name, digest, tag, owner=owner, pad=pad)).encode()


def template_name(runtime: str) -> str:
    """The package name of a runtime's template image."""
    return f"workspace-template-{runtime}"


def headers(
    body: bytes,
    secret: str,
    *,
    event: str = "package",
    delivery: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """The headers of a signed delivery (a fresh GUID unless `delivery` is given)."""
    return {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, secret),
        "User-Agent": "GitHub-Hookshot/test",
    }


def deliver(
    base: str,
    body: bytes,
    secret: str,
    *,
    event: str = "package",
    delivery: str | None = None,
    timeout: float = 30,
) -> httpx.Response:
    """POST one signed delivery to the `/webhooks/github` of the server at `base`."""
    return httpx.post(
        f"{base}/webhooks/github",
        content=body,
        headers=headers(body, secret, event=event, delivery=delivery),
        timeout=timeout,
    )


def deliver_publish(base: str, runtime: str, digest: str, secret: str) -> str:
    """Deliver the signed `package` delivery of `runtime`'s template tag at `digest`, as
    GitHub does after a push; what the receiver answered for that runtime."""
    answer = deliver(base, package_body(template_name(runtime), digest), secret)
    if answer.status_code != 202:
        raise AssertionError(f"delivery answered {answer.status_code}: {answer.text}")
    outcome: str = answer.json()["runtimes"][runtime]
    return outcome
