"""A delivery's way to running workspaces, swarm against one host, measured in one run.

Three workspaces on v1, then v2 is published and its signed `package` delivery sent; the
figure is the time from the delivery until every workspace runs v2:
- swarm: a three-node swarm (tests/support/swarm.py), one service pinned to each node,
  the receiver in swarm mode (Swarm's rolling updates, monitor SWAP_GRACE_SECONDS);
- one host: the receiver's own swap of three containers on one engine (the test stack).
Both with the canary rule (ROLLOUT_CANARY=1) and SWAP_GRACE_SECONDS=1.

    .venv/bin/python -m bench.fleet --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import deliveries
from tests.support.service import ReceiverProcess
from tests.support.stack import Published, Stack
from tests.support.swarm import Swarm
from tests.support.swarm_runtime import SwarmRuntime
from tests.support.workspaces import Runtime

SECRET = "bench-fleet-secret"  # noqa: S105 (a test secret)
GRACE = "1"


def _deliver_and_time(
    env: dict[str, str],
    name: str,
    publish: Callable[[], Published],
    converged: Callable[[Published], bool],
) -> float:
    log = Path(tempfile.mkstemp(prefix="fleet-", suffix=".log")[1])
    server = ReceiverProcess({**env, "GITHUB_WEBHOOK_SECRET": SECRET}, log)
    try:
        server.wait_ready()
        v2 = publish()
        body = deliveries.package_body(deliveries.template_name(name), v2.digest)
        started = time.monotonic()
        answer = deliveries.deliver(server.base, body, SECRET)
        answer.raise_for_status()
        while not converged(v2):
            if time.monotonic() - started > 120:
                raise TimeoutError(f"no convergence; receiver log:\n{server.log()}")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        server.stop()


def on_swarm(swarm: Swarm) -> float:
    runtime = SwarmRuntime(swarm)
    try:
        v1 = runtime.publish("v1")
        names = [runtime.service(str(i), v1.pinned, node) for i, node in enumerate(swarm.nodes)]
        runtime.wait_running(dict.fromkeys(names, v1), timeout=60)

        def converged(v2: Published) -> bool:
            running = runtime.running_images()
            return all(running[n] == {v2.image_id} for n in names)

        env = runtime.env(SWAP_GRACE_SECONDS=GRACE)
        return _deliver_and_time(env, runtime.name, lambda: runtime.publish("v2"), converged)
    finally:
        runtime.close()


def on_one_host(stack: Stack) -> float:
    runtime = Runtime.make(stack)
    try:
        v1 = runtime.publish("v1")
        names = [runtime.workspace(str(i), v1) for i in range(3)]

        def converged(v2: Published) -> bool:
            return all(stack.running_image(n) == (v2.image_id, True) for n in names)

        env = runtime.env(SWAP_GRACE_SECONDS=GRACE)
        return _deliver_and_time(env, runtime.name, lambda: runtime.publish("v2"), converged)
    finally:
        stack.cleanup_containers(runtime.prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each (3)")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"swarm, 3 nodes": [], "one host": []}
    with Swarm.start(3) as swarm, Stack.start() as stack:
        for _ in range(args.reps):
            figures["swarm, 3 nodes"].append(on_swarm(swarm))
            figures["one host"].append(on_one_host(stack))
    report = {
        where: {
            "median_s": round(statistics.median(runs), 2),
            "runs_s": [round(r, 2) for r in runs],
        }
        for where, runs in figures.items()
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
