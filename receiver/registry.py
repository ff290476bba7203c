"""A small OCI registry client: the manifest digest of a tag, with bearer-challenge auth."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx

from .errors import ReceiverError
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
_HUB_API = "registry-1.docker.io"
_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")


class RegistryError(ReceiverError):
    """The registry could not tell a digest; `status` is its HTTP status when it answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(registry: str) -> str:
    """The API base of a registry host; loopback registries speak plain HTTP, as Docker allows."""
    host = _HUB_API if registry == "docker.io" else registry
    scheme = "http" if _LOOPBACK.match(host) else "https"
    return f"{scheme}://{host}"


def parse_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `Bearer realm=…,service=…,scope=…` challenge, or None."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = dict(_PARAM.findall(params))
    return found if "realm" in found else None


class RegistryClient:
    """HEADs manifests; fetches and caches bearer tokens when the registry challenges."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: tuple[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.credentials = credentials
        self.clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    async def digest(self, ref: ImageRef) -> str:
        """The digest the registry serves for `ref`'s tag (Docker-Content-Digest)."""
        url = f"{base_url(ref.registry)}/v2/{ref.repository}/manifests/{ref.pull_tag}"
        key = f"{ref.registry}/{ref.repository}"
        response = await self._head(url, self._cached(key))
        if response.status_code == 401:
            challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if challenge is None:
                raise RegistryError(
                    f"{ref}: registry refused without a bearer challenge", status=401
                )
            token = await self._token(key, challenge, ref.repository)
            response = await self._head(url, token)
        if response.status_code != 200:
            raise RegistryError(
                f"{ref}: registry answered {response.status_code}", status=response.status_code
            )
        digest = str(response.headers.get("docker-content-digest", ""))
        if not is_digest(digest):
            raise RegistryError(f"{ref}: registry sent no usable Docker-Content-Digest", status=200)
        return digest

    async def _head(self, url: str, token: str | None) -> httpx.Response:
        headers = {"Accept": MANIFEST_TYPES}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return await self.http.head(url, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry unreachable: {type(exc).__name__}") from exc

    def _cached(self, key: str) -> str | None:
        cached = self._tokens.get(key)
        if cached is None or cached[1] <= self.clock():
            return None
        return cached[0]

    async def _token(self, key: str, challenge: dict[str, str], repository: str) -> str:
        params = {"scope": f"repository:{repository}:pull"}
        if "service" in challenge:
            params["service"] = challenge["service"]
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        try:
            response = await self.http.get(challenge["realm"], params=params, auth=auth)
        except httpx.HTTPError as exc:
            raise RegistryError(f"token service unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise RegistryError(
                f"token service answered {response.status_code}", status=response.status_code
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RegistryError("token service sent no token")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError("token service sent no token")
        expires = body.get("expires_in")
        lifetime = expires if isinstance(expires, int) and expires > 0 else DEFAULT_TOKEN_SECONDS
        # Renew a little early so a token never expires between the check and the request.
        self._tokens[key] = (token, self.clock() + max(lifetime - 5, 1))
        return token
