"""The Engine interface over the Docker SDK's low-level API client."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from .container import Container
from .engine import CreateSpec, EngineInfo, Image
from .errors import EngineError, EngineUnavailable, PullError
from .imageref import ImageRef

log = logging.getLogger(__name__)

# Template images are built for amd64; on arm64 hosts pull that platform unless told otherwise.
_EMULATED_PLATFORM = {"arm64": "linux/amd64", "aarch64": "linux/amd64"}
# From this API version on, create takes every network at once (before: one, then connect).
_MULTI_NETWORK_CREATE = (1, 44)
# `docker info`'s DriverStatus driver-type of the containerd image store.
_CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"
_EXEC_POLL_SECONDS = 0.1
# A removal already under way (someone's `docker rm -f`): how long to wait for it to end.
_REMOVAL_WAIT_SECONDS = 30.0
_CONFLICT = 409
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
        self._info: EngineInfo | None = None
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
    def registry_auth(self) -> tuple[str, str] | None:
        """The (user, password) pulls use (GHCR_USER/GHCR_TOKEN), or None for the host's."""
        return self._auth

    def info(self) -> EngineInfo:
        """The negotiated API version and the image store, asked of the engine once."""
        if self._info is None:
            api = self.api()
            status = dict(self.call(lambda api: api.info()).get("DriverStatus") or [])
            major, minor = str(api.api_version).split(".")[:2]
            self._info = EngineInfo(
                api_version=(int(major), int(minor)),
                containerd_store=status.get("driver-type") == _CONTAINERD_SNAPSHOTTER,
            )
        return self._info

    @property
    def platform(self) -> str | None:
        """The platform to pull and create with (IMAGE_PLATFORM, else the arm64 rule)."""
        if not self._platform_known:
            if self._platform_override:
                self._platform = self._platform_override
            else:
                arch = str(self.call(lambda api: api.version()).get("Arch", ""))
                self._platform = _EMULATED_PLATFORM.get(arch)
            self._platform_known = True
        return self._platform

    def ping(self) -> None:
        """Return if the engine answers, else raise EngineUnavailable."""
        try:
            self.call(lambda api: api.ping())
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
        data = self.call(lambda api: api.inspect_image(ref_or_id), missing_ok=True)
        if data is None:
            return None
        return Image(
            id=str(data["Id"]),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            config=data.get("Config") or {},
        )

    def list_containers(self, prefix: str) -> list[Container]:
        """Every container whose name contains `prefix` (all, for ""); the caller anchors
        the match."""
        try:
            rows = self.api().containers(all=True, filters={"name": prefix} if prefix else None)
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
        data = self.call(lambda api: api.inspect_container(container_id), missing_ok=True)
        return Container.from_inspect(data) if data is not None else None

    def create_container(self, spec: CreateSpec) -> str:
        """Create from a raw config body with every network; on engines that take only one
        network at create (API < 1.44), connect the others before the container starts."""
        body = dict(spec.body)
        extra = dict(spec.extra_networks)
        if extra and self.info().api_version >= _MULTI_NETWORK_CREATE:
            endpoints = dict((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
            body["NetworkingConfig"] = {"EndpointsConfig": {**endpoints, **extra}}
            extra = {}
        created = self.call(
            lambda api: api.create_container_from_config(
                body, name=spec.name, platform=self.platform
            )
        )
        container_id = str(created["Id"])
        for network, endpoint in extra.items():
            self._connect(container_id, network, endpoint)
        return container_id

    def rename(self, container_id: str, name: str) -> None:
        """Rename a container."""
        self.call(lambda api: api.rename(container_id, name))

    def start(self, container_id: str) -> None:
        """Start a container."""
        self.call(lambda api: api.start(container_id))

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop a container, killing it after `timeout` seconds."""
        self.call(lambda api: api.stop(container_id, timeout=timeout))

    def remove(self, container_id: str, *, force: bool = False) -> None:
        """Remove a container, always keeping its volumes (v=False); a gone one is fine.
        When another removal of it is under way (409), wait for that one to end, so the
        container's name is free when this returns."""
        refusal = self._refusal(
            lambda api: api.remove_container(container_id, v=False, force=force)
        )
        if refusal is not None:
            if refusal.status != _CONFLICT or not force:
                raise refusal
            deadline = time.monotonic() + _REMOVAL_WAIT_SECONDS
            while self.call(lambda api: api.inspect_container(container_id), missing_ok=True):
                if time.monotonic() > deadline:
                    raise refusal
                time.sleep(_EXEC_POLL_SECONDS)

    def exec(self, container_id: str, command: Sequence[str], timeout: float) -> int | None:
        """Start `command` detached, then watch it until it exits or `timeout` passes."""
        created = self.call(
            lambda api: api.exec_create(container_id, list(command), stdout=False, stderr=False)
        )
        exec_id = str(created["Id"])
        self.call(lambda api: api.exec_start(exec_id, detach=True))
        deadline = time.monotonic() + timeout
        while True:
            state = self.call(lambda api: api.exec_inspect(exec_id))
            if not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            if time.monotonic() >= deadline:
                return None
            time.sleep(_EXEC_POLL_SECONDS)

    def tag(self, image: str, ref: str) -> None:
        """`docker tag image ref`."""
        repository, _, tag = ref.rpartition(":")
        self.call(lambda api: api.tag(image, repository, tag, force=True))

    def untag(self, ref: str) -> None:
        """`docker rmi --force --no-prune ref`: forced, a name goes even from an image in use
        (which stays while used); an image nothing uses goes with its last name."""
        self.call(lambda api: api.remove_image(ref, force=True, noprune=True), missing_ok=True)

    def remove_image(self, image_id: str) -> bool:
        """Remove an image unless a container (running or not) or a second tag holds it;
        True when it is gone. The containerd image store forgets an image as soon as no
        tag names it (its containers keep their snapshots): then it is gone already."""
        refusal = self._refusal(lambda api: api.remove_image(image_id, force=False, noprune=False))
        if refusal is not None:
            log.info("image %s kept: %s", image_id[:19], refusal)
            return False
        return True

    def _connect(self, container_id: str, network: str, endpoint: Mapping[str, Any]) -> None:
        ipam = endpoint.get("IPAMConfig") or {}
        self.call(
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

    def _refusal(self, fn: Any) -> EngineError | None:
        """Run one SDK call whose 404 is fine; the engine's refusal returned, not raised
        (EngineUnavailable still is)."""
        try:
            self.call(fn, missing_ok=True)
        except EngineUnavailable:
            raise
        except EngineError as exc:
            return exc
        return None

    def call(self, fn: Any, *, missing_ok: bool = False) -> Any:
        """Run one SDK call (`fn(api)`), translating its exceptions into the receiver's
        own; with `missing_ok` a 404 gives None."""
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
    """Consume a pull stream; an error item means the pull failed even though HTTP said 200.

    The stream is read to its end even after an error (the engine ends it there anyway),
    so the connection goes back to the pool instead of staying open.
    """
    failure: str | None = None
    for item in stream:
        if failure is None and ("error" in item or "errorDetail" in item):
            detail = item.get("errorDetail") or {}
            failure = str(item.get("error") or detail.get("message") or "unknown error")
            continue
        status = item.get("status")
        if status and "id" not in item:
            log.debug("pull %s: %s", ref, status)
    if failure is not None:
        raise PullError(f"pull {ref} failed: {failure}")


def _explain(exc: docker.errors.APIError) -> str:
    """The engine's own error message, without the SDK's URL noise."""
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc)
