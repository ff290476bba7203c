"""Trigger-to-running and swap scaling, ours against the docker CLI, on the test stack's engine.

Each runtime `<r>` has K workspaces ``ws-<r>-<i>`` (busybox, QUICK_STOP_CMD so a stop takes
no stop timeout, a named volume on /workspace, network none).  Three receivers watch them
all, one with the default SWAP_PARALLELISM (16), one with the earlier default 4, both with
the default canary (ROLLOUT_CANARY=1: one container swapped and proven alone first), and
one with parallelism 16 and no canary (trigger-to-running only); only the one asked acts.
Every
measured step first publishes a new version of the runtime's image (not timed), so each
step has a real pull (a new layer) or, for swap scaling, a new image already pulled.

Trigger-to-running: a signed `package` delivery for the new digest, timed from sending it
to every container running the new image (polled on the engine) and to the swap settled
(old containers removed); split into acknowledgement, pull and swap from the receiver's
log.  The floor: `docker pull`, then per container, all in parallel, `docker stop`,
`docker rm`, `docker run` — no rename aside, no health wait, no way back.

Swap scaling: the image already pulled, an admin refresh (answers when done) against a
sequential CLI script (stop, rm, run, one container after another).
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from receiver.admin_auth import AdminTokens
from tests.support.stack import QUICK_STOP_CMD

from . import deliveries
from .util import Child, free_port, ratios, say, server_python, server_pythonpath, summary

GRACE_SECONDS = 0.5
DEFAULT_PARALLELISM = 16  # the receiver's default
LOW_PARALLELISM = 4  # the earlier default, for comparison
SETTLE_TIMEOUT = 300.0
LOW_LABEL = f"ours P={LOW_PARALLELISM}"
# The default rollout swaps one canary alone and proves it before the rest: one wave more.
# This receiver has none (ROLLOUT_CANARY=0): the swap machinery alone, against the floor.
NO_CANARY_LABEL = "ours, no canary"


def runtime_name(kind: str, k: int) -> str:
    return f"{kind}{k:02d}"


def names(runtime: str, k: int) -> list[str]:
    return [f"ws-{runtime}-{i}" for i in range(k)]


class Fleet:
    """The runtimes, their containers and the two receivers."""

    def __init__(
        self, stack: Any, workdir: Path, sizes: dict[str, int], variants: dict[str, str]
    ) -> None:
        self.stack = stack
        self.workdir = workdir
        self.sizes = sizes  # runtime -> K
        self.secret = deliveries.new_secret()
        self.admin_key = deliveries.new_secret()
        self.token = AdminTokens((self.admin_key,)).mint(ttl=7200, subject="bench")
        # label -> (receiver, its SWAP_PARALLELISM, its ROLLOUT_CANARY); variants run with
        # their PYTHONPATH.
        self.receivers: dict[str, tuple[Child, int, int]] = {}
        self.variants = variants
        self.versions = 0
        self.env = {**os.environ, "DOCKER_HOST": stack.docker_host}

    def publish(self, runtime: str) -> Any:
        self.versions += 1
        return self.stack.publish(
            deliveries.repository(runtime),
            version=f"{runtime}-v{self.versions}",
            cmd=QUICK_STOP_CMD,
            volumes=["/workspace"],
        )

    def start(self) -> None:
        jobs = []
        for runtime, k in self.sizes.items():
            first = self.publish(runtime)
            self.stack.pull_local(first.ref)
            jobs += [(name, first.ref) for name in names(runtime, k)]
        say(f"swaps: creating {len(jobs)} workspace containers")

        def create(job: tuple[str, str]) -> None:
            name, ref = job
            volume = {f"{name}-data": {"bind": "/workspace", "mode": "rw"}}
            self.stack.run_container(name, ref, volumes=volume)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(create, jobs))
        setups = [
            ("ours", DEFAULT_PARALLELISM, 1, ""),
            (LOW_LABEL, LOW_PARALLELISM, 1, ""),
            (NO_CANARY_LABEL, DEFAULT_PARALLELISM, 0, ""),
        ]
        setups += [
            (f"ours {name}", DEFAULT_PARALLELISM, 1, path) for name, path in self.variants.items()
        ]
        for label, parallelism, canary, pythonpath in setups:
            port = free_port()
            env = {
                **self.env,
                "RUNTIMES": ",".join(self.sizes),
                "IMAGE_TEMPLATE": deliveries.image_template(self.stack.registry),
                "CONTAINER_PREFIX": "ws-",
                "GITHUB_WEBHOOK_SECRET": self.secret,
                "ADMIN_SECRET_KEY": self.admin_key,
                "SWAP_GRACE_SECONDS": str(GRACE_SECONDS),
                "SWAP_PARALLELISM": str(parallelism),
                "ROLLOUT_CANARY": str(canary),
            }
            env["PYTHONPATH"] = server_pythonpath(pythonpath)
            slug = label.replace(" ", "-").replace("=", "")
            child = Child(
                f"receiver {label}",
                [server_python(), "-m", "receiver", "serve", "--port", str(port)],
                self.workdir / f"swap-{slug}.log",
                env=env,
                cwd=self.workdir,
                cpu=None,
                port=port,
            )
            child.wait_http(f"{child.base}/readyz")
            self.receivers[label] = (child, parallelism, canary)

    def close(self) -> None:
        for child, _, _ in self.receivers.values():
            child.stop()
        # Later benchmarks (memory) boot receivers that would list these workspaces too.
        for runtime in self.sizes:
            self.stack.cleanup_containers(f"ws-{runtime}-")

    # -- observing the engine ------------------------------------------------------------

    def on_image(self, runtime: str, image_id: str) -> tuple[bool, bool]:
        """(every container runs `image_id`, and no old container is left aside)."""
        rows = self.stack.client.api.containers(all=True, filters={"name": f"ws-{runtime}-"})
        by_name = {str(row["Names"][0]).lstrip("/"): row for row in rows}
        running = all(
            name in by_name
            and by_name[name]["State"] == "running"
            and by_name[name]["ImageID"] == image_id
            for name in names(runtime, self.sizes[runtime])
        )
        aside = any("-receiver-aside" in name for name in by_name)
        return running, running and not aside

    def wait_on(self, runtime: str, image_id: str) -> tuple[float, float]:
        """Monotonic times when all ran the image, and when nothing was left aside."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        first_running: float | None = None
        while time.monotonic() < deadline:
            running, settled = self.on_image(runtime, image_id)
            now = time.monotonic()
            if running and first_running is None:
                first_running = now
            if settled:
                return first_running or now, now
            time.sleep(0.02)
        raise RuntimeError(f"{runtime}: containers not on {image_id[:19]} in time")

    # -- the docker CLI ----------------------------------------------------------------------

    def cli(self, *args: str) -> None:
        subprocess.run(["docker", *args], env=self.env, check=True, capture_output=True)

    def cli_replace(self, name: str, ref: str) -> None:
        self.cli("stop", name)
        self.cli("rm", name)
        self.cli(
            "run", "-d", "--name", name, "--network", "none", "-v", f"{name}-data:/workspace", ref
        )


