"""Recording fakes of the receiver's own interfaces."""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from receiver.container import Container
from receiver.engine import CreateSpec, EngineInfo, Image
from receiver.errors import EngineError, EngineUnavailable, PullError
from receiver.imageref import ImageRef

_ids = itertools.count(1)


def new_id() -> str:
    """A fresh 64-hex container id."""
    return f"{next(_ids):064x}"


def container(
    name: str,
    image_ref: str,
    image_id: str,
    *,
    running: bool = True,
    env: list[str] | None = None,
    cid: str | None = None,
) -> dict[str, Any]:
    """A minimal container inspect like the engine's."""
    cid = cid or new_id()
    return {
        "Id": cid,
        "Name": f"/{name}",
        "Image": image_id,
        "Config": {"Image": image_ref, "Hostname": cid[:12], "Env": env or [], "Cmd": ["sleep"]},
        "HostConfig": {"NetworkMode": "none"},
        "NetworkSettings": {"Networks": {"none": {}}},
        "Mounts": [],
        "State": {"Running": running, "Restarting": False, "ExitCode": 0},
    }


def sidecar(engine: FakeEngine, owner: str, mode: str) -> str:
    """Add `side`, a container that joins `owner`'s namespace (`--network` or `--pid
    container:<id>`); its id."""
    side = container("side", "ghcr.io/org/sidecar:1", "sha256:" + "5c" * 32)
    side["HostConfig"] = {
        "NetworkMode": f"container:{owner}" if mode == "network" else "none",
        **({"PidMode": f"container:{owner}"} if mode == "pid" else {}),
    }
    engine.images["ghcr.io/org/sidecar:1"] = Image("sha256:" + "5c" * 32)
    return engine.add(side)


