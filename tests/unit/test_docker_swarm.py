"""The Swarm adapter over a stand-in for docker-py's APIClient: what it asks of the manager
and how it reads the answers (tasks, timestamps, errors)."""

from __future__ import annotations

import datetime
from typing import Any, cast

import docker
import docker.errors
import pytest
import requests

from receiver.docker_engine import DockerEngine
from receiver.docker_swarm import DockerSwarm, instant
from receiver.errors import EngineUnavailable
from receiver.swarm import Service, TaskEnd, TaskFailure, UpdateDefaults

IMAGE = "registry.test:5000/org/workspace-template-a:latest@sha256:" + "b" * 64
OLD_IMAGE = "registry.test:5000/org/workspace-template-a:latest@sha256:" + "a" * 64


def task(state: str, at: str, image: str = IMAGE, err: str = "") -> dict[str, Any]:
    return {
        "Spec": {"ContainerSpec": {"Image": image}},
        "Status": {"State": state, "Timestamp": at, "Err": err, "Message": state},
    }


class API:
    """The few APIClient calls the adapter makes, recorded."""

    def __init__(self) -> None:
        self.tasks_answer: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.fail_services: Exception | None = None
        self.spec: dict[str, Any] = {"TaskTemplate": {"ForceUpdate": 3}, "Name": "ws-1"}
        self.filters: list[dict[str, str]] = []

    def services(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        self.filters.append(filters)
        if self.fail_services is not None:
            raise self.fail_services
        return [{"ID": "s1", "Spec": {"Name": "ws-1"}}]

    def tasks(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        self.filters.append(filters)
        return self.tasks_answer

    def inspect_service(self, service_id: str) -> dict[str, Any]:
        return {"ID": service_id, "Version": {"Index": 9}, "Spec": self.spec}

    def update_service(self, service_id: str, **kwargs: Any) -> None:
        self.updates.append({"id": service_id, **kwargs})


def adapter(api: API) -> DockerSwarm:
    engine = DockerEngine({"DOCKER_HOST": "unix:///nonexistent"})
    stand_in = cast(docker.APIClient, api)
    engine.api = lambda: stand_in  # type: ignore[method-assign]
    return DockerSwarm(engine)


SERVICE = Service("s1", "ws-1", 9, OLD_IMAGE, None, None, update_started="2026-12-01T10:00:05Z")


def test_timestamps_are_read_to_the_microsecond_whatever_swarm_trims() -> None:
    """Go trims trailing zeros: `05.52Z` is later than `05.5Z` though it sorts before it."""
    later, earlier = instant("2026-12-01T10:00:05.52Z"), instant("2026-12-01T10:00:05.5Z")
    assert later is not None
    assert earlier is not None
    assert later > earlier
    assert instant("2026-12-01T10:00:05.123456789+01:00") == datetime.datetime(
        2026, 12, 1, 10, 0, 5, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert instant("yesterday") is None
    assert instant(None) is None


def test_task_failures_are_of_the_new_image_since_the_update_began() -> None:
    api = API()
    api.tasks_answer = [
        task("failed", "2026-12-01T10:00:06.5Z", err="exec: not found"),
        task("complete", "2026-12-01T10:00:07Z"),
        task("rejected", "2026-12-01T10:00:08Z", err="No such image"),
        task("failed", "2026-12-01T10:00:06Z", image=OLD_IMAGE, err="old one OOMed"),
        task("failed", "2026-12-01T10:00:04.9Z", err="an earlier attempt"),
        task("shutdown", "2026-12-01T10:00:09Z"),
        task("running", "2026-12-01T10:00:09Z"),
    ]
    found = adapter(api).task_failures(SERVICE, IMAGE, SERVICE.update_started)
    assert found == [
        TaskFailure(TaskEnd.RAN, "exec: not found"),
        TaskFailure(TaskEnd.RAN, "complete"),
        TaskFailure(TaskEnd.REJECTED, "No such image"),
    ]
    assert len(adapter(api).task_failures(SERVICE, None, None)) == 5
    assert api.filters == [{"service": "s1"}] * 2


@pytest.mark.parametrize(
    "error",
    [
        docker.errors.APIError("not a manager", response=None),
        requests.exceptions.ConnectionError("refused"),
    ],
)
def test_services_that_cannot_be_listed_are_engine_unavailable(error: Exception) -> None:
    api = API()
    api.fail_services = error
    with pytest.raises(EngineUnavailable):
        adapter(api).services("ws-")


def test_an_update_keeps_the_spec_and_force_bumps_force_update() -> None:
    api = API()
    swarm = adapter(api)
    defaults = UpdateDefaults(monitor_seconds=2)
    swarm.update_image(SERVICE, IMAGE, defaults)
    swarm.update_image(
        Service("s1", "ws-1", 9, IMAGE, None, None, has_update_config=True),
        IMAGE,
        defaults,
        force=True,
    )
    first, second = api.updates
    assert first["fetch_current_spec"] is True
    assert first["version"] == 9
    assert first["task_template"]["ContainerSpec"]["Image"] == IMAGE
    assert "ForceUpdate" not in first["task_template"]
    assert first["update_config"]["Monitor"] == 2_000_000_000
    assert first["update_config"]["FailureAction"] == "rollback"
    assert second["task_template"]["ForceUpdate"] == 4
    assert second["update_config"] is None  # its own is kept
