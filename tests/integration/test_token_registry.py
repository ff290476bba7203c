"""The GHCR-like token flow on a real registry: challenge, token with Basic auth, bearer retry.

The registry is Debian's docker-registry with token auth; the token service is
tests/token_registry.py.  The receiver's own registry client and Docker adapter go through
the same flow as against ghcr.io.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Iterator

import docker.errors
import httpx
import pytest

from receiver import config
from receiver.cli import build_engine
from receiver.errors import PullError
from receiver.imageref import parse
from receiver.registry import MANIFEST_TYPES, RegistryClient, RegistryError, parse_challenge
from tests.support.stack import Published, Stack
from tests.support.token_registry import (
    DEFAULT_TOKEN_SECONDS,
    TokenRegistry,
    TokenRequest,
    decode_jwt,
)

READER = "reader"


@pytest.fixture(autouse=True)
def reset_token_registry(token_registry: TokenRegistry) -> Iterator[None]:
    """Each test starts with an empty token log and the default switches, and leaves them so."""
    token_registry.reset()
    yield
    token_registry.reset()


@pytest.fixture(scope="module")
def creds(token_registry: TokenRegistry) -> tuple[str, str]:
    return READER, token_registry.users[READER]


@pytest.fixture(scope="module")
def private(stack: Stack, token_registry: TokenRegistry, creds: tuple[str, str]) -> Published:
    """A private image, pushed by the engine as `reader`."""
    repo = stack.unique("private/app")
    return stack.publish(repo, version="v1", registry=token_registry.registry, auth=creds)


@pytest.fixture(scope="module")
def other(stack: Stack, token_registry: TokenRegistry, creds: tuple[str, str]) -> Published:
    """A second private image, in another repository."""
    repo = stack.unique("private/other")
    return stack.publish(repo, version="v2", registry=token_registry.registry, auth=creds)


Both = tuple[Published, Published]


@pytest.fixture(scope="module")
def both(private: Published, other: Published) -> Both:
    """Two private images in two repositories."""
    return private, other


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def repository(published: Published) -> str:
    return parse(published.ref).repository


def manifest_url(published: Published) -> str:
    ref = parse(published.ref)
    return f"http://{ref.registry}/v2/{ref.repository}/manifests/{ref.pull_tag}"


def head(http: httpx.Client, published: Published, token: str | None = None) -> httpx.Response:
    headers = {"Accept": MANIFEST_TYPES}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return http.head(manifest_url(published), headers=headers)


def fetch_token(
    http: httpx.Client,
    registry: TokenRegistry,
    *scopes: str,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    # Repeated `scope` parameters, one per repository, as the token spec has it.
    params: dict[str, str | list[str]] = {"service": registry.service, "scope": list(scopes)}
    return http.get(registry.realm, params=params, auth=auth)


def pull_scope(published: Published) -> str:
    return f"repository:{repository(published)}:pull"


# -- the raw flow ----------------------------------------------------------------------


def test_anonymous_head_gets_a_bearer_challenge(
    http: httpx.Client, token_registry: TokenRegistry, private: Published
) -> None:
    response = head(http, private)

    assert response.status_code == 401
    challenge = parse_challenge(response.headers["www-authenticate"])
    assert challenge == {
        "realm": token_registry.realm,
        "service": token_registry.service,
        "scope": pull_scope(private),
    }


def test_anonymous_token_grants_nothing_on_a_private_repository(
    http: httpx.Client, token_registry: TokenRegistry, private: Published
) -> None:
    answer = fetch_token(http, token_registry, pull_scope(private))

    assert answer.status_code == 200, "a partial (here: empty) grant is not an error"
    token = answer.json()["token"]
    assert decode_jwt(token)[1]["access"] == []
    assert head(http, private, token).status_code == 401
    assert token_registry.token_requests() == [
        TokenRequest(None, (pull_scope(private),), token_registry.service, None, 200, ())
    ]


def test_wrong_password_is_refused_by_the_token_service(
    http: httpx.Client, token_registry: TokenRegistry, private: Published
) -> None:
    answer = fetch_token(http, token_registry, pull_scope(private), auth=(READER, "wrong"))

    assert answer.status_code == 401
    assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert "token" not in answer.json()
    [logged] = token_registry.token_requests()
    assert (logged.user, logged.status) == (READER, 401)


def test_right_credentials_give_a_token_that_reads_the_manifest(
    http: httpx.Client,
    token_registry: TokenRegistry,
    private: Published,
    creds: tuple[str, str],
) -> None:
    answer = fetch_token(http, token_registry, pull_scope(private), auth=creds)

    assert answer.status_code == 200
    body = answer.json()
    assert body["access_token"] == body["token"]
    assert "expires_in" not in body, "like GHCR, no expires_in unless configured"
    datetime.datetime.fromisoformat(body["issued_at"])
    header, claims = decode_jwt(body["token"])
    assert header["alg"] == "ES256"
    assert len(header["x5c"]) == 1
    assert claims["iss"] == token_registry.issuer
    assert claims["aud"] == token_registry.service
    assert claims["sub"] == READER
    assert claims["exp"] - claims["iat"] == DEFAULT_TOKEN_SECONDS
    assert claims["access"] == [
        {"type": "repository", "name": repository(private), "actions": ["pull"]}
    ]

    response = head(http, private, body["token"])
    assert response.status_code == 200
    assert response.headers["docker-content-digest"] == private.digest


def test_expires_in_is_reported_and_signed_when_configured(
    http: httpx.Client,
    token_registry: TokenRegistry,
    private: Published,
    creds: tuple[str, str],
) -> None:
    token_registry.expires_in = 300

    body = fetch_token(http, token_registry, pull_scope(private), auth=creds).json()

    assert body["expires_in"] == 300
    claims = decode_jwt(body["token"])[1]
    assert claims["exp"] - claims["iat"] == 300


def test_one_token_request_covers_two_repositories(
    http: httpx.Client, token_registry: TokenRegistry, creds: tuple[str, str], both: Both
) -> None:
    private, other = both
    scopes = (pull_scope(private), pull_scope(other))
    answer = fetch_token(http, token_registry, *scopes, auth=creds)

    assert answer.status_code == 200
    token = answer.json()["token"]
    assert [a["name"] for a in decode_jwt(token)[1]["access"]] == [
        repository(private),
        repository(other),
    ]
    assert head(http, private, token).headers["docker-content-digest"] == private.digest
    assert head(http, other, token).headers["docker-content-digest"] == other.digest
    [logged] = token_registry.token_requests()
    assert logged.scopes == scopes
    assert logged.granted == scopes


def test_token_for_one_repository_does_not_open_another(
    http: httpx.Client, token_registry: TokenRegistry, creds: tuple[str, str], both: Both
) -> None:
    private, other = both
    token = fetch_token(http, token_registry, pull_scope(private), auth=creds).json()["token"]

    assert head(http, private, token).status_code == 200
    assert head(http, other, token).status_code == 401


def test_public_prefix_is_readable_anonymously_but_not_writable(
    http: httpx.Client,
    stack: Stack,
    token_registry: TokenRegistry,
    creds: tuple[str, str],
) -> None:
    public = stack.publish(
        stack.unique("public/app"), version="v1", registry=token_registry.registry, auth=creds
    )
    scope = f"repository:{repository(public)}:pull,push"

    token = fetch_token(http, token_registry, scope).json()["token"]

    assert decode_jwt(token)[1]["access"] == [
        {"type": "repository", "name": repository(public), "actions": ["pull"]}
    ]
    assert head(http, public, token).headers["docker-content-digest"] == public.digest


def test_stale_token_is_refused_and_a_fresh_one_works(
    http: httpx.Client,
    token_registry: TokenRegistry,
    private: Published,
    creds: tuple[str, str],
) -> None:
    # distribution accepts a token up to 60 s past `exp`; issue one that expired long ago.
    token_registry.clock_offset = -3600
    stale = fetch_token(http, token_registry, pull_scope(private), auth=creds).json()["token"]
    token_registry.clock_offset = 0
    fresh = fetch_token(http, token_registry, pull_scope(private), auth=creds).json()["token"]

    refused = head(http, private, stale)
    assert refused.status_code == 401
    assert parse_challenge(refused.headers["www-authenticate"]) is not None, (
        "a refused token gets a new challenge, so clients can fetch another"
    )
    assert head(http, private, fresh).status_code == 200


def test_token_service_outage_answers_the_configured_status(
    http: httpx.Client, token_registry: TokenRegistry, private: Published, creds: tuple[str, str]
) -> None:
    token_registry.fail_with = 503

    answer = fetch_token(http, token_registry, pull_scope(private), auth=creds)

    assert answer.status_code == 503
    assert [r.status for r in token_registry.token_requests()] == [503]


# -- the receiver's registry client ----------------------------------------------------


def client_digest(ref: str, credentials: tuple[str, str] | None) -> str:
    async def run() -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            return await RegistryClient(http, credentials=credentials).digest(parse(ref))

    return asyncio.run(run())


def test_registry_client_reads_a_private_digest_with_credentials(
    token_registry: TokenRegistry, private: Published, creds: tuple[str, str]
) -> None:
    assert client_digest(private.ref, creds) == private.digest
    [logged] = token_registry.token_requests()
    assert (logged.user, logged.scopes, logged.status) == (READER, (pull_scope(private),), 200)


def test_registry_client_without_credentials_is_refused(
    token_registry: TokenRegistry, private: Published
) -> None:
    with pytest.raises(RegistryError) as caught:
        client_digest(private.ref, None)

    assert caught.value.status == 401
    assert [(r.user, r.status) for r in token_registry.token_requests()] == [(None, 200)]


def test_registry_client_with_a_wrong_password_is_refused(
    token_registry: TokenRegistry, private: Published
) -> None:
    with pytest.raises(RegistryError) as caught:
        client_digest(private.ref, (READER, "wrong"))

    assert caught.value.status == 401
    assert [(r.user, r.status) for r in token_registry.token_requests()] == [(READER, 401)]


def test_registry_client_replaces_a_stale_cached_token(
    token_registry: TokenRegistry, private: Published, creds: tuple[str, str]
) -> None:
    """Without expires_in the client trusts a token for about a minute; a 401 ends that early."""

    async def run() -> tuple[RegistryError, str]:
        async with httpx.AsyncClient(timeout=10) as http:
            client = RegistryClient(http, credentials=creds)
            token_registry.clock_offset = -3600
            with pytest.raises(RegistryError) as caught:
                await client.digest(parse(private.ref))
            token_registry.clock_offset = 0
            return caught.value, await client.digest(parse(private.ref))

    error, digest = asyncio.run(run())

    assert error.status == 401, "a stale token is refused by the registry"
    assert digest == private.digest, "the cached stale token was replaced after the 401"
    assert [r.status for r in token_registry.token_requests()] == [200, 200]


# -- the Docker engine, through the receiver's adapter ---------------------------------


def engine_settings(
    stack: Stack, template: str, runtime: str, creds: tuple[str, str] | None
) -> config.Config:
    env = {"RUNTIMES": runtime, "IMAGE_TEMPLATE": template, "DOCKER_HOST": stack.docker_host}
    if creds is not None:
        env |= {"GHCR_USER": creds[0], "GHCR_TOKEN": creds[1]}
    return config.load(env)


@pytest.fixture(scope="module")
def runtime_image(
    stack: Stack, token_registry: TokenRegistry, creds: tuple[str, str]
) -> tuple[str, str, Published]:
    """A runtime, the IMAGE_TEMPLATE naming it on the token registry, and its image."""
    runtime = stack.unique("rt")
    template = f"{token_registry.registry}/private/workspace-template-{{runtime}}:latest"
    published = stack.publish(
        f"private/workspace-template-{runtime}",
        version="v1",
        registry=token_registry.registry,
        auth=creds,
    )
    return runtime, template, published


def test_engine_pulls_a_private_image_with_credentials(
    stack: Stack,
    token_registry: TokenRegistry,
    runtime_image: tuple[str, str, Published],
    creds: tuple[str, str],
) -> None:
    runtime, template, published = runtime_image
    settings = engine_settings(stack, template, runtime, creds)
    engine = build_engine(settings)
    try:
        image = engine.pull(settings.image_for(runtime))
    finally:
        engine.close()
        with contextlib.suppress(docker.errors.ImageNotFound):
            stack.client.api.remove_image(published.ref)

    assert image.id == published.image_id
    assert f"{published.ref.rsplit(':', 1)[0]}@{published.digest}" in image.repo_digests
    [logged] = token_registry.token_requests()
    assert (logged.user, logged.status) == (READER, 200)
    assert logged.granted == (f"repository:{parse(published.ref).repository}:pull",)
    # How the engine asks differs: containerd's resolver sends an OAuth2 password grant
    # (POST, no account); the graph-driver engines a GET with Basic auth and account=.
    if stack.containerd_store:
        assert (logged.method, logged.account) == ("POST", None)
    else:
        assert (logged.method, logged.account) == ("GET", READER)


@pytest.mark.parametrize(
    "wrong",
    [
        # The registry refuses the anonymous token, which carries no access.
        None,
        # The token service refuses the password.
        (READER, "wrong"),
    ],
    ids=["anonymous", "bad-password"],
)
def test_engine_pull_without_the_right_credentials_fails(
    stack: Stack,
    token_registry: TokenRegistry,
    runtime_image: tuple[str, str, Published],
    wrong: tuple[str, str] | None,
) -> None:
    runtime, template, published = runtime_image
    settings = engine_settings(stack, template, runtime, wrong)
    engine = build_engine(settings)
    try:
        with pytest.raises(PullError):
            engine.pull(settings.image_for(runtime))
    finally:
        engine.close()

    assert not stack.image_present(published.ref)
    asked = [(r.method, r.status) for r in token_registry.token_requests()]
    if wrong is None:
        assert asked == [("GET", 200)]
    elif stack.containerd_store:
        # The refused password grant is tried again as a GET with Basic auth.
        assert asked == [("POST", 401), ("GET", 401)]
    else:
        assert asked == [("GET", 401)]