def _log_times(path: Path, offset: int, runtime: str) -> dict[str, float]:
    """Wall-clock times of the receiver's 'pulled' and 'refresh from' lines after `offset`."""
    found: dict[str, float] = {}
    with path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        marks = (
            ("pulled", f"runtime {runtime}: pulled "),
            ("done", f"runtime {runtime}: refresh from"),
        )
        for key, mark in marks:
            if mark in line and key not in found:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                found[key] = stamp.timestamp()
                if key == "done" and " 0 failed" not in line:
                    raise RuntimeError(f"refresh failed: {line}")
    return found


def _wait_log(path: Path, offset: int, runtime: str, timeout: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _log_times(path, offset, runtime)
        if "done" in found:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"{runtime}: the receiver logged no finished refresh")


def trigger_ours(fleet: Fleet, runtime: str, label: str) -> dict[str, float]:
    receiver = fleet.receivers[label][0]
    new = fleet.publish(runtime)
    body = deliveries.package_body(runtime, new.digest)
    headers = deliveries.headers(body, fleet.secret)
    offset = receiver.log_path.stat().st_size
    metric_before = _metric_sum(receiver, runtime)
    wall0, t0 = time.time(), time.monotonic()
    answer = httpx.post(f"{receiver.base}/webhooks/github", content=body, headers=headers)
    acked = time.monotonic()
    if answer.status_code != 202 or answer.json().get("runtimes") != {runtime: "scheduled"}:
        raise RuntimeError(f"delivery answered {answer.status_code}: {answer.text}")
    running, settled = fleet.wait_on(runtime, new.image_id)
    logged = _wait_log(receiver.log_path, offset, runtime)
    pulled = logged["pulled"] - wall0  # seconds after sending, wall clock (ms resolution)
    return {
        # The receiver's own receiver_trigger_to_running_seconds for this refresh: from the
        # delivery's arrival to the refresh's end (old containers removed).
        "metric": _metric_sum(receiver, runtime) - metric_before,
        "ack": acked - t0,
        "pull": max(pulled - (acked - t0), 0.0),
        "swap": settled - t0 - pulled,
        "running": running - t0,
        "total": settled - t0,
    }


