"""An OCI registry client for tag digests: bearer-challenge auth, batched tokens, rate limits.

The flow is the distribution token spec's, as GHCR runs it: an anonymous request gets
401 with a `Bearer realm=…,service=…` challenge; the token service (HTTP Basic with
GHCR_USER/GHCR_TOKEN, anonymous otherwise) answers `{"token": …}`; requests carry it
until it expires (`expires_in`, 60 s when absent) or a 401 says it no longer works.
For many runtimes on one registry, one token request names every repository (the
`scope` parameter repeated) so a poll tick costs about one HEAD per runtime; a registry
that grants only part of such a request is asked per repository from then on.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from .clock import SYSTEM, Clock
from .errors import Cause, ReceiverError
from .imageref import ImageRef, is_digest

# With the index types first, a multi-arch tag answers with the index digest, which is what
# the engine stores in RepoDigests (GHCR even answers 404 to an index without them).
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DEFAULT_TOKEN_SECONDS = 60  # the token spec's default when expires_in is absent (GHCR omits it)
TOKEN_MARGIN_SECONDS = 5  # renew this early so a token never expires between check and use
SCOPES_PER_TOKEN = 50  # repositories named in one token request (keeps the URL a few KB)
# Registry requests in flight at once, across all runtimes: enough for a tick of 100
# runtimes to take one round trip of HEADs (over one HTTP/2 connection where the registry
# speaks it, as GHCR does).
CONCURRENCY = 100
ATTEMPTS = 3  # tries of one request that keeps answering 429
MAX_RETRY_WAIT = 60.0  # a longer Retry-After gives up until the next tick instead
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# More idle HTTP/1.1 connections than this cost more than they save: httpx's pool scans
# every connection for every request it places (measured: 50 kept alive made a 100-runtime
# tick take 0.7 s of CPU, against 0.13 s with 20).
KEEPALIVE_CONNECTIONS = 20
_HUB_API = "registry-1.docker.io"
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")


def http_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The HTTP client for registries (and notifications): HTTP/2 where the server offers it
    (GHCR does), so a tick's HEADs share one connection and one TLS handshake instead of a
    hundred; HTTP/1.1 elsewhere. `transport` replaces the network (tests)."""
    return httpx.AsyncClient(
        timeout=TIMEOUT,
        http2=True,
        limits=httpx.Limits(
            max_connections=CONCURRENCY, max_keepalive_connections=KEEPALIVE_CONNECTIONS
        ),
        transport=transport,
    )


