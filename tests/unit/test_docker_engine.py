"""The Docker adapter over a stand-in for docker-py's APIClient: a removal already under
way (someone's `docker rm -f` in the middle of a swap) is waited for, not failed on."""

from __future__ import annotations

from typing import Any, cast

import docker
import docker.errors
import pytest
import requests

from receiver.docker_engine import DockerEngine
from receiver.errors import EngineError


def api_error(status: int) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("refused", response=response)


class API:
    def __init__(self, remove_status: int, lingers: int) -> None:
        self.remove_status = remove_status
        self.lingers = lingers  # inspections that still find the container
        self.inspected = 0

    def remove_container(self, container_id: str, **kwargs: Any) -> None:
        del container_id, kwargs
        raise api_error(self.remove_status)

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.inspected += 1
        if self.inspected > self.lingers:
            raise docker.errors.NotFound("gone")
        return {"Id": container_id}


def engine_over(api: API) -> DockerEngine:
    engine = DockerEngine({"DOCKER_HOST": "unix:///nonexistent"})
    stand_in = cast(docker.APIClient, api)
    engine.api = lambda: stand_in  # type: ignore[method-assign]
    return engine


def test_a_removal_under_way_is_waited_for() -> None:
    api = API(remove_status=409, lingers=3)
    engine_over(api).remove("c1", force=True)
    assert api.inspected == 4  # until the container was gone


def test_other_refusals_are_errors() -> None:
    with pytest.raises(EngineError):
        engine_over(API(remove_status=500, lingers=0)).remove("c1", force=True)
    with pytest.raises(EngineError):
        engine_over(API(remove_status=409, lingers=0)).remove("c1")  # not forced: running