class FakeEngine:
    """An in-memory engine that records every call; `fail` makes named operations raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.registry: dict[str, Image] = {}
        self.images: dict[str, Image] = {}
        self.containers: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, Exception] = {}
        self.fail_pull: dict[str, Exception] = {}
        self.start_state: dict[str, Any] = {"Running": True, "Restarting": False}
        self.engine_info = EngineInfo(api_version=(1, 41))
        # What `exec` answers, by container name: an exit status, or None for a time-out.
        self.exec_answers: dict[str, int | None] = {}
        self._lock = threading.Lock()

    def add(self, inspect: dict[str, Any]) -> str:
        self.containers[inspect["Id"]] = inspect
        return str(inspect["Id"])

    def publish(
        self, ref: str, image_id: str, digest: str, config: Mapping[str, Any] | None = None
    ) -> Image:
        image = Image(
            id=image_id, repo_digests=(f"{ref.rsplit(':', 1)[0]}@{digest}",), config=config or {}
        )
        self.registry[ref] = image
        return image

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.containers.values() if c["Name"] == f"/{name}"), None)

    def container(self, container_id: str) -> Container:
        """The value the engine would give for a container it holds."""
        return Container.from_inspect(copy.deepcopy(self.containers[container_id]))

    def _record(self, *call: str) -> None:
        with self._lock:
            self.calls.append(call)
        if call[0] in self.fail:
            raise self.fail[call[0]]

    def ping(self) -> None:
        self._record("ping")

    def info(self) -> EngineInfo:
        return self.engine_info

    def pull(self, ref: ImageRef) -> Image:
        self._record("pull", str(ref))
        if str(ref) in self.fail_pull:
            raise self.fail_pull[str(ref)]
        if str(ref) not in self.registry:
            raise PullError(f"pull {ref} failed: manifest unknown")
        image = self.registry[str(ref)]
        previous = self.images.get(str(ref))
        if self.engine_info.containerd_store and previous is not None and previous.id != image.id:
            # The containerd image store forgets an image once no tag names it.
            self.images.pop(previous.id, None)
        self.images[image.id] = image
        self.images[str(ref)] = image
        return image

    def image(self, ref_or_id: str) -> Image | None:
        self._record("image", ref_or_id)
        return self.images.get(ref_or_id)

    def list_containers(self, prefix: str) -> list[Container]:
        self._record("list", prefix)
        return [
            Container.from_inspect(copy.deepcopy(c))
            for c in self.containers.values()
            if prefix in c["Name"]
        ]

    def inspect_container(self, container_id: str) -> Container | None:
        self._record("inspect", container_id)
        found = self.containers.get(container_id)
        return Container.from_inspect(copy.deepcopy(found)) if found is not None else None

    def create_container(self, spec: CreateSpec) -> str:
        self._record("create", spec.name)
        if self.by_name(spec.name) is not None:
            raise EngineError(f"Conflict. The container name /{spec.name} is already in use")
        image = self.images.get(spec.body["Image"])
        cid = new_id()
        self.containers[cid] = {
            "Id": cid,
            "Name": f"/{spec.name}",
            "Image": image.id if image else "missing",
            "Config": {
                k: v for k, v in spec.body.items() if k not in ("HostConfig", "NetworkingConfig")
            },
            "HostConfig": spec.body.get("HostConfig", {}),
            "spec": spec,
            "State": {"Running": False, "Restarting": False, "ExitCode": 0},
        }
        return cid

    def rename(self, container_id: str, name: str) -> None:
        self._record("rename", container_id, name)
        if self.by_name(name) is not None:
            raise EngineError(f"Conflict. The container name /{name} is already in use")
        self.containers[container_id]["Name"] = f"/{name}"

    def start(self, container_id: str) -> None:
        self._record("start", container_id)
        self.containers[container_id]["State"] = dict(self.start_state)

    def stop(self, container_id: str, timeout: int) -> None:
        self._record("stop", container_id, str(timeout))
        if (self.containers[container_id].get("HostConfig") or {}).get("AutoRemove"):
            del self.containers[container_id]  # `docker run --rm`: gone once it stops
            return
        self.containers[container_id]["State"] = {
            "Running": False,
            "Restarting": False,
            "ExitCode": 0,
        }

    def remove(self, container_id: str, *, force: bool = False) -> None:
        self._record("remove", container_id, "force" if force else "keep")
        self.containers.pop(container_id, None)

    def exec(self, container_id: str, command: Sequence[str], timeout: float) -> int | None:
        self._record("exec", container_id, " ".join(command), f"{timeout:g}")
        name = str(self.containers[container_id]["Name"]).lstrip("/")
        return self.exec_answers.get(name, 0)

    def tag(self, image: str, ref: str) -> None:
        self._record("tag", image, ref)
        self.images[ref] = self.images[image]

    def untag(self, ref: str) -> None:
        self._record("untag", ref)
        self.images.pop(ref, None)

    def remove_image(self, image_id: str) -> bool:
        self._record("remove_image", image_id)
        if any(c["Image"] == image_id for c in self.containers.values()):
            return False  # the engine answers 409: a container uses it
        self.images.pop(image_id, None)
        return True

    def ops(self) -> list[str]:
        """Just the operation names, in order, without reads."""
        return [c[0] for c in self.calls if c[0] not in ("inspect", "image", "list", "ping")]


class ManualClock:
    """A Clock for timers on the event loop: a pause waits until the test moves time past
    its end with `advance()`; blocking sleeps (the swap's) pass at once, as in FakeClock."""

    def __init__(self, start: float = 0.0, wall_start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall_start - start
        self.sleeps: list[float] = []
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []

    def wall(self) -> float:
        return self.now + self.wall_offset

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def pause(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((self.now + seconds, woken))
        await woken

    def pending(self) -> list[float]:
        """When the pauses still waiting end."""
        return sorted(due for due, woken in self._waiting if not woken.done())

    async def advance(self, seconds: float) -> None:
        """Move time on, wake every pause that ended, and let the woken tasks run."""
        self.now += seconds
        still: list[tuple[float, asyncio.Future[None]]] = []
        for due, woken in self._waiting:
            if woken.done():
                continue
            if due <= self.now:
                woken.set_result(None)
            else:
                still.append((due, woken))
        self._waiting = still
        for _ in range(3):
            await asyncio.sleep(0)


class FakeClock:
    """A Clock whose sleeps and pauses advance time at once; wall time runs beside it."""

    def __init__(self, start: float = 0.0, wall_start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall_start - start
        self.sleeps: list[float] = []

    def wall(self) -> float:
        return self.now + self.wall_offset

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def pause(self, seconds: float) -> None:
        self.sleep(seconds)


__all__ = ["EngineError", "EngineUnavailable", "FakeClock", "FakeEngine", "PullError", "container"]


STALE_REF = "ghcr.io/org/workspace-template-a:latest"
STALE_OLD, STALE_NEW = "sha256:" + "0a" * 32, "sha256:" + "0b" * 32
STALE_DIGEST = "sha256:" + "2" * 64


def engine_with_stale_workspace() -> FakeEngine:
    """An engine whose registry has a new image for runtime `a` and one ws- container on the old."""
    engine = FakeEngine()
    engine.publish(STALE_REF, STALE_NEW, STALE_DIGEST)
    engine.add(container("ws-1", STALE_REF, STALE_OLD))
    return engine