def _metric_sum(receiver: Child, runtime: str) -> float:
    """The receiver's receiver_trigger_to_running_seconds_sum for `runtime` (0 if none yet)."""
    text = httpx.get(f"{receiver.base}/metrics", timeout=10).text
    mark = f'receiver_trigger_to_running_seconds_sum{{runtime="{runtime}"}} '
    for line in text.splitlines():
        if line.startswith(mark):
            return float(line[len(mark) :])
    return 0.0


def trigger_floor(fleet: Fleet, runtime: str) -> dict[str, float]:
    new = fleet.publish(runtime)
    t0 = time.monotonic()
    fleet.cli("pull", "-q", new.ref)
    pulled = time.monotonic()
    with ThreadPoolExecutor(max_workers=fleet.sizes[runtime]) as pool:
        list(
            pool.map(lambda n: fleet.cli_replace(n, new.ref), names(runtime, fleet.sizes[runtime]))
        )
    done = time.monotonic()
    if not fleet.on_image(runtime, new.image_id)[1]:
        raise RuntimeError(f"{runtime}: the CLI floor did not leave every container on the image")
    return {
        "ack": 0.0,
        "pull": pulled - t0,
        "swap": done - pulled,
        "running": done - t0,
        "total": done - t0,
    }


def swap_ours(fleet: Fleet, runtime: str, label: str) -> float:
    receiver = fleet.receivers[label][0]
    new = fleet.publish(runtime)
    fleet.stack.pull_local(new.ref)
    t0 = time.monotonic()
    answer = httpx.post(
        f"{receiver.base}/admin/workspace-images/refresh",
        json={"runtimes": [runtime]},
        headers={"Authorization": f"Bearer {fleet.token}"},
        timeout=SETTLE_TIMEOUT,
    )
    seconds = time.monotonic() - t0
    result = answer.json()
    if (
        answer.status_code != 200
        or result["failed"]
        or len(result["recreated"]) != fleet.sizes[runtime]
    ):
        raise RuntimeError(f"admin refresh answered {answer.status_code}: {answer.text[:500]}")
    if not fleet.on_image(runtime, new.image_id)[1]:
        raise RuntimeError(f"{runtime}: not every container on the new image after the refresh")
    return seconds


def swap_cli_sequential(fleet: Fleet, runtime: str) -> float:
    new = fleet.publish(runtime)
    fleet.stack.pull_local(new.ref)
    t0 = time.monotonic()
    for name in names(runtime, fleet.sizes[runtime]):
        fleet.cli_replace(name, new.ref)
    seconds = time.monotonic() - t0
    if not fleet.on_image(runtime, new.image_id)[1]:
        raise RuntimeError(f"{runtime}: the sequential CLI left a container behind")
    return seconds


