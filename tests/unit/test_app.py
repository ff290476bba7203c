"""The HTTP surface: health, readiness and the admin refresh route, as the contract says."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from receiver.admin_auth import AdminTokens
from receiver.errors import EngineUnavailable
from tests.support import wiring
from tests.support.asgi import AppClient
from tests.support.fakes import FakeEngine, engine_with_stale_workspace

REF = "ghcr.io/org/workspace-template-a:latest"
OLD, NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32
DIGEST = "sha256:" + "2" * 64
PATH = "/admin/workspace-images/refresh"


@pytest.fixture
def engine() -> FakeEngine:
    return engine_with_stale_workspace()


def client_for(engine: FakeEngine, keys: tuple[str, ...] = ("key",)) -> AppClient:
    settings = dataclasses.replace(wiring.settings("a,b"), admin_keys=keys)
    return wiring.app_client(engine, settings)


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[AppClient]:
    client = client_for(engine)
    yield client
    client.close()


def auth(key: str = "key") -> dict[str, str]:
    return {"Authorization": f"Bearer {AdminTokens([key]).mint()}"}


def test_refresh_answers_the_per_runtime_result(client: AppClient, engine: FakeEngine) -> None:
    """A valid token and body refreshes and answers pulled/recreated/failed."""
    response = client.post(PATH, json={"runtimes": ["a"]}, headers=auth())
    assert response.status_code == 200
    assert response.json() == {
        "pulled": ["a"],
        "recreated": ["ws-1"],
        "unchanged": [],
        "failed": {},
        "digests": {"a": DIGEST},
        "repaired": {},
        "removed_images": [],
        "skipped": {},
        "deferred": {},
    }
    replacement = engine.by_name("ws-1")
    assert replacement is not None
    assert replacement["Image"] == NEW


def test_empty_body_refreshes_every_runtime_with_soft_fail(client: AppClient) -> None:
    """No body means all runtimes; a runtime whose pull fails still gives 200."""
    response = client.post(PATH, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["pulled"] == ["a"]
    assert list(body["failed"]) == ["b"]


def test_no_key_configured_refuses_with_503(engine: FakeEngine) -> None:
    """Without ADMIN_SECRET_KEY the route is closed, not open."""
    client = client_for(engine, keys=())
    response = client.post(PATH, headers=auth())
    client.close()
    assert response.status_code == 503
    assert engine.ops() == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic a2V5"}, auth("other-key")],
)
def test_missing_or_bad_token_is_401(
    client: AppClient, engine: FakeEngine, headers: dict[str, str]
) -> None:
    """Anything but a valid token is 401 with a Bearer challenge, and nothing is done."""
    response = client.post(PATH, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert engine.ops() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"runtimes": ["evil"]}', "unknown runtime(s): evil"),
        (b'{"runtimes": "a"}', "runtimes must be a list"),
        (b'{"runtimes": null}', "runtimes must be a list"),
        (b'{"force": "yes"}', "force must be true or false"),
        (b'{"forse": true}', "unknown field(s): forse"),
        (b"[1]", "must be a JSON object"),
        (b"{", "not valid JSON"),
    ],
)
def test_bad_bodies_are_400(
    client: AppClient, engine: FakeEngine, body: bytes, message: str
) -> None:
    """Malformed requests and unknown runtimes are 400 with a reason, and nothing is pulled."""
    response = client.post(PATH, content=body, headers=auth())
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert engine.ops() == []


def test_oversized_body_is_413(client: AppClient, engine: FakeEngine) -> None:
    """A body over the cap is refused, and the engine is never asked anything."""
    response = client.post(PATH, content=b" " * (64 * 1024 + 1), headers=auth())
    assert response.status_code == 413
    assert engine.calls == []


def test_listing_failure_is_500(client: AppClient, engine: FakeEngine) -> None:
    """When containers cannot be listed at all the answer is 500."""
    engine.fail["list"] = EngineUnavailable("cannot list containers: engine down")
    response = client.post(PATH, headers=auth())
    assert response.status_code == 500
    assert "engine down" in response.json()["error"]


def test_health_and_readiness(client: AppClient, engine: FakeEngine) -> None:
    """healthz is always up; readyz follows the engine."""
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    engine.fail["ping"] = EngineUnavailable("engine down")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert client.get("/healthz").status_code == 200


def test_wrong_method_is_405(client: AppClient) -> None:
    """GET on the refresh route is not allowed."""
    assert client.get(PATH).status_code == 405


def test_unknown_paths_and_methods_answer_json(client: AppClient) -> None:
    """404 and 405 come in the same JSON error shape as every other refusal."""
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    wrong = client.request("DELETE", "/healthz")
    assert wrong.status_code == 405
    assert wrong.json() == {"error": "Method Not Allowed"}
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}  # a set in Starlette


def test_the_openapi_description_is_served(client: AppClient) -> None:
    """GET /openapi.json describes every route the app serves."""
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/webhooks/github",
        "/admin/workspace-images/refresh",
        "/admin/status",
        "/healthz",
        "/readyz",
        "/metrics",
    }
