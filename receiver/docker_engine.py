"""The Engine interface over the Docker SDK's low-level API client."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from .container import Container
from .engine import CreateSpec, Image
from .errors import EngineError, EngineUnavailable, PullError
from .imageref import ImageRef

log = logging.getLogger(__name__)

# Template images are built for amd64; on arm64 hosts pull that platform unless told otherwise.
_EMULATED_PLATFORM = {"arm64": "linux/amd64", "aarch64": "linux/amd64"}
# The engine cannot be reached, or went away in the middle of its answer: a body cut
# short surfaces as ChunkedEncodingError, a streamed one (a pull) as urllib3's ProtocolError.
_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
)


class DockerEngine:
    """Talks to one Docker engine; the SDK client is built on first use so start-up never waits."""

    def __init__(
        self,
        docker_env: Mapping[str, str],
        *,
        registry_auth: tuple[str, str] | None = None,
        platform: str | None = None,
        max_connections: int = 10,
        timeout: int = 120,
    ) -> None:
        self._docker_env = dict(docker_env)
        self._auth = registry_auth
        self._platform_override = platform
        self._platform: str | None = None
        self._platform_known = False
        self._max_connections = max_connections
        self._timeout = timeout
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()

    def api(self) -> docker.APIClient:
        """The SDK's low-level client, connecting (and negotiating the version) on first use."""
        with self._lock:
            if self._api is None:
                try:
                    client = docker.DockerClient.from_env(
                        environment=self._docker_env,
                        timeout=self._timeout,
                        max_pool_size=self._max_connections,
                        use_context=False,
                    )
                except docker.errors.DockerException as exc:
                    raise EngineUnavailable(f"cannot reach the Docker engine: {exc}") from exc
                self._api = client.api
            return self._api

    def close(self) -> None:
        """Close the connection pool."""
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

    @property
    def platform(self) -> str | None:
        """The platform to pull and create with (IMAGE_PLATFORM, else the arm64 rule)."""
        if not self._platform_known:
            if self._platform_override:
                self._platform = self._platform_override
            else:
                arch = str(self._call(lambda api: api.version()).get("Arch", ""))
                self._platform = _EMULATED_PLATFORM.get(arch)
            self._platform_known = True
        return self._platform

    def ping(self) -> None:
        """Return if the engine answers, else raise EngineUnavailable."""
        try:
            self._call(lambda api: api.ping())
        except EngineUnavailable:
            raise
        except EngineError as exc:
            raise EngineUnavailable(str(exc)) from exc

    def pull(self, ref: ImageRef) -> Image:
        """Pull with the streaming API and fail on any error reported inside the stream."""
        auth = None
        if self._auth is not None:
            auth = {
                "username": self._auth[0],
                "password": self._auth[1],
                "serveraddress": ref.registry,
            }
        platform = self.platform
        try:
            stream = self.api().pull(
                ref.name,
                tag=ref.pull_tag,
                stream=True,
                decode=True,
                auth_config=auth,
                platform=platform,
            )
            _drain(stream, ref)
        except docker.errors.APIError as exc:
            raise PullError(f"pull {ref} failed: {_explain(exc)}", status=exc.status_code) from exc
        except _UNREACHABLE as exc:
            raise PullError(f"pull {ref} failed: engine unreachable ({exc})") from exc
        image = self.image(str(ref))
        if image is None:
            raise PullError(f"pull {ref} reported success but the image is not there")
        return image

    def image(self, ref_or_id: str) -> Image | None:
        """Inspect a local image, or None when there is none."""
        data = self._call(lambda api: api.inspect_image(ref_or_id), missing_ok=True)
        if data is None:
            return None
        return Image(
            id=str(data["Id"]),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            config=data.get("Config") or {},
        )

    def list_containers(self, prefix: str) -> list[Container]:
        """Every container whose name contains `prefix`; the caller anchors the match."""
        try:
            rows = self.api().containers(all=True, filters={"name": prefix})
        except (docker.errors.DockerException, *_UNREACHABLE) as exc:
            raise EngineUnavailable(f"cannot list containers: {exc}") from exc
        found: list[Container] = []
        for row in rows:
            container = self.inspect_container(str(row["Id"]))
            if container is not None:  # removed between the list and the inspect
                found.append(container)
        return found

    def inspect_container(self, container_id: str) -> Container | None:
        """One container as it is now, or None when it no longer exists."""
        data = self._call(lambda api: api.inspect_container(container_id), missing_ok=True)
        return Container.from_inspect(data) if data is not None else None

    def create_container(self, spec: CreateSpec) -> str:
        """Create from a raw config body, then connect the networks create could not take."""
        created = self._call(
            lambda api: api.create_container_from_config(
                dict(spec.body), name=spec.name, platform=self.platform
            )
        )
        container_id = str(created["Id"])
        for network, endpoint in spec.extra_networks.items():
            self._connect(container_id, network, endpoint)
        return container_id

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container."""
        self._call(lambda api: api.rename(container_id, name))

    def start(self, container_id: str) -> None:
        """Start a container."""
        self._call(lambda api: api.start(container_id))

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop a container, killing it after `timeout` seconds."""
        self._call(lambda api: api.stop(container_id, timeout=timeout))

    def remove(self, container_id: str, *, force: bool = False) -> None:
        """Remove a container, always keeping its volumes (v=False); a gone one is fine."""
        self._call(
            lambda api: api.remove_container(container_id, v=False, force=force), missing_ok=True
        )

    def remove_image(self, image_id: str) -> bool:
        """Remove an image unless a container (running or not) or a second tag holds it."""
        try:
            self._call(lambda api: api.remove_image(image_id, force=False, noprune=False))
        except EngineUnavailable:
            raise
        except EngineError as exc:
            log.info("image %s kept: %s", image_id[:19], exc)
            return False
        return True

    def _connect(self, container_id: str, network: str, endpoint: Mapping[str, Any]) -> None:
        ipam = endpoint.get("IPAMConfig") or {}
        self._call(
            lambda api: api.connect_container_to_network(
                container_id,
                network,
                ipv4_address=ipam.get("IPv4Address") or None,
                ipv6_address=ipam.get("IPv6Address") or None,
                link_local_ips=ipam.get("LinkLocalIPs") or None,
                aliases=endpoint.get("Aliases") or None,
                # Inspect shows `name:alias`; docker-py wants (name, alias) pairs.
                links=[
                    (target, alias or target)
                    for target, _, alias in (
                        str(link).partition(":") for link in endpoint.get("Links") or []
                    )
                ]
                or None,
                driver_opt=endpoint.get("DriverOpts") or None,
            )
        )

    def _call(self, fn: Any, *, missing_ok: bool = False) -> Any:
        """Run one SDK call, translating its exceptions into the receiver's own."""
        try:
            return fn(self.api())
        except docker.errors.NotFound as exc:
            if missing_ok:
                return None
            raise EngineError(_explain(exc), status=exc.status_code) from exc
        except docker.errors.APIError as exc:
            raise EngineError(_explain(exc), status=exc.status_code) from exc
        except _UNREACHABLE as exc:
            raise EngineUnavailable(f"Docker engine unreachable: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise EngineError(str(exc)) from exc


def _drain(stream: Iterator[Mapping[str, Any]], ref: ImageRef) -> None:
    """Consume a pull stream; an error item means the pull failed even though HTTP said 200."""
    for item in stream:
        if "error" in item or "errorDetail" in item:
            detail = item.get("errorDetail") or {}
            message = item.get("error") or detail.get("message") or "unknown error"
            raise PullError(f"pull {ref} failed: {message}")
        status = item.get("status")
        if status and "id" not in item:
            log.debug("pull %s: %s", ref, status)


def _explain(exc: docker.errors.APIError) -> str:
    """The engine's own error message, without the SDK's URL noise."""
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc)
