"""The registry client's protocol edges against httpx.MockTransport: challenge, tokens,
expiry, 401 refresh, multi-scope batching and its fallback, 429 + Retry-After, bad answers."""

from __future__ import annotations

import asyncio
import base64
import email.utils
from dataclasses import dataclass, field

import httpx
import pytest

from receiver.imageref import ImageRef, parse
from receiver.registry import (
    MANIFEST_TYPES,
    SCOPES_PER_TOKEN,
    RegistryClient,
    RegistryError,
    base_url,
    parse_challenge,
    retry_after,
)
from tests.support.fakes import FakeClock

pytestmark = pytest.mark.anyio

HOST = "ghcr.io"
REALM = "https://ghcr.io/token"
CHALLENGE = f'Bearer realm="{REALM}",service="ghcr.io",scope="repository:user/image:pull"'


def digest_of(repository: str) -> str:
    return "sha256:" + (f"{abs(hash(repository)):x}" * 64)[:64]


@dataclass
class FakeRegistry:
    """A GHCR-like registry and token service; tokens are `t<n>` naming their repositories."""

    clock: FakeClock
    users: dict[str, str] = field(default_factory=dict)
    multi_scope: bool = True
    expires_in: int | None = None
    token_lifetime: float = 60.0
    throttle: list[httpx.Response] = field(default_factory=list)
    head_override: httpx.Response | None = None
    token_override: httpx.Response | None = None
    log: list[str] = field(default_factory=list)
    issued: dict[str, tuple[set[str], float]] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.throttle:
            self.log.append(f"429 {request.method}")
            return self.throttle.pop(0)
        if request.url.host == HOST and request.url.path == "/token":
            return self._token(request)
        return self._head(request)

    def _token(self, request: httpx.Request) -> httpx.Response:
        scopes = request.url.params.get_list("scope")
        assert request.url.params.get("service") == "ghcr.io"
        self.log.append("GET /token " + " ".join(s.split(":")[1] for s in scopes))
        if self.token_override is not None:
            return self.token_override
        header = request.headers.get("authorization", "")
        if header:
            user, _, password = base64.b64decode(header.split()[1]).decode().partition(":")
            if self.users.get(user) != password:
                return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED"}]})
        granted = {s.split(":")[1] for s in scopes}
        if not self.multi_scope:
            granted = set(list(granted)[:1])
        name = f"t{len(self.issued)}"
        self.issued[name] = (granted, self.clock.now + self.token_lifetime)
        body: dict[str, object] = {"token": name}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)

    def _head(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "HEAD"
        assert request.headers["accept"] == MANIFEST_TYPES
        repository = request.url.path.removeprefix("/v2/").rsplit("/manifests/", 1)[0]
        self.log.append(f"HEAD {repository}")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        granted, expires = self.issued.get(token, (set(), 0.0))
        if repository not in granted or expires <= self.clock.now:
            return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})
        if self.head_override is not None:
            return self.head_override
        return httpx.Response(200, headers={"Docker-Content-Digest": digest_of(repository)})


@pytest.fixture
def clock() -> FakeClock:
    # Wall and monotonic time read the same here, so a Retry-After date maps to a pause.
    return FakeClock(start=1000.0, wall_start=1000.0)


@pytest.fixture
def registry(clock: FakeClock) -> FakeRegistry:
    return FakeRegistry(clock)


@pytest.fixture
def http(registry: FakeRegistry) -> httpx.AsyncClient:
    # A MockTransport holds no connections: nothing to close.
    return httpx.AsyncClient(transport=httpx.MockTransport(registry))


def client(
    http: httpx.AsyncClient, clock: FakeClock, credentials: tuple[str, str] | None = None
) -> RegistryClient:
    return RegistryClient(http, credentials, clock=clock)


@pytest.fixture
async def primed(http: httpx.AsyncClient, clock: FakeClock) -> RegistryClient:
    """A client that has looked up `a` once: it knows the challenge and holds a token."""
    c = client(http, clock)
    await c.digest(ref("a"))
    return c


def ref(name: str) -> ImageRef:
    return parse(f"{HOST}/org/{name}:latest")


