"""The image memory: old images' configs read before the pull, so a store that forgets
untagged images (the containerd image store) still lets the new image's defaults through."""

from __future__ import annotations

from receiver.engine import EngineInfo
from receiver.imageref import parse
from receiver.images import ImageMemory
from tests.support import wiring
from tests.support.fakes import FakeEngine, container

REF = "ghcr.io/org/workspace-template-a:latest"
V1, V2 = "sha256:" + "1a" * 32, "sha256:" + "2b" * 32
D1, D2 = V1, V2  # on the containerd store an image's id is its registry digest
PINNED = f"ghcr.io/org/workspace-template-a@{D1}"
V1_CONFIG = {"Cmd": ["/v1"], "Env": ["PATH=/bin", "MODE=v1"], "Labels": {"v": "1"}}
V2_CONFIG = {"Cmd": ["/v2"], "Env": ["PATH=/bin", "MODE=v2"], "Labels": {"v": "2"}}


def containerd_host() -> FakeEngine:
    """ws-1 runs v1, which the local tag names; the registry's tag has moved to v2."""
    engine = FakeEngine()
    engine.engine_info = EngineInfo(api_version=(1, 45), containerd_store=True)
    engine.images[REF] = engine.images[V1] = engine.publish(REF, V1, D1, V1_CONFIG)
    engine.publish(REF, V2, D2, V2_CONFIG)
    inspect = container("ws-1", REF, V1, env=["PATH=/bin", "MODE=v1"])
    inspect["Config"].update(Cmd=["/v1"], Labels={"v": "1"})
    engine.add(inspect)
    return engine


def test_the_old_config_is_read_before_the_pull_makes_it_unreadable() -> None:
    """The refresh inspects the image ws-1 runs before pulling; after the pull the engine
    has forgotten v1, yet the replacement carries none of v1's defaults."""
    engine = containerd_host()
    result = wiring.service(engine, wiring.settings()).refresh(["a"])
    assert result.recreated == ["ws-1"]
    assert engine.image(V1) is None  # the pull made v1 unreadable, as containerd does
    created = engine.by_name("ws-1")
    assert created is not None
    body = created["spec"].body
    assert "Cmd" not in body
    assert "Labels" not in body
    assert "Env" not in body
    reads = [call for call in engine.calls if call[0] in ("image", "pull")]
    assert reads.index(("image", V1)) < reads.index(("pull", REF))


def test_a_forgotten_image_is_pulled_again_by_its_digest() -> None:
    """Started after the tag moved: the config of the image ws-1 runs comes back by a pull
    of `repo@<its id>`, which on the containerd store is its digest."""
    engine = containerd_host()
    engine.pull(parse(REF))  # someone pulled v2 before the receiver started: v1 forgotten
    engine.publish(PINNED, V1, D1, V1_CONFIG)  # the registry still serves v1 by digest
    memory = ImageMemory(engine)
    assert memory.get(V1) is None
    recovered = memory.recover(V1, parse(REF))
    assert recovered is not None
    assert recovered.config == V1_CONFIG
    assert ("pull", PINNED) in engine.calls


def test_no_second_pull_where_image_ids_are_not_digests() -> None:
    """On a graph-driver store the id is a config digest, never pulled by: unknown stays
    unknown (the engine keeps such images inspectable while containers run them)."""
    engine = FakeEngine()
    memory = ImageMemory(engine)
    assert memory.recover(V1, parse(REF)) is None
    assert [call for call in engine.calls if call[0] == "pull"] == []


def test_the_memory_keeps_the_newest_images() -> None:
    """A bounded memory drops the image remembered longest ago."""
    engine = FakeEngine()
    memory = ImageMemory(engine, capacity=2)
    for n in "123":
        memory.remember(engine.publish(REF, "sha256:" + n * 64, "sha256:" + n * 64))
    assert memory.known("sha256:" + "1" * 64) is None
    assert memory.known("sha256:" + "3" * 64) is not None


def test_boot_seeding_reads_the_digest_from_the_id_on_the_containerd_store() -> None:
    """The image ws-1 runs is forgotten (the tag moved), but its id is its digest: the
    seed is that digest, so the first poll sees the registry's newer one and refreshes."""
    engine = containerd_host()
    engine.pull(parse(REF))
    service = wiring.service(engine, wiring.settings())
    assert service.host_seeds(["a"])["a"].digest == D1
