"""deploy/Dockerfile for real: built on a local Debian base, run against the test engine.

There is no Docker Hub here, so the base is made with debootstrap and cached outside the
repository (tests/base_image.py). The image is built with host networking (the private
engine has no bridge; pip reaches PyPI through the host) and run the way deploy/compose.yaml
runs it: non-root with the socket's group, read-only, no capabilities, a secret as a file,
the poller on. Set RECEIVER_SKIP_DOCKERFILE_TEST=1 to skip it on a laptop; under CI=true it
never skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import docker
import docker.errors
import httpx
import pytest
from docker.models.containers import Container
from docker.utils.build import exclude_paths

from receiver import config
from tests.support.base_image import BaseImageUnavailable, ensure_base_image
from tests.support.daemons import free_port
from tests.support.stack import QUICK_STOP_CMD, Published, Stack, unique

from .needs import in_ci, unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SKIP_ENV = "RECEIVER_SKIP_DOCKERFILE_TEST"
RECEIVER_UID = 10001
ADMIN_KEY = "dockerfile-test-admin-key"
SOCKET_IN_CONTAINER = "/var/run/docker.sock"
SECONDS = 1_000_000_000  # the engine's durations are in nanoseconds


def _skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> NoReturn:
    unavailable("the Dockerfile's image", reason)


real_image = pytest.mark.skipif(
    _skip_requested() and not in_ci(), reason=f"{SKIP_ENV} is set (ignored under CI=true)"
)


def _build(client: docker.DockerClient, base: str, tag: str, log: Path) -> None:
    """`docker build -f deploy/Dockerfile --build-arg BASE_IMAGE=<base> --network host .`"""
    lines: list[str] = []
    stream = client.api.build(
        path=str(ROOT),
        dockerfile="deploy/Dockerfile",
        tag=tag,
        buildargs={"BASE_IMAGE": base},
        network_mode="host",
        pull=False,
        rm=True,
        forcerm=True,
        decode=True,
        timeout=900,
    )
    try:
        for item in stream:
            if "stream" in item:
                lines.append(str(item["stream"]))
            if "error" in item or "errorDetail" in item:
                detail = item.get("error") or item.get("errorDetail")
                tail = "".join(lines)[-4000:]
                pytest.fail(f"docker build failed: {detail}\n{tail}")
    finally:
        log.write_text("".join(lines))


@pytest.fixture(scope="module")
def receiver_image(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image of deploy/Dockerfile, built on this host's Debian base; removed afterwards."""
    if not stack.docker_host.startswith("unix://"):
        _unavailable(f"the engine at {stack.docker_host} has no socket to mount")
    try:
        base = ensure_base_image(stack.client)
    except BaseImageUnavailable as exc:
        _unavailable(exc.reason)
    tag = f"workspace-image-receiver-test:{unique('build')}"
    try:
        _build(stack.client, base.ref, tag, tmp_path_factory.mktemp("build") / "build.log")
        yield tag
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            stack.client.api.remove_image(tag, force=True)
        # A private engine goes away whole; on a shared one, leave no base we imported.
        if base.imported and not stack.started_engine:
            stack.client.api.remove_image(base.ref, force=True)


def _wait_for(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f}s; receiver log:\n{log()}")
        time.sleep(0.2)


def _proc(container: Container) -> Path:
    """/proc of the running container's first process on this host (the engine runs here):
    its status, and its root, through which this host reads files on the container's tmpfs."""
    container.reload()
    return Path(f"/proc/{container.attrs['State']['Pid']}")


def _run_to_file(container: Container, command: str, path: str) -> str:
    """Run the shell `command` in the container as its own user with its output in `path`;
    that output, stripped. Not read from the exec's stream: the engine can lose the output
    of a process that exits at once (docker/docker-py#2042)."""
    result = container.exec_run(["sh", "-c", f"{command} > {path} 2>&1"])
    text = (_proc(container) / "root" / path.lstrip("/")).read_text(errors="replace").strip()
    assert result.exit_code == 0, f"{command} exited {result.exit_code}: {text}"
    return text


def _proc_status(container: Container) -> dict[str, list[str]]:
    """/proc/<pid>/status of the container's first process: Uid, Gid, Groups, CapEff, ..."""
    fields: dict[str, list[str]] = {}
    text = (_proc(container) / "status").read_text()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return fields


