"""Boot seeding: the digest each runtime's containers already run, read from the host.

With `seen` seeded from the host, an update published while the receiver was down is
caught on the first poll, and a restart alone recreates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import imageref
from .config import Config
from .engine import Engine
from .images import ImageMemory


@dataclass(frozen=True)
class HostSeed:
    """What the host runs for one runtime.

    `digest` is the registry digest every matching container (or, without containers, the
    local tag) runs. `stale` means the containers disagree or run an image the registry
    never served, so the first observation of the registry should refresh, not just seed.
    """

    digest: str | None
    stale: bool = False


def decide(container_digests: Sequence[str | None], tag_digest: str | None) -> HostSeed:
    """The seed from the digests the runtime's containers run and the local tag's digest."""
    if not container_digests:
        return HostSeed(tag_digest)
    distinct = set(container_digests)
    if len(distinct) == 1 and None not in distinct:
        return HostSeed(container_digests[0])
    return HostSeed(None, stale=True)


def host_seeds(
    engine: Engine, config: Config, runtimes: Sequence[str], images: ImageMemory
) -> dict[str, HostSeed]:
    """Read each runtime's seed from the engine; EngineUnavailable when it cannot list."""
    containers = engine.list_containers(config.container_prefix)
    # On the containerd image store an image's id is its registry digest, which holds
    # even once no tag names the image any more and it cannot be inspected.
    id_is_digest = engine.info().containerd_store

    def digest_of(ref_or_id: str, ref: imageref.ImageRef) -> str | None:
        found = images.get(ref_or_id)
        if found is not None:
            return imageref.digest_for(list(found.repo_digests), ref)
        return ref_or_id if id_is_digest and imageref.is_digest(ref_or_id) else None

    seeds: dict[str, HostSeed] = {}
    for runtime in runtimes:
        ref = config.image_for(runtime)
        mine = [c for c in containers if c.is_workspace_of(config.container_prefix, ref)]
        running = [digest_of(c.image_id, ref) for c in mine]
        seeds[runtime] = decide(running, None if mine else digest_of(str(ref), ref))
    return seeds