async def test_challenge_token_head_then_the_cached_token(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """401 challenge → token → HEAD; the next lookup reuses the token (one request)."""
    c = client(http, clock)
    assert await c.digest(ref("a")) == digest_of("org/a")
    assert registry.log == ["HEAD org/a", "GET /token org/a", "HEAD org/a"]
    registry.log.clear()
    assert await c.digest(ref("a")) == digest_of("org/a")
    assert registry.log == ["HEAD org/a"]


async def test_a_token_without_expires_in_lives_60_seconds(
    primed: RegistryClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """GHCR omits expires_in: the client renews before 60 s are up, without a failed HEAD."""
    c = primed
    clock.now += 50
    registry.log.clear()
    await c.digest(ref("a"))
    assert registry.log == ["HEAD org/a"]
    clock.now += 6  # 56 s after issue: inside the renewal margin
    registry.log.clear()
    await c.digest(ref("a"))
    assert registry.log == ["GET /token org/a", "HEAD org/a"]


async def test_expires_in_is_honoured(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """A token service that says 300 s is believed: no renewal at 120 s."""
    registry.expires_in, registry.token_lifetime = 300, 300
    c = client(http, clock)
    await c.digest(ref("a"))
    clock.now += 120
    registry.log.clear()
    await c.digest(ref("a"))
    assert registry.log == ["HEAD org/a"]


async def test_a_token_the_registry_no_longer_accepts_is_renewed_on_401(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """The registry revoked or expired the token early: 401 → new token → retry, once."""
    registry.token_lifetime = 10
    c = client(http, clock)
    await c.digest(ref("a"))
    clock.now += 20
    registry.log.clear()
    assert await c.digest(ref("a")) == digest_of("org/a")
    assert registry.log == ["HEAD org/a", "GET /token org/a", "HEAD org/a"]


async def test_credentials_go_to_the_token_service_as_basic(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """Right credentials get a token; wrong ones are a clear 401 error naming the settings."""
    registry.users = {"bot": "pat"}
    assert await client(http, clock, ("bot", "pat")).digest(ref("a")) == digest_of("org/a")
    with pytest.raises(RegistryError, match="refused the credentials") as refused:
        await client(http, clock, ("bot", "wrong")).digest(ref("a"))
    assert refused.value.status == 401


async def test_many_runtimes_share_one_token_request(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """A first HEAD without a token learns the challenge, then one token request names every
    repository (scope repeated) and each costs one HEAD: R + 2 requests for R runtimes."""
    c = client(http, clock)
    refs = [ref(f"r{i}") for i in range(10)]
    found = await c.digests(refs)
    assert found == {r: digest_of(r.repository) for r in refs}
    tokens = [line for line in registry.log if line.startswith("GET")]
    assert tokens == ["GET /token " + " ".join(f"org/r{i}" for i in range(10))]
    assert registry.log[:2] == ["HEAD org/r0", tokens[0]]
    assert len(registry.log) == 10 + 2
    assert (c.counters.head, c.counters.token) == (11, 1)
    # The next tick within the token's life: one HEAD each, nothing else.
    registry.log.clear()
    await c.digests(refs)
    assert registry.log == [f"HEAD org/r{i}" for i in range(10)]


async def test_token_requests_are_chunked(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """Hundreds of repositories are asked for SCOPES_PER_TOKEN at a time."""
    c = client(http, clock)
    refs = [ref(f"r{i}") for i in range(2 * SCOPES_PER_TOKEN + 1)]
    found = await c.digests(refs)
    assert all(isinstance(value, str) for value in found.values())
    sizes = [len(line.split()) - 2 for line in registry.log if line.startswith("GET")]
    assert sorted(sizes) == [1, SCOPES_PER_TOKEN, SCOPES_PER_TOKEN]


async def test_a_registry_without_multi_scope_falls_back_per_repository(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """Only part of a batched grant is honoured: those lookups get their own token, and
    the client stops batching for that registry."""
    registry.multi_scope = False
    c = client(http, clock)
    refs = [ref(f"r{i}") for i in range(4)]
    assert all(isinstance(v, str) for v in (await c.digests(refs)).values())
    clock.now += 120  # every token expired
    registry.log.clear()
    assert all(isinstance(v, str) for v in (await c.digests(refs)).values())
    assert sorted(line for line in registry.log if line.startswith("GET")) == [
        f"GET /token org/r{i}" for i in range(4)
    ]


async def test_one_failure_is_returned_not_raised(
    primed: RegistryClient, registry: FakeRegistry
) -> None:
    """A 404 for one repository comes back as its error; the others still have digests."""
    c = primed
    registry.head_override = httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    found = await c.digests([ref("a"), ref("b")])
    assert all(isinstance(v, RegistryError) and v.status == 404 for v in found.values())


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200), "no usable Docker-Content-Digest"),
        (httpx.Response(200, headers={"Docker-Content-Digest": "md5:abc"}), "no usable"),
        (httpx.Response(500), "registry answered 500"),
        (httpx.Response(404), r"no such manifest \(404\)"),
    ],
)
async def test_bad_head_answers(
    primed: RegistryClient,
    registry: FakeRegistry,
    response: httpx.Response,
    message: str,
) -> None:
    """A missing or malformed digest header, a server error, a missing manifest: errors."""
    c = primed
    registry.head_override = response
    with pytest.raises(RegistryError, match=message):
        await c.digest(ref("a"))


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, content=b"<html>"), "sent no token"),
        (httpx.Response(200, json={"token": ""}), "sent no token"),
        (httpx.Response(200, json=["t"]), "sent no token"),
        (httpx.Response(503), "token service answered 503"),
    ],
)
async def test_bad_token_answers(
    http: httpx.AsyncClient,
    registry: FakeRegistry,
    clock: FakeClock,
    response: httpx.Response,
    message: str,
) -> None:
    """Non-JSON, empty or non-object token answers and server errors are RegistryErrors."""
    registry.token_override = response
    with pytest.raises(RegistryError, match=message):
        await client(http, clock).digest(ref("a"))