@real_image
def test_image_refreshes_a_workspace_as_non_root(
    stack: Stack, receiver_image: str, tmp_path: Path
) -> None:
    """The container's poller moves a ws container to v2; healthy, uid 10001, exits 0."""
    runtime = unique("rt")
    prefix = f"{unique('ws')}-"
    stack.track_container(prefix)
    repository = f"org/workspace-template-{runtime}"
    v1 = stack.publish(repository, version="v1", cmd=QUICK_STOP_CMD)
    stack.run_container(f"{prefix}one", v1.ref)
    v2: Published = stack.publish(repository, version="v2", cmd=QUICK_STOP_CMD)

    # A secret as a file, readable only by the receiver's user, as compose mounts them.
    key_file = tmp_path / "admin_key"
    key_file.write_text(ADMIN_KEY + "\n")
    key_file.chmod(0o400)
    os.chown(key_file, RECEIVER_UID, RECEIVER_UID)
    socket_path = stack.docker_host.removeprefix("unix://")
    socket_gid = os.stat(socket_path).st_gid
    port = free_port()
    name = unique("receiver")
    stack.track_container(name)
    container: Container = stack.client.containers.run(
        receiver_image,
        command=["serve", "--host", "127.0.0.1", "--port", str(port)],
        name=name,
        detach=True,
        # The private engine has no bridge; on the host's network the receiver reaches
        # the registry on 127.0.0.1 and listens on a free port there.
        network_mode="host",
        group_add=[str(socket_gid)],
        volumes={
            socket_path: {"bind": SOCKET_IN_CONTAINER, "mode": "rw"},
            str(key_file): {"bind": "/run/secrets/admin_key", "mode": "ro"},
        },
        environment={
            "RUNTIMES": runtime,
            "IMAGE_TEMPLATE": f"{stack.registry}/org/workspace-template-{{runtime}}:latest",
            "CONTAINER_PREFIX": prefix,
            "ADMIN_SECRET_KEY_FILE": "/run/secrets/admin_key",
            "IMAGE_AUTO_REFRESH": "true",
            "DOCKER_HOST": f"unix://{SOCKET_IN_CONTAINER}",
            "SWAP_GRACE_SECONDS": "0.5",
            "SWAP_STOP_TIMEOUT": "1",
        },
        read_only=True,
        tmpfs={"/tmp": "rw,noexec,nosuid,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        # Only the timing is overridden: the test command stays the Dockerfile's.
        healthcheck={"interval": 1 * SECONDS, "timeout": 5 * SECONDS, "retries": 3},
    )

    def log() -> str:
        return bytes(container.logs()).decode(errors="replace")

    def on_v2() -> bool:
        return stack.running_image(f"{prefix}one") == (v2.image_id, True)

    def health() -> str:
        container.reload()
        return str(container.attrs["State"].get("Health", {}).get("Status"))

    try:
        _wait_for("the poller did not move the workspace to v2", on_v2, 90, log)
        _wait_for("the container did not become healthy", lambda: health() == "healthy", 30, log)
        assert container.attrs["Config"]["Healthcheck"]["Test"] == [
            "CMD",
            "python",
            "/opt/receiver/healthcheck.py",
        ]

        status = _proc_status(container)
        assert status["Uid"] == [str(RECEIVER_UID)] * 4
        assert status["Gid"] == [str(RECEIVER_UID)] * 4
        assert str(socket_gid) in status["Groups"]
        assert status["CapEff"] == ["0000000000000000"]

        # The admin route, with a token the container's own CLI signs from the secret file.
        token = _run_to_file(
            container, "workspace-image-receiver admin-token --ttl 60", "/tmp/admin-token"
        )
        answer = httpx.get(
            f"http://127.0.0.1:{port}/admin/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["runtimes"][runtime]["seen"] == v2.digest
        assert answer.json()["poller"]["enabled"] is True

        container.stop(timeout=30)
        assert container.wait(timeout=60)["StatusCode"] == 0, log()
        assert ADMIN_KEY not in log()
        assert token not in log()
    finally:
        container.remove(force=True)


def test_build_context_holds_only_what_the_image_needs() -> None:
    """.dockerignore keeps .git, .venv, tests and local env files out of the context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    context = exclude_paths(str(ROOT), patterns, dockerfile="deploy/Dockerfile")
    files = {path for path in context if (ROOT / path).is_file()}
    assert {"pyproject.toml", "README.md", "deploy/Dockerfile", "deploy/healthcheck.py"} <= files
    assert "receiver/cli.py" in files
    # The engine is always sent .dockerignore itself (it never reaches the image).
    outside = {path for path in files if not path.startswith("receiver/")} - {
        ".dockerignore",
        "pyproject.toml",
        "README.md",
        "deploy/Dockerfile",
        "deploy/healthcheck.py",
    }
    assert outside == set()
    assert not any("__pycache__" in path for path in files)


def _table_names() -> set[str]:
    """The setting names in README's configuration table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_env_example_documents_every_setting() -> None:
    """deploy/.env.example names every setting of the README table and every *_FILE form."""
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    expected = _table_names() | set(config.DOCKER_ENV_NAMES)
    expected |= {f"{name}_FILE" for name in config.SECRET_NAMES}
    assert "RUNTIMES" in expected
    assert expected - documented == set()
