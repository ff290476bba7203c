"""The test stack itself works: images publish, pulls are real, containers run."""

from __future__ import annotations

from tests.support.stack import QUICK_STOP_CMD, Stack


def test_versions_publish_distinct_images(stack: Stack) -> None:
    repo = stack.unique("stack-versions")
    v1 = stack.publish(repo, version="v1")
    v2 = stack.publish(repo, version="v2")

    assert v1.ref == v2.ref == f"{stack.registry}/{repo}:latest"
    assert v1.digest.startswith("sha256:")
    assert v2.digest.startswith("sha256:")
    assert v1.digest != v2.digest
    assert v1.image_id != v2.image_id


def test_published_ref_is_pulled_from_the_registry(stack: Stack) -> None:
    published = stack.publish(stack.unique("stack-pull"), version="v1")
    assert not stack.image_present(published.ref)
    assert not stack.image_present(published.image_id)

    assert stack.pull_local(published.ref) == published.image_id
    repo_digests = stack.client.images.get(published.ref).attrs["RepoDigests"]
    assert repo_digests == [f"{published.ref.rsplit(':', 1)[0]}@{published.digest}"]


def test_run_container_is_running_without_network(stack: Stack) -> None:
    published = stack.publish(
        stack.unique("stack-run"),
        version="v7",
        env={"GREETING": "hello world"},
        labels={"org.example.role": "workspace"},
        cmd=QUICK_STOP_CMD,
    )
    name = stack.unique("stack-run")
    container_id = stack.run_container(name, published.ref, labels={"extra": "1"})

    container = stack.client.containers.get(container_id)
    assert container.status == "running"
    assert container.name == name
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    assert "GREETING=hello world" in container.attrs["Config"]["Env"]
    assert container.labels == {"org.example.role": "workspace", "extra": "1"}
    assert stack.read_file(name, "/version") == "v7"

    container.stop(timeout=10)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0

    stack.cleanup_containers(name)
    assert stack.client.containers.list(all=True, filters={"name": name}) == []