def run(
    stack: Any,
    workdir: Path,
    trigger_ks: list[int],
    swap_ks: list[int],
    reps: int,
    variants: dict[str, str] | None = None,
) -> dict[str, Any]:
    sizes = {runtime_name("k", k): k for k in trigger_ks}
    sizes.update({runtime_name("s", k): k for k in swap_ks})
    fleet = Fleet(stack, workdir, sizes, variants or {})
    fleet.start()
    trigger: dict[int, dict[str, list[dict[str, float]]]] = {}
    scaling: dict[int, dict[str, list[float]]] = {}
    try:
        for rep in range(reps):
            for k in trigger_ks:
                runtime = runtime_name("k", k)
                conditions: list[tuple[str, Callable[[], dict[str, float]]]] = [
                    (label, functools.partial(trigger_ours, fleet, runtime, label))
                    for label in fleet.receivers
                    if label != LOW_LABEL or k > LOW_PARALLELISM
                ]
                conditions.append(("floor", functools.partial(trigger_floor, fleet, runtime)))
                for label, trial in conditions:
                    figures = trial()
                    trigger.setdefault(k, {}).setdefault(label, []).append(figures)
                    say(
                        f"trigger: rep {rep + 1}/{reps} K={k:<2} {label:15} total "
                        f"{figures['total']:.2f}s (ack {figures['ack'] * 1000:.0f} ms, pull "
                        f"{figures['pull']:.2f}s, swap {figures['swap']:.2f}s; all running at "
                        f"{figures['running']:.2f}s)"
                    )
            for k in swap_ks:
                runtime = runtime_name("s", k)
                steps: list[tuple[str, Callable[[], float]]] = [
                    (label, functools.partial(swap_ours, fleet, runtime, label))
                    for label in fleet.receivers
                    if label != NO_CANARY_LABEL
                ]
                steps.append(
                    ("cli sequential", functools.partial(swap_cli_sequential, fleet, runtime))
                )
                for label, step in steps:
                    seconds = step()
                    scaling.setdefault(k, {}).setdefault(label, []).append(seconds)
                    say(
                        f"swap scaling: rep {rep + 1}/{reps} K={k:<2} {label:15} {seconds:6.2f}s "
                        f"({seconds / k:.2f} s per container)"
                    )
    finally:
        fleet.close()
    waves: dict[str, Callable[[int], int]] = {
        label: functools.partial(_waves, parallelism=p, canary=c)
        for label, (_, p, c) in fleet.receivers.items()
    }
    return {
        "trigger": _trigger_results(trigger, waves),
        "scaling": _scaling_results(scaling),
    }


def _waves(k: int, *, parallelism: int, canary: int) -> int:
    """How many grace waits K swaps take: the canaries' wave, then the rest P at a time."""
    first = min(canary, k)
    return (1 if first else 0) + math.ceil((k - first) / parallelism)


def _trigger_results(
    raw: dict[int, dict[str, list[dict[str, float]]]], waves_of: dict[str, Callable[[int], int]]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "settings": {
            "grace_seconds": GRACE_SECONDS,
            "parallelism": [DEFAULT_PARALLELISM, LOW_PARALLELISM],
            "canary": {"ours": 1, LOW_LABEL: 1, NO_CANARY_LABEL: 0},
            "stop": "QUICK_STOP_CMD (exits on SIGTERM)",
        },
        "k": {},
    }
    for k, by_label in raw.items():
        entry: dict[str, Any] = {}
        floor_total = [row["total"] for row in by_label["floor"]]
        for label, rows in by_label.items():
            entry[label] = {key: summary([row[key] for row in rows]) for key in rows[0]}
            if label == "floor":
                continue
            waves = waves_of[label](k)
            totals = [row["total"] for row in rows]
            entry[label]["waves"] = waves
            entry[label]["vs_floor"] = ratios(totals, floor_total)
            entry[label]["running_vs_floor"] = ratios([row["running"] for row in rows], floor_total)
            entry[label]["without_grace_vs_floor"] = ratios(
                [t - waves * GRACE_SECONDS for t in totals], floor_total
            )
        out["k"][str(k)] = entry
    return out


def _scaling_results(raw: dict[int, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": {"grace_seconds": GRACE_SECONDS}, "k": {}}
    for k, by_label in raw.items():
        entry: dict[str, Any] = {}
        cli = by_label["cli sequential"]
        for label, values in by_label.items():
            entry[label] = {
                "seconds": summary(values),
                "per_container": summary([v / k for v in values]),
            }
            if label != "cli sequential":
                entry[label]["speedup_vs_cli"] = ratios(cli, values)
        out["k"][str(k)] = entry
    return out
