"""The webhook route: statuses at the edge, an answer before the work, HEAD for other tags."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest

from tests.support import deliveries, wiring
from tests.support.asgi import AppClient
from tests.support.fakes import FakeEngine, engine_with_stale_workspace

FIXTURES = deliveries.FIXTURES
REF = "ghcr.io/org/workspace-template-a:latest"
OLD, NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32
DIGEST = "sha256:" + "2" * 64
SECRET = "s3cret"


def package_body(tag: str = "latest", digest: str = DIGEST, owner: str = "Org") -> bytes:
    return deliveries.package_body("workspace-template-a", digest, tag, owner=owner)


def headers(body: bytes, event: str = "package", secret: str = SECRET) -> dict[str, str]:
    return deliveries.headers(body, secret, event=event, delivery="d-1")


class Registry:
    """A registry behind httpx.MockTransport: challenge, token, HEAD; records requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("authorization") != "Bearer t":
            challenge = 'Bearer realm="https://ghcr.io/token",service="ghcr.io"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})


@pytest.fixture
def engine() -> FakeEngine:
    return engine_with_stale_workspace()


def client_for(engine: FakeEngine, registry: Registry, secrets: str = SECRET) -> AppClient:
    settings = wiring.settings(GITHUB_WEBHOOK_SECRET=secrets, WEBHOOK_MAX_BODY="20000")
    return wiring.app_client(engine, settings, registry=registry)


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def client(engine: FakeEngine, registry: Registry) -> Iterator[AppClient]:
    client = client_for(engine, registry)
    yield client
    client.close()


def idle(client: AppClient) -> None:
    """Wait until the refreshes the answers scheduled are done."""
    app: Any = client.app
    client.run(app.state.coordinator.idle())


def test_signed_delivery_answers_202_then_refreshes(client: AppClient, engine: FakeEngine) -> None:
    """A delivery for the watched tag is scheduled at once; the swap happens after the answer."""
    body = package_body()
    response = client.post("/webhooks/github", content=body, headers=headers(body))
    assert response.status_code == 202
    assert response.json() == {
        "delivery": "d-1",
        "event": "package",
        "runtimes": {"a": "scheduled"},
    }
    idle(client)
    replacement = engine.by_name("ws-1")
    assert replacement is not None
    assert replacement["Image"] == NEW
    again = client.post("/webhooks/github", content=body, headers=headers(body))
    assert again.json()["runtimes"] == {"a": "unchanged"}


def test_another_tag_resolves_the_watched_tag_with_a_head(
    client: AppClient, engine: FakeEngine, registry: Registry
) -> None:
    """A delivery for another tag asks the registry (challenge, token, HEAD) for `latest`."""
    body = package_body(tag="sha-0e2a89b", digest="sha256:" + "9" * 64)
    response = client.post("/webhooks/github", content=body, headers=headers(body))
    assert response.json()["runtimes"] == {"a": "resolving"}
    idle(client)
    assert registry.requests == [
        "HEAD /v2/org/workspace-template-a/manifests/latest",
        "GET /token",
        "HEAD /v2/org/workspace-template-a/manifests/latest",
    ]
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "hdrs", "status"),
    [
        (b"{}", {"Content-Type": "application/json", "X-GitHub-Event": "ping"}, 401),
        (b"{}", headers(b"{}", secret="wrong"), 401),
        (b"{", headers(b"{"), 400),
        (b"x" * 20001, headers(b"x" * 20001), 413),
        (b"{}", {**headers(b"{}"), "Content-Type": "text/plain"}, 415),
    ],
)
def test_edge_statuses(
    client: AppClient, engine: FakeEngine, body: bytes, hdrs: dict[str, str], status: int
) -> None:
    """Unsigned, forged, malformed, oversized and wrongly typed deliveries are refused."""
    assert client.post("/webhooks/github", content=body, headers=hdrs).status_code == status
    idle(client)
    assert engine.ops() == []


def test_ping_is_200_and_other_events_202_ignored(client: AppClient) -> None:
    """ping answers 200; an event we do not handle is acknowledged and ignored."""
    ping = json.dumps({"zen": "Keep it simple.", "hook_id": 1, "hook": {}}).encode()
    assert (
        client.post("/webhooks/github", content=ping, headers=headers(ping, "ping")).status_code
        == 200
    )
    push = b'{"ref": "refs/heads/main"}'
    response = client.post("/webhooks/github", content=push, headers=headers(push, "push"))
    assert response.status_code == 202
    assert "not handled" in response.json()["ignored"]


def test_no_secret_configured_refuses_everything(engine: FakeEngine, registry: Registry) -> None:
    """Without GITHUB_WEBHOOK_SECRET every delivery is 503, signed or not."""
    closed = client_for(engine, registry, secrets="")
    body = package_body()
    response = closed.post("/webhooks/github", content=body, headers=headers(body))
    closed.close()
    assert response.status_code == 503
    assert engine.ops() == []


def rotated_client(engine: FakeEngine, registry: Registry) -> AppClient:
    """A receiver holding the new and the old secret while a rotation is under way."""
    return client_for(engine, registry, secrets="n3w-secret,\ns3cret")


@pytest.mark.parametrize("secret", ["n3w-secret", SECRET])
def test_a_delivery_signed_with_either_rotated_secret_is_accepted(
    engine: FakeEngine, registry: Registry, secret: str
) -> None:
    """During a rotation both the new and the old secret verify."""
    rotating = rotated_client(engine, registry)
    body = package_body()
    response = rotating.post("/webhooks/github", content=body, headers=headers(body, secret=secret))
    idle(rotating)
    rotating.close()
    assert response.status_code == 202
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]


