"""The refresh service: matching, idempotence, per-runtime soft-fail and result shape."""

from __future__ import annotations

import pytest

from receiver.container import Container, Inspect
from receiver.engine import Image
from receiver.errors import Cause, EngineUnavailable, PullError, UnknownRuntime
from receiver.imageref import ImageRef, parse
from receiver.outcomes import Failure
from receiver.refresh import RefreshService
from receiver.result import RefreshResult
from tests.support import wiring
from tests.support.fakes import FakeEngine, container, sidecar

REF_A = "ghcr.io/org/workspace-template-a:latest"
REF_B = "ghcr.io/org/workspace-template-b:latest"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
OLD, NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32


def make(engine: FakeEngine, runtimes: str = "a,b") -> RefreshService:
    return wiring.service(engine, wiring.settings(runtimes))


def matches(inspect: Inspect, prefix: str, ref: ImageRef) -> bool:
    return Container.from_inspect(inspect).is_workspace_of(prefix, ref)


@pytest.mark.parametrize(
    ("name", "image", "expected"),
    [
        ("ws-1", REF_A, True),
        ("ws-1", "GHCR.io/org/workspace-template-a", True),
        ("ws-1", "ghcr.io/org/workspace-template-a:v2", False),
        ("ws-1", "ghcr.io/org/workspace-template-ab:latest", False),
        ("ws-1", "docker.io/org/workspace-template-a:latest", False),
        ("my-ws-1", REF_A, False),
        ("ws-1-receiver-aside", REF_A, False),
        ("ws-1", OLD, False),
    ],
)
def test_matching_is_exact(name: str, image: str, expected: bool) -> None:
    """Name prefix anchored at the start, image compared after normalisation, asides excluded."""
    assert matches(container(name, image, OLD), "ws-", parse(REF_A)) is expected


def test_docker_hub_names_normalise() -> None:
    """`busybox` and `docker.io/library/busybox:latest` are the same image."""
    assert matches(
        container("ws-1", "busybox", OLD), "ws-", parse("docker.io/library/busybox:latest")
    )


def test_refresh_recreates_only_stale_containers_of_each_runtime() -> None:
    """Stale containers are swapped; current ones, other runtimes' and unprefixed ones are not."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    engine.publish(REF_B, OLD, D1)
    engine.images[OLD] = engine.registry[REF_B]
    stale = engine.add(container("ws-stale", REF_A, OLD, env=["USER_SET=1"]))
    current = engine.add(container("ws-current", REF_A, NEW))
    other = engine.add(container("ws-b", REF_B, OLD))
    unprefixed = engine.add(container("app", REF_A, OLD))

    result = make(engine).refresh()

    assert result.as_json() == {
        "pulled": ["a", "b"],
        "recreated": ["ws-stale"],
        "unchanged": ["ws-b", "ws-current"],
        "failed": {},
        "digests": {"a": D2, "b": D1},
        "repaired": {},
        "removed_images": [],
        "skipped": {},
        "deferred": {},
    }
    assert stale not in engine.containers
    replacement = engine.by_name("ws-stale")
    assert replacement is not None
    assert replacement["Image"] == NEW
    assert replacement["Config"]["Env"] == ["USER_SET=1"]
    assert {current, other, unprefixed} <= set(engine.containers)


def test_a_container_joined_to_a_workspace_during_the_pull_follows_its_swap() -> None:
    """The containers that join a workspace's namespaces are looked up when its swap is
    decided, not when the refresh began: one started while the image was pulled (which can
    take minutes) joins the replacement, not the removed old container."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    workspace = engine.add(container("ws-1", REF_A, OLD))
    pull = engine.pull

    def pull_while_a_sidecar_starts(ref: ImageRef) -> Image:
        sidecar(engine, workspace, "network")
        return pull(ref)

    engine.pull = pull_while_a_sidecar_starts  # type: ignore[method-assign]
    result = make(engine, "a").refresh()
    assert result.recreated == ["ws-1"]
    replacement, follower = engine.by_name("ws-1"), engine.by_name("side")
    assert replacement is not None
    assert follower is not None
    assert follower["HostConfig"]["NetworkMode"] == f"container:{replacement['Id']}"
    assert follower["State"]["Running"] is True


def test_second_refresh_recreates_nothing() -> None:
    """Refresh is idempotent: once containers run the pulled image, nothing is swapped."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    engine.add(container("ws-1", REF_A, OLD))
    service = make(engine, "a")
    assert service.refresh().recreated == ["ws-1"]
    engine.calls.clear()
    again = service.refresh()
    assert again.recreated == []
    assert again.unchanged == ["ws-1"]
    assert engine.ops() == ["pull"]


def test_force_recreates_current_containers() -> None:
    """With force, a container already on the pulled image is swapped anyway."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    engine.add(container("ws-1", REF_A, NEW))
    assert make(engine, "a").refresh(force=True).recreated == ["ws-1"]


