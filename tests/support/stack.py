"""A real Docker engine and registry for integration tests, demos and benchmarks.

`Stack.start()` uses an engine that is already there (``RECEIVER_TEST_DOCKER_HOST``,
``DOCKER_HOST`` or ``/var/run/docker.sock``) or, as root, starts a private ``dockerd``
in a temporary directory; it starts a private ``docker-registry`` on loopback unless
``RECEIVER_TEST_REGISTRY`` names one.  Images are made without Docker Hub: a rootfs
holding the host's static busybox is imported and pushed to the registry.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors

from tests.support.daemons import (
    Closing,
    StackUnavailable,
    engine_answers,
    registry_answers,
    registry_config,
    remove_tree,
    serve_registry,
    stop_process,
)
from tests.support.engines import ENGINE_ENV, PrivateEngine, selected_kind

__all__ = [
    "BUSYBOX_APPLETS",
    "DEFAULT_CMD",
    "QUICK_STOP_CMD",
    "Published",
    "Stack",
    "StackUnavailable",
    "find_static_busybox",
    "unique",
]

# `docker info`'s DriverStatus driver-type of the containerd image store.
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"
# Unix socket paths are limited to 108 bytes; containerd puts "<exec-root>/containerd/
# containerd.sock.ttrpc" under the exec root, the longest path the private engine needs.
_SOCKET_PATH_MAX = 100
_LONGEST_SOCKET_SUFFIX = "/x/containerd/containerd.sock.ttrpc"

BUSYBOX_APPLETS = (
    "sh",
    "sleep",
    "cat",
    "echo",
    "ls",
    "true",
    "false",
    "test",
    "touch",
    "mkdir",
    "rm",
    "hostname",
)
DEFAULT_CMD = ["/bin/sleep", "3600"]
# As PID 1, busybox sleep ignores SIGTERM, so `docker stop` of DEFAULT_CMD waits out the
# whole stop timeout (10 s by default); pass this as `cmd` where stops should be quick.
QUICK_STOP_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@dataclass(frozen=True)
class Published:
    """An image pushed to a registry: its ref, image id and manifest digest."""

    ref: str
    image_id: str
    digest: str

    @property
    def pinned(self) -> str:
        """The ref pinned to the digest, ``host:port/repo:tag@sha256:...``."""
        return f"{self.ref}@{self.digest}"


class ContainerEvent(NamedTuple):
    """One container event of the engine: when (ns), what (create, die, ...), to whom."""

    at: int
    action: str
    name: str


def unique(prefix: str) -> str:
    """Return a short unique lowercase name starting with ``prefix``."""
    return f"{prefix.lower()}-{uuid.uuid4().hex[:8]}"


def _is_static_elf(path: Path) -> bool:
    # A dynamically linked ELF has a PT_INTERP program header naming its loader; reading
    # the headers avoids depending on `file` or `ldd` being installed.
    try:
        with path.open("rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF":
                return False
            is64 = ident[4] == 2
            endian = "<" if ident[5] == 1 else ">"
            if is64:
                (phoff,) = struct.unpack_from(endian + "Q", ident, 0x20)
                phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x36)
            else:
                (phoff,) = struct.unpack_from(endian + "I", ident, 0x1C)
                phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x2A)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == pt_interp:
            return False
    return True


def find_static_busybox() -> Path | None:
    """Return the path of a statically linked busybox on this host, if there is one."""
    candidates = [os.environ.get("RECEIVER_TEST_BUSYBOX"), shutil.which("busybox")]
    candidates += ["/bin/busybox", "/usr/bin/busybox"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate).resolve()
    return None


@functools.cache
def _busybox_bytes() -> bytes:
    path = find_static_busybox()
    if path is None:
        raise StackUnavailable("no statically linked busybox found (install busybox-static)")
    return path.read_bytes()


def rootfs_tar(version: str) -> bytes:
    # A fixed mtime keeps the layer a function of its content alone; /version is what
    # makes each version a distinct layer, hence a distinct image id and digest.
    mtime = 1_700_000_000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = mtime
            info.linkname = target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("bin", tarfile.DIRTYPE, 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, _busybox_bytes())
        for applet in BUSYBOX_APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        add("data", tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("version", tarfile.REGTYPE, 0o644, version.encode())
    return buf.getvalue()


def _changes(
    env: Mapping[str, str] | None,
    labels: Mapping[str, str] | None,
    cmd: list[str] | None,
    entrypoint: list[str] | None,
    workdir: str | None,
    volumes: list[str] | None,
) -> list[str]:
    # JSON string quoting is valid Dockerfile quoting, so values may hold spaces or "=".
    changes = [f"ENV {k}={json.dumps(v)}" for k, v in (env or {}).items()]
    changes += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in (labels or {}).items()]
    if entrypoint is not None:
        changes.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
    if cmd is not None:
        changes.append(f"CMD {json.dumps(cmd)}")
    elif entrypoint is None:
        changes.append(f"CMD {json.dumps(DEFAULT_CMD)}")
    if workdir is not None:
        changes.append(f"WORKDIR {workdir}")
    if volumes:
        changes.append(f"VOLUME {json.dumps(volumes)}")
    return changes


def check_stream(items: Iterable[Any], what: str) -> list[dict[str, Any]]:
    # The engine reports pull/push failures inside a 200 response, item by item.
    seen: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "error" in item or "errorDetail" in item:
            detail = item.get("error") or item.get("errorDetail")
            raise RuntimeError(f"{what} failed: {detail}")
        seen.append(item)
    return seen


def publish_image(
    client: docker.DockerClient,
    name: str,
    tag: str,
    *,
    version: str,
    changes: Sequence[str],
    auth: tuple[str, str] | None = None,
) -> Published:
    """Import a busybox image whose /version holds `version` as `name:tag` on the engine of
    `client`, with Dockerfile `changes`; push it (as `auth`), then drop the local tag (a
    later pull must go to the registry); what was published."""
    ref = f"{name}:{tag}"
    result = client.api.import_image(
        src=rootfs_tar(version), repository=name, tag=tag, changes=list(changes)
    )
    check_stream(json_lines(result), f"import of {ref}")
    image_id = client.images.get(ref).id
    if image_id is None:
        raise RuntimeError(f"engine reported no id for image {ref}")
    digest = ""
    try:
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None
        stream = client.api.push(name, tag=tag, stream=True, decode=True, auth_config=auth_config)
        for item in check_stream(stream, f"push of {ref}"):
            aux = item.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
        if not digest:
            # The containerd image store sends no aux item: the digest is in RepoDigests.
            repo_digests = client.images.get(ref).attrs.get("RepoDigests") or []
            digest = next((d.split("@", 1)[1] for d in repo_digests if d.startswith(name)), "")
    finally:
        untag(client, ref)
    if not digest.startswith("sha256:"):
        raise RuntimeError(f"push of {ref} reported no manifest digest")
    return Published(ref=ref, image_id=image_id, digest=digest)


def untag(client: docker.DockerClient, ref: str) -> None:
    """Drop the local name `ref` (the image stays while a container uses it)."""
    try:
        client.api.remove_image(ref)
    except docker.errors.APIError as exc:
        # A container still using the image makes docker refuse to delete its last tag;
        # forcing removes the tag but keeps the image for that container.
        if exc.status_code != 409:
            raise
        client.api.remove_image(ref, force=True)


class Stack(Closing):
    """A Docker engine plus registry to test against; use as a context manager."""

    docker_host: str
    registry: str
    client: docker.DockerClient
    started_engine: bool
    started_registry: bool
    # What the engine is: its API version, its version, whether it keeps images in the
    # containerd image store (Docker 29's default) rather than a graph driver (overlay2).
    api_version: tuple[int, int]
    engine_version: str
    containerd_store: bool

    def __init__(self) -> None:
        self.started_engine = False
        self.started_registry = False
        self._tmp: Path | None = None
        self._engine: PrivateEngine | None = None
        self._registry_proc: subprocess.Popen[bytes] | None = None
        self._container_names: set[str] = set()
        self._container_ids: set[str] = set()
        self._image_ids: set[str] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path | None = None) -> Stack:
        """Find or start an engine and a registry; `workdir` is the parent of the temp dir."""
        stack = cls()
        try:
            stack._start(workdir)
        except BaseException:
            stack.close()
            raise
        return stack

    def _start(self, workdir: Path | None) -> None:
        if find_static_busybox() is None:
            raise StackUnavailable("no statically linked busybox found (install busybox-static)")
        self._start_engine(workdir)
        self._start_registry(workdir)

    def _tmpdir(self, workdir: Path | None) -> Path:
        if self._tmp is None:
            parent = workdir if workdir is not None else Path(tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="rts-", dir=parent))
            if workdir is None and len(str(tmp)) + len(_LONGEST_SOCKET_SUFFIX) > _SOCKET_PATH_MAX:
                tmp.rmdir()
                tmp = Path(tempfile.mkdtemp(prefix="rts-", dir="/tmp"))
            self._tmp = tmp
        return self._tmp

    def _start_engine(self, workdir: Path | None) -> None:
        explicit = os.environ.get("RECEIVER_TEST_DOCKER_HOST")
        if explicit:
            self._use_engine(explicit, f"RECEIVER_TEST_DOCKER_HOST={explicit}")
            return
        # A run that names an engine kind gets a private engine of that kind.
        if not os.environ.get(ENGINE_ENV):
            if os.environ.get("DOCKER_HOST"):
                self._use_engine(os.environ["DOCKER_HOST"], "DOCKER_HOST")
                return
            system = "unix:///var/run/docker.sock"
            if Path("/var/run/docker.sock").exists() and engine_answers(system):
                self._use_engine(system, system)
                return
        if os.geteuid() != 0:
            raise StackUnavailable(
                "no Docker engine: set RECEIVER_TEST_DOCKER_HOST or DOCKER_HOST, "
                "or run as root so a private dockerd can be started"
            )
        self._engine = PrivateEngine.start(selected_kind(), workdir)
        self.started_engine = True
        self._use_engine(self._engine.docker_host, f"the private {self._engine.kind} engine")

    def _use_engine(self, docker_host: str, what: str) -> None:
        """Connect to the engine at `docker_host` and learn what it is."""
        self.docker_host = docker_host
        self.client = docker.DockerClient(base_url=docker_host, timeout=120)
        try:
            version = self.client.version()
            info = self.client.info()
        except Exception as exc:
            raise StackUnavailable(f"Docker engine at {what} does not answer: {exc}") from exc
        major, minor = str(version.get("ApiVersion", "1.41")).split(".")[:2]
        self.api_version = (int(major), int(minor))
        self.engine_version = str(version.get("Version", ""))
        driver_status = dict(info.get("DriverStatus") or [])
        self.containerd_store = driver_status.get("driver-type") == CONTAINERD_SNAPSHOTTER

    def _start_registry(self, workdir: Path | None) -> None:
        explicit = os.environ.get("RECEIVER_TEST_REGISTRY")
        if explicit:
            self.registry = explicit
            if not registry_answers(explicit):
                raise StackUnavailable(f"registry RECEIVER_TEST_REGISTRY={explicit} not answering")
            return
        if shutil.which("docker-registry") is None:
            raise StackUnavailable(
                "no registry: set RECEIVER_TEST_REGISTRY or install docker-registry"
            )
        tmp = self._tmpdir(workdir)

        def settings(address: str) -> dict[str, Any]:
            return registry_config(address, tmp / "registry")

        self.registry, self._registry_proc = serve_registry(tmp, "registry", settings)
        self.started_registry = True

    def close(self) -> None:
        """Remove tracked containers and images, stop what was started, delete the temp dir."""
        if self._closed:
            return
        self._closed = True
        client = getattr(self, "client", None)
        if client is not None:
            try:
                self._remove_own_objects(client)
            finally:
                client.close()
        if self._registry_proc is not None:
            stop_process(self._registry_proc)
            self._registry_proc = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._tmp is not None:
            remove_tree(self._tmp)
            self._tmp = None

    def _remove_own_objects(self, client: docker.DockerClient) -> None:
        # Best effort throughout: an engine that is already gone must not stop close()
        # from stopping processes and deleting the temp dir.
        with contextlib.suppress(Exception):
            self._remove_tracked_containers()
        if self.started_engine:
            # Everything on a private engine is ours; removing it now spares dockerd's
            # shutdown waiting out each container's stop timeout.
            with contextlib.suppress(Exception):
                for container in client.containers.list(all=True):
                    self._remove_container(container.id)
        else:
            # On a shared engine, leave none of our images behind (a private one is wiped
            # whole with its data root).
            for image_id in sorted(self._image_ids):
                with contextlib.suppress(Exception):
                    client.api.remove_image(image_id, force=True)

    # -- images ------------------------------------------------------------------------

    def unique(self, prefix: str) -> str:
        """Return a short unique lowercase name starting with ``prefix``."""
        return unique(prefix)

    def publish(
        self,
        repository: str,
        tag: str = "latest",
        *,
        version: str,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        cmd: list[str] | None = None,
        entrypoint: list[str] | None = None,
        workdir: str | None = None,
        volumes: list[str] | None = None,
        changes: Sequence[str] = (),
        registry: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Published:
        """Build a busybox image whose /version holds `version`, push it, drop the local tag.

        `changes` are further Dockerfile instructions (a HEALTHCHECK, say). The push goes
        to the stack's registry unless `registry` names another; `auth` is the (username,
        password) the engine pushes with.
        """
        # CMD is DEFAULT_CMD unless `cmd` or `entrypoint` is given: a default CMD would
        # otherwise become arguments to the entrypoint.
        instructions = [*_changes(env, labels, cmd, entrypoint, workdir, volumes), *changes]
        published = publish_image(
            self.client,
            f"{registry or self.registry}/{repository}",
            tag,
            version=version,
            changes=instructions,
            auth=auth,
        )
        self._image_ids.add(published.image_id)
        return published

    def pull_local(self, ref: str, auth: tuple[str, str] | None = None) -> str:
        """Pull `ref` from the registry (as user `auth`) onto the engine; the local image id."""
        repository, tag = _split_ref(ref)
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None
        stream = self.client.api.pull(
            repository, tag=tag, stream=True, decode=True, auth_config=auth_config
        )
        check_stream(stream, f"pull of {ref}")
        image_id = self._image_id(ref)
        self._image_ids.add(image_id)
        return image_id

    def image_present(self, ref: str) -> bool:
        """Whether the engine has an image by this ref or id."""
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _image_id(self, ref: str) -> str:
        image_id = self.client.images.get(ref).id
        if image_id is None:
            raise RuntimeError(f"engine reported no id for image {ref}")
        return image_id

    # -- containers --------------------------------------------------------------------

    def run_container(
        self,
        name: str,
        image: str,
        *,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        volumes: dict[str, dict[str, str]] | list[str] | None = None,
        command: str | list[str] | None = None,
        start: bool = True,
        auth: tuple[str, str] | None = None,
    ) -> str:
        """Create (pulling `image` if needed, as user `auth`) and start a tracked container;
        return its id."""
        # Track the name before creating, so even a half-made container is cleaned up.
        self._container_names.add(name)

        def create() -> Any:
            return self.client.containers.create(
                image,
                command=command,
                name=name,
                environment=env,
                labels=labels,
                volumes=volumes,
                # With dockerd --bridge=none the default network cannot be joined, and a
                # container on it cannot be renamed; "none" works on every engine.
                network_mode="none",
                detach=True,
            )

        try:
            container = create()
        except docker.errors.ImageNotFound:
            self.pull_local(image, auth)
            container = create()
        self._container_ids.add(container.id)
        if start:
            container.start()
        return str(container.id)

    def named(self, name: str) -> dict[str, Any] | None:
        """The inspect of the container called exactly `name`, or None: during its swap a
        workspace's name is briefly unbound (the old one waits under its aside name)."""
        try:
            found: dict[str, Any] = self.client.api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        return found

    def running_image(self, name: str) -> tuple[str, bool] | None:
        """(image id, running) of the container called `name`, or None while unbound."""
        found = self.named(name)
        return None if found is None else (str(found["Image"]), bool(found["State"]["Running"]))

    def events(
        self, since_ns: int, prefix: str, actions: Iterable[str] = ("create",)
    ) -> list[ContainerEvent]:
        """Every container event since `since_ns` (wall time, ns) for names starting with
        `prefix`, in order; read from `Action` and `Actor`, which every API version has
        (1.52 dropped `status`)."""
        events = self.client.api.events(
            since=since_ns // 1_000_000_000,
            until=int(time.time()) + 1,
            filters={"type": "container", "event": list(actions)},
            decode=True,
        )
        found = []
        for event in events:
            name = str(event["Actor"]["Attributes"].get("name", ""))
            if event["timeNano"] >= since_ns and name.startswith(prefix):
                found.append(ContainerEvent(int(event["timeNano"]), str(event["Action"]), name))
        return found

    def exec(self, container: str, *command: str) -> None:
        """Run `command` in a running container; raise if it fails. Its output is no result
        (only part of an error message): the engine can lose the output of a command that
        exits at once (docker/docker-py#2042), so read files with read_file."""
        result = self.client.containers.get(container).exec_run(list(command))
        if result.exit_code != 0:
            output = result.output if isinstance(result.output, bytes) else b"".join(result.output)
            raise RuntimeError(
                f"{' '.join(command)} in {container} exited {result.exit_code}: "
                f"{output.decode('utf-8', 'replace').strip()}"
            )

    def read_file(self, container: str, path: str) -> str:
        """A file's text in a container (running or not), stripped. Through the archive API
        and not `exec cat`: the engine can lose an exec's output when the process exits at
        once (docker/docker-py#2042), which reads as an empty file."""
        stream, _ = self.client.api.get_archive(container, path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None else None
            if extracted is None:
                raise RuntimeError(f"{path} in {container} is not a regular file")
            return extracted.read().decode("utf-8", "replace").strip()

    def track_container(self, name: str) -> None:
        """Have close() remove containers named `name` or starting with it."""
        self._container_names.add(name)

    def cleanup_containers(self, prefix: str) -> None:
        """Force-remove, with anonymous volumes, every container whose name starts with `prefix`."""
        for container in self.client.containers.list(all=True, filters={"name": prefix}):
            if container.name is not None and container.name.startswith(prefix):
                self._remove_container(container.id)
        self._container_names.discard(prefix)

    def _remove_container(self, container_id: str | None) -> None:
        if container_id is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id, v=True, force=True)
        self._container_ids.discard(container_id)

    def _remove_tracked_containers(self) -> None:
        for name in sorted(self._container_names):
            with contextlib.suppress(docker.errors.APIError):
                self.cleanup_containers(name)
        for container_id in sorted(self._container_ids):
            with contextlib.suppress(docker.errors.APIError):
                self._remove_container(container_id)


def _split_ref(ref: str) -> tuple[str, str]:
    """Split ``host:port/repo:tag`` into repository and tag (``latest`` if none)."""
    if "@" in ref:
        repository, digest = ref.split("@", 1)
        return repository, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def json_lines(result: Any) -> Iterator[Any]:
    # import_image returns the engine's progress stream as text, one JSON object a line.
    text = result.decode() if isinstance(result, bytes) else str(result)
    for line in text.splitlines():
        line = line.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)