async def test_access_token_is_accepted_and_a_float_expiry_too(
    registry: FakeRegistry, clock: FakeClock
) -> None:
    """Docker Hub style `access_token` works; fractional expires_in is a number too."""

    def hub(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "t0", "expires_in": 300.5})
        return registry(request)

    registry.issued["t0"] = ({"org/a"}, 10_000.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(hub)) as http:
        assert await client(http, clock).digest(ref("a")) == digest_of("org/a")


async def test_401_without_a_bearer_challenge_is_an_error(clock: FakeClock) -> None:
    """Basic-only or challenge-less 401s are reported, not looped on."""

    def basic_only(_: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    async with httpx.AsyncClient(transport=httpx.MockTransport(basic_only)) as http:
        with pytest.raises(RegistryError, match="without a bearer challenge"):
            await client(http, clock).digest(ref("a"))


async def test_an_open_registry_needs_no_token(clock: FakeClock) -> None:
    """A registry that answers without a challenge is asked directly, and not probed again."""
    seen: list[str] = []

    def open_registry(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, headers={"Docker-Content-Digest": digest_of("x")})

    async with httpx.AsyncClient(transport=httpx.MockTransport(open_registry)) as http:
        c = client(http, clock)
        found = await c.digests([ref("a"), ref("b")])
        assert set(found.values()) == {digest_of("x")}
        assert len(seen) == 2
        assert c.counters.token == 0


async def test_a_slow_registry_holds_up_no_other(registry: FakeRegistry, clock: FakeClock) -> None:
    """Each registry is asked on its own: while one has not answered its first request,
    another's runtimes are probed, tokened and looked up."""
    released = asyncio.Event()
    slow = parse("slow.example/org/c:latest")

    async def two_hosts(request: httpx.Request) -> httpx.Response:
        if request.url.host == slow.registry:
            await released.wait()
            return httpx.Response(200, headers={"Docker-Content-Digest": digest_of("c")})
        return registry(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(two_hosts)) as http:
        lookup = asyncio.ensure_future(client(http, clock).digests([slow, ref("a"), ref("b")]))
        async with asyncio.timeout(5):
            while len(registry.log) < 4:
                await asyncio.sleep(0)
        assert registry.log == ["HEAD org/a", "GET /token org/a org/b", "HEAD org/a", "HEAD org/b"]
        assert not lookup.done()
        released.set()
        found = await lookup
    assert found == {
        slow: digest_of("c"),
        ref("a"): digest_of("org/a"),
        ref("b"): digest_of("org/b"),
    }


async def test_429_with_retry_after_pauses_then_retries(
    primed: RegistryClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """Retry-After in seconds or as an HTTP date is waited out, then the request repeats."""
    c = primed
    date = email.utils.formatdate(clock.now + 7, usegmt=True)
    registry.throttle = [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(429, headers={"Retry-After": date}),
    ]
    assert await c.digest(ref("a")) == digest_of("org/a")
    assert clock.sleeps[0] == pytest.approx(2)
    assert 5 <= clock.sleeps[1] <= 7
    assert c.counters.rate_limited == 2


async def test_429_without_retry_after_backs_off_then_gives_up(
    primed: RegistryClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """No Retry-After: 1 s, 2 s, then the lookup fails with status 429 for the next tick."""
    c = primed
    registry.throttle = [httpx.Response(429)] * 3
    with pytest.raises(RegistryError, match="rate limit") as limited:
        await c.digest(ref("a"))
    assert limited.value.status == 429
    assert clock.sleeps == [1.0, 2.0]


async def test_a_long_retry_after_gives_up_at_once(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """A Retry-After longer than a minute is not waited inside a tick."""
    c = client(http, clock)
    registry.throttle = [httpx.Response(429, headers={"Retry-After": "900"})]
    with pytest.raises(RegistryError, match="retry after 900 s"):
        await c.digest(ref("a"))
    assert clock.sleeps == []


async def test_a_429_pauses_the_whole_host(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """After one request is throttled, the others to that registry wait too."""
    c = client(http, clock)
    await c.digests([ref("a"), ref("b"), ref("c")])
    registry.throttle = [httpx.Response(429, headers={"Retry-After": "3"})]
    await c.digests([ref("a"), ref("b"), ref("c")])
    assert len(clock.sleeps) >= 1
    assert sum(clock.sleeps) == pytest.approx(3, abs=0.01)


async def test_transport_errors_are_registry_errors(clock: FakeClock) -> None:
    """A timeout or refused connection is a RegistryError naming what failed."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as http:
        with pytest.raises(RegistryError, match="registry unreachable: ConnectTimeout"):
            await client(http, clock).digest(ref("a"))


async def test_concurrent_lookups_of_one_tag_share_one_request(
    http: httpx.AsyncClient, registry: FakeRegistry, clock: FakeClock
) -> None:
    """Thirty deliveries resolving the same tag at once cost one lookup."""
    c = client(http, clock)
    found = await asyncio.gather(*(c.digest(ref("a")) for _ in range(30)))
    assert set(found) == {digest_of("org/a")}
    assert len(registry.log) == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (CHALLENGE, {"realm": REALM, "service": "ghcr.io", "scope": "repository:user/image:pull"}),
        ('bearer realm="https://r/t"', {"realm": "https://r/t"}),
        ('Bearer service="x"', None),
        ('Bearer realm=""', None),
        ('Basic realm="x"', None),
        ("", None),
    ],
)
def test_parse_challenge(header: str, expected: dict[str, str] | None) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert retry_after(value, 0.0) == expected


@pytest.mark.parametrize(
    ("registry", "url"),
    [
        ("ghcr.io", "https://ghcr.io"),
        ("docker.io", "https://registry-1.docker.io"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("registry.example:5000", "https://registry.example:5000"),
    ],
)
def test_base_url(registry: str, url: str) -> None:
    """Only loopback registries are reached over plain HTTP."""
    assert base_url(registry) == url


def test_base_url_of_an_insecure_registry() -> None:
    """INSECURE_REGISTRIES (lower-cased by the config) are reached over plain HTTP too."""
    insecure = frozenset({"registry.internal:5000"})
    assert base_url("Registry.Internal:5000", insecure) == "http://Registry.Internal:5000"
    assert base_url("registry.internal:5001", insecure) == "https://registry.internal:5001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