def test_no_recreate_only_pulls() -> None:
    """recreate=False pulls and lists nothing."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    engine.add(container("ws-1", REF_A, OLD))
    result = make(engine, "a").refresh(recreate=False)
    assert result.pulled == ["a"]
    assert result.recreated == []
    assert [c[0] for c in engine.calls] == ["pull"]


def test_a_failed_pull_touches_no_container_and_spares_other_runtimes() -> None:
    """One runtime's pull error lands in failed; the other runtime still refreshes."""
    engine = FakeEngine()
    engine.publish(REF_B, NEW, D2)
    engine.fail_pull[REF_A] = PullError("pull a failed: manifest unknown")
    a = engine.add(container("ws-a", REF_A, OLD))
    engine.add(container("ws-b", REF_B, OLD))

    result = make(engine).refresh()

    assert result.as_json()["failed"] == {"a": "pull a failed: manifest unknown"}
    assert result.failed["a"].cause is Cause.TRANSIENT
    assert result.pulled == ["b"]
    assert result.recreated == ["ws-b"]
    assert engine.containers[a]["Image"] == OLD
    assert not result.ok


def test_a_failed_swap_is_reported_by_container_and_others_go_on() -> None:
    """A container whose replacement cannot start is restored and named in failed."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    engine.add(container("ws-1", REF_A, OLD))
    engine.start_state = {"Running": False, "Restarting": False, "ExitCode": 3}
    result = make(engine, "a").refresh()
    assert list(result.failed) == ["ws-1"]
    assert "exit code 3" in result.failed["ws-1"].reason
    assert "old container restored" in result.failed["ws-1"].reason
    assert result.failed["ws-1"].cause is Cause.IMAGE
    assert result.failed["ws-1"].restored is True
    restored = engine.by_name("ws-1")
    assert restored is not None
    assert restored["Image"] == OLD


def test_listing_failure_is_an_error() -> None:
    """When containers cannot be listed at all, refresh raises (the route answers 500)."""
    engine = FakeEngine()
    engine.fail["list"] = EngineUnavailable("cannot list containers")
    with pytest.raises(EngineUnavailable):
        make(engine).refresh()
    assert "pull" not in engine.ops()


def test_unknown_runtime_is_refused_before_any_work() -> None:
    """Naming a runtime outside RUNTIMES raises and pulls nothing."""
    engine = FakeEngine()
    with pytest.raises(UnknownRuntime):
        make(engine).refresh(["a", "evil"])
    assert engine.calls == []


def test_a_container_removed_meanwhile_is_skipped() -> None:
    """A container that vanishes between listing and its swap is neither swapped nor failed."""
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    service = make(engine, "a")
    listed = [Container.from_inspect(container("ws-gone", REF_A, OLD))]
    result = service.refresh_runtime("a", containers=listed)
    assert result.recreated == []
    assert result.failed == {}


def test_results_merge_and_sort() -> None:
    """Merged results keep every entry; JSON lists are sorted for stable answers."""
    one = RefreshResult(pulled=["b"], recreated=["ws-2"], digests={"b": D1})
    boom = Failure("ws-3", "boom")
    one.merge(RefreshResult(pulled=["a"], recreated=["ws-1"], failed={"ws-3": boom}))
    assert one.as_json()["pulled"] == ["a", "b"]
    assert one.as_json()["recreated"] == ["ws-1", "ws-2"]
    assert one.failed == {"ws-3": boom}


def cleanup_world(cleanup: str) -> tuple[FakeEngine, RefreshService]:
    engine = FakeEngine()
    engine.publish(REF_A, NEW, D2)
    engine.images[OLD] = engine.publish("ghcr.io/org/old:1", OLD, D1)
    engine.add(container("ws-1", REF_A, OLD))
    engine.add(container("ws-2", REF_A, OLD))
    return engine, wiring.service(engine, wiring.settings(IMAGE_CLEANUP=cleanup))


def test_image_cleanup_is_off_by_default() -> None:
    """Without IMAGE_CLEANUP the replaced image stays."""
    engine, service = cleanup_world("false")
    result = service.refresh(["a"])
    assert result.removed_images == []
    assert OLD in engine.images
    assert "remove_image" not in engine.ops()


def test_image_cleanup_removes_the_replaced_image_once_nothing_uses_it() -> None:
    """IMAGE_CLEANUP=true: after both swaps the old image is removed, the new one kept."""
    engine, service = cleanup_world("true")
    result = service.refresh(["a"])
    assert result.recreated == ["ws-1", "ws-2"]
    assert result.removed_images == [OLD]
    assert OLD not in engine.images
    assert NEW in engine.images


def test_image_cleanup_keeps_an_image_a_failed_swap_still_runs() -> None:
    """When one swap fails its container keeps the old image, and so does the engine."""
    engine, service = cleanup_world("true")
    original = engine.create_container
    creates = 0

    def create_once(spec: object) -> str:
        nonlocal creates
        creates += 1
        if creates == 2:
            raise EngineUnavailable("engine hiccup")
        return original(spec)  # type: ignore[arg-type]

    engine.create_container = create_once  # type: ignore[method-assign]
    result = service.refresh(["a"])
    assert len(result.recreated) == 1
    assert len(result.failed) == 1
    assert result.removed_images == []
    assert OLD in engine.images