class RegistryError(ReceiverError):
    """The registry could not tell a digest; `status` is its HTTP status when it answered.

    Unreachable (no status), rate limited (429) or failing (5xx) is transient; any other
    answer (401, 404, a reply without a digest) is not known to pass by itself.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        transient = status is None or status == 429 or status >= 500
        super().__init__(message, cause=Cause.TRANSIENT if transient else Cause.OTHER)
        self.status = status


def base_url(registry: str, insecure: Collection[str] = ()) -> str:
    """The API base of a registry host; loopback registries and the `insecure` ones
    (INSECURE_REGISTRIES, lower-case host:port) speak plain HTTP, as Docker allows."""
    host = _HUB_API if registry == "docker.io" else registry
    plain = _LOOPBACK.match(host) or host.lower() in insecure
    return f"{'http' if plain else 'https'}://{host}"


def parse_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `Bearer realm=…,service=…,scope=…` challenge, or None."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = dict(_PARAM.findall(params))
    return found if found.get("realm") else None


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    return max(seconds, 0.0) if seconds == seconds else None  # NaN is no answer


@dataclass
class _Token:
    value: str
    expires: float
    batched: bool


@dataclass
class _Host:
    """What the client has learnt about one registry host."""

    challenge: dict[str, str] | None = None
    probed: bool = False  # an answer came back, so `challenge` None means no auth needed
    multi_scope: bool = True
    not_before: float = 0.0
    tokens: dict[str, _Token] = field(default_factory=dict)


@dataclass
class Counters:
    """Requests sent, by kind (benchmarks and the status page read these)."""

    head: int = 0
    token: int = 0
    rate_limited: int = 0


class RegistryClient:
    """Tells the digest a tag points at, for one image or for many at once."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: tuple[str, str] | None = None,
        *,
        clock: Clock = SYSTEM,
        concurrency: int = CONCURRENCY,
        insecure: Collection[str] = (),
    ) -> None:
        self.http = http
        self.credentials = credentials
        self.insecure = frozenset(insecure)
        self.clock = clock
        self.counters = Counters()
        self._hosts: dict[str, _Host] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._lookups: dict[ImageRef, asyncio.Future[str]] = {}

    async def digest(self, ref: ImageRef) -> str:
        """The digest the registry serves for `ref`'s tag; concurrent asks share one lookup."""
        running = self._lookups.get(ref)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.ensure_future(self._lookup(ref))
        self._lookups[ref] = task
        task.add_done_callback(lambda _: self._lookups.pop(ref, None))
        return await asyncio.shield(task)

    async def digests(self, refs: Iterable[ImageRef]) -> dict[ImageRef, str | RegistryError]:
        """Digests of many tags: one token request per registry (where it allows), HEADs in
        parallel up to the concurrency bound, each registry apart (a slow one holds up no
        other). Each failure is returned, never raised."""
        wanted = list(dict.fromkeys(refs))
        results: dict[ImageRef, str | RegistryError] = {}

        async def one(ref: ImageRef) -> None:
            try:
                results[ref] = await self.digest(ref)
            except RegistryError as exc:
                results[ref] = exc

        async def on_host(registry: str, host_refs: list[ImageRef]) -> None:
            if not self._host(registry).probed:
                # The first answer tells whether the registry wants tokens, and where from;
                # then one token request covers every repository, the first one included.
                first = host_refs[0]
                try:
                    found: str | RegistryError | None = await self._probe(first)
                except RegistryError as exc:
                    found = exc
                if found is not None:
                    results[first] = found
                    host_refs = host_refs[1:]
            await self._prefetch(registry, [ref.repository for ref in host_refs])
            await asyncio.gather(*(one(ref) for ref in host_refs))

        by_host: dict[str, list[ImageRef]] = {}
        for ref in wanted:
            by_host.setdefault(ref.registry, []).append(ref)
        await asyncio.gather(*(on_host(registry, refs) for registry, refs in by_host.items()))
        return {ref: results[ref] for ref in wanted}

    async def _probe(self, ref: ImageRef) -> str | None:
        """Ask for `ref` with no token, to learn the host's challenge: None when it sent one
        (ask again with a token), else the digest it answered."""
        response = await self._head(ref.registry, self._manifest_url(ref), None)
        host = self._host(ref.registry)
        host.probed = True
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if challenge is not None:
                host.challenge = challenge
                return None
        return _digest_from(ref, response)

    def _manifest_url(self, ref: ImageRef) -> str:
        base = base_url(ref.registry, self.insecure)
        return f"{base}/v2/{ref.repository}/manifests/{ref.pull_tag}"

    async def _lookup(self, ref: ImageRef) -> str:
        url = self._manifest_url(ref)
        host = self._host(ref.registry)
        token = self._cached(host, ref.repository)
        if token is None and host.challenge is not None:
            token = await self._token(ref.registry, [ref.repository])
        response = await self._head(ref.registry, url, token)
        host.probed = True
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if challenge is None:
                raise RegistryError(
                    f"{ref}: registry refused without a bearer challenge", status=401
                )
            batched = token is not None and token.batched
            host.challenge = challenge
            host.tokens.pop(ref.repository, None)
            token = await self._token(ref.registry, [ref.repository])
            response = await self._head(ref.registry, url, token)
            if batched and response.status_code == 200:
                # A token naming several repositories was not honoured for this one.
                host.multi_scope = False
        return _digest_from(ref, response)

    async def _head(self, registry: str, url: str, token: _Token | None) -> httpx.Response:
        headers = {"Accept": MANIFEST_TYPES}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.value}"
        self.counters.head += 1
        return await self._send(registry, self.http.build_request("HEAD", url, headers=headers))

    async def _prefetch(self, registry: str, repositories: Sequence[str]) -> None:
        """Fetch tokens for every repository lacking one, several to a request."""
        host = self._host(registry)
        if host.challenge is None or not host.multi_scope:
            return
        missing = [repo for repo in repositories if self._cached(host, repo) is None]
        if len(missing) < 2:
            return
        chunks = [
            missing[start : start + SCOPES_PER_TOKEN]
            for start in range(0, len(missing), SCOPES_PER_TOKEN)
        ]
        # A failed batch is not fatal: each lookup then asks for its own token.
        await asyncio.gather(
            *(self._token(registry, chunk) for chunk in chunks), return_exceptions=True
        )

    def _cached(self, host: _Host, repository: str) -> _Token | None:
        token = host.tokens.get(repository)
        if token is None or token.expires <= self.clock.monotonic():
            return None
        return token

    async def _token(self, registry: str, repositories: Sequence[str]) -> _Token:
        host = self._host(registry)
        challenge = host.challenge or {}
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("scope", f"repository:{repo}:pull") for repo in repositories
        ]
        if "service" in challenge:
            params.append(("service", challenge["service"]))
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        self.counters.token += 1
        request = self.http.build_request("GET", challenge["realm"], params=params)
        response = await self._send(registry, request, auth)
        if response.status_code in (401, 403):
            raise RegistryError(
                "token service refused the credentials"
                + ("" if self.credentials else " (no GHCR_USER/GHCR_TOKEN set)"),
                status=response.status_code,
            )
        if response.status_code != 200:
            raise RegistryError(
                f"token service answered {response.status_code}", status=response.status_code
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise RegistryError("token service sent no token")
        expires = body.get("expires_in") if isinstance(body, dict) else None
        lifetime = (
            expires
            if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0
            else DEFAULT_TOKEN_SECONDS
        )
        token = _Token(
            value,
            self.clock.monotonic() + max(lifetime - TOKEN_MARGIN_SECONDS, 1),
            batched=len(repositories) > 1,
        )
        for repo in repositories:
            host.tokens[repo] = token
        return token

    async def _send(
        self, registry: str, request: httpx.Request, auth: httpx.Auth | None = None
    ) -> httpx.Response:
        """One request: bounded concurrency, a 429's Retry-After honoured for the whole host."""
        host = self._host(registry)
        for attempt in range(1, ATTEMPTS + 1):
            wait = host.not_before - self.clock.monotonic()
            if wait > 0:
                await self.clock.pause(wait)
            async with self._slots:
                try:
                    response = await self.http.send(request, auth=auth)
                except httpx.HTTPError as exc:
                    what = "token service" if request.method == "GET" else "registry"
                    raise RegistryError(f"{what} unreachable: {type(exc).__name__}") from exc
            if response.status_code != 429:
                return response
            self.counters.rate_limited += 1
            told = retry_after(response.headers.get("retry-after"), self.clock.wall())
            delay = told if told is not None else float(2 ** (attempt - 1))
            if delay > MAX_RETRY_WAIT or attempt == ATTEMPTS:
                raise RegistryError(
                    f"registry rate limit (429); retry after {delay:.0f} s", status=429
                )
            host.not_before = max(host.not_before, self.clock.monotonic() + delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _host(self, registry: str) -> _Host:
        host = self._hosts.get(registry)
        if host is None:
            host = self._hosts[registry] = _Host()
        return host


def _digest_from(ref: ImageRef, response: httpx.Response) -> str:
    if response.status_code == 401:
        raise RegistryError(f"{ref}: access denied (check GHCR_USER/GHCR_TOKEN)", status=401)
    if response.status_code == 404:
        raise RegistryError(f"{ref}: no such manifest (404)", status=404)
    if response.status_code != 200:
        raise RegistryError(
            f"{ref}: registry answered {response.status_code}", status=response.status_code
        )
    digest = str(response.headers.get("docker-content-digest", ""))
    if not is_digest(digest):
        raise RegistryError(f"{ref}: registry sent no usable Docker-Content-Digest", status=200)
    return digest