def test_form_encoded_delivery_is_verified_over_the_raw_body(
    client: AppClient, engine: FakeEngine
) -> None:
    """`application/x-www-form-urlencoded` hooks carry the JSON in `payload=`; the HMAC is of
    the encoded body as sent."""
    form = urlencode({"payload": package_body().decode()}).encode()
    hdrs = {**headers(form), "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post("/webhooks/github", content=form, headers=hdrs)
    assert response.status_code == 202
    assert response.json()["runtimes"] == {"a": "scheduled"}
    idle(client)
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]


@pytest.mark.parametrize(("owner", "matches"), [("ORG", True), ("org", True), ("other", False)])
def test_package_owner_matches_case_insensitively_and_only_the_watched_owner(
    client: AppClient, engine: FakeEngine, owner: str, matches: bool
) -> None:
    """GitHub keeps the owner's case; GHCR paths are lower case. A same-named package of
    another owner is not ours."""
    body = package_body(owner=owner)
    answer = client.post("/webhooks/github", content=body, headers=headers(body)).json()
    idle(client)
    if matches:
        assert answer["runtimes"] == {"a": "scheduled"}
        assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]
    else:
        assert "runtimes" not in answer
        assert answer["ignored"] == "package other/workspace-template-a is not watched"
        assert engine.ops() == []


def dispatch_body(
    client_payload: dict[str, Any], action: str = "template-image-published"
) -> bytes:
    payload: dict[str, Any] = json.loads((FIXTURES / "repository_dispatch.json").read_text())
    payload["action"], payload["client_payload"] = action, client_payload
    return json.dumps(payload).encode()


def test_dispatch_with_a_digest_schedules_directly(
    client: AppClient, engine: FakeEngine, registry: Registry
) -> None:
    """`client_payload.runtime` + `digest`: no registry lookup, the refresh starts at once."""
    body = dispatch_body({"runtime": "a", "digest": DIGEST})
    response = client.post(
        "/webhooks/github", content=body, headers=headers(body, "repository_dispatch")
    )
    assert response.status_code == 202
    assert response.json()["runtimes"] == {"a": "scheduled"}
    idle(client)
    assert registry.requests == []
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]


def test_dispatch_without_a_digest_resolves_it(
    client: AppClient, engine: FakeEngine, registry: Registry
) -> None:
    """`client_payload.runtimes` without a digest: the tag's digest comes from a HEAD."""
    body = dispatch_body({"runtimes": ["a", "not-watched"]})
    response = client.post(
        "/webhooks/github", content=body, headers=headers(body, "repository_dispatch")
    )
    assert response.json()["runtimes"] == {"a": "resolving"}
    idle(client)
    assert registry.requests[-1] == "HEAD /v2/org/workspace-template-a/manifests/latest"
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]


@pytest.mark.parametrize(
    ("client_payload", "action", "status"),
    [
        ({"runtime": "a", "digest": "sha256:short"}, "template-image-published", 400),
        ({"runtime": "a"}, "some-other-type", 202),
    ],
)
def test_dispatch_refusals(
    client: AppClient,
    engine: FakeEngine,
    client_payload: dict[str, Any],
    action: str,
    status: int,
) -> None:
    """A malformed digest is the sender's mistake (400); an unaccepted type is ignored."""
    body = dispatch_body(client_payload, action)
    response = client.post(
        "/webhooks/github", content=body, headers=headers(body, "repository_dispatch")
    )
    idle(client)
    assert response.status_code == status
    assert engine.ops() == []


def test_an_unsigned_delivery_is_refused_before_its_body_is_read(client: AppClient) -> None:
    """Without a signature header there is nothing to verify: 401 at once, body untouched."""
    consumed: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            consumed.append(1)
            yield b"x" * 1024

    response = client.post(
        "/webhooks/github",
        content=body(),
        headers={"Content-Type": "application/json", "X-GitHub-Event": "package"},
    )
    assert response.status_code == 401
    assert len(consumed) <= 1  # at most what the transport buffers before the app answers


def _with_lone_surrogates(value: Any) -> Any:
    """`value` with a lone surrogate (valid JSON as an escape) appended to every string."""
    if isinstance(value, str):
        return value + "\ud800"
    if isinstance(value, list):
        return [_with_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {key: _with_lone_surrogates(item) for key, item in value.items()}
    return value


def test_valid_json_the_fast_decoder_refuses_is_read_all_the_same(
    client: AppClient, engine: FakeEngine
) -> None:
    """A lone surrogate escape in user-written text and a number beyond float range are
    valid JSON that msgspec refuses: the delivery is read by the standard library instead
    and triggers, since GitHub never redelivers one refused."""
    payload = deliveries.package_payload("workspace-template-a", DIGEST, owner="Org")
    payload["package"]["description"] = "notes \ud800 written by hand"
    body = json.dumps(payload)[:-1].encode() + b', "size": 1e999}'
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(body)
    response = client.post("/webhooks/github", content=body, headers=headers(body))
    assert response.status_code == 202
    assert response.json()["runtimes"] == {"a": "scheduled"}
    idle(client)
    assert engine.by_name("ws-1")["Image"] == NEW  # type: ignore[index]


@pytest.mark.parametrize("event", ["package", "repository_dispatch", "ping", "push"])
def test_lone_surrogates_in_every_string_are_answered(
    client: AppClient, engine: FakeEngine, event: str
) -> None:
    """Whatever strings a delivery carries, its answer is JSON and nothing is replaced."""
    source = package_body() if event == "package" else dispatch_body({"runtime": "a"})
    body = json.dumps(_with_lone_surrogates(json.loads(source))).encode()
    response = client.post("/webhooks/github", content=body, headers=headers(body, event))
    idle(client)
    assert response.status_code in (200, 202), response.text
    assert isinstance(response.json(), dict)
    assert engine.ops() == []
