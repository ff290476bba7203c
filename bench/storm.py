"""The broken-image storm, measured: what a bad template image does to a runtime's workspaces.

Three workspaces on v1, the poller every 10 s, then a v2 whose command does not exist is
published; for `--seconds` (50) the engine's events are counted: replacements created and
stop/die events of the workspaces. Run it for this checkout and, with `--receiver-root`,
for another one (say a checkout of the design before the rollout policy) on the same
engine, so the two figures come from one run:

    git worktree add /tmp/before 6cac1d6
    .venv/bin/python -m bench.storm --receiver-root /tmp/before
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.support.service import ReceiverProcess
from tests.support.stack import Stack
from tests.support.workspaces import Runtime

NAMES = ("one", "two", "three")


def storm(stack: Stack, seconds: float, root: Path | None) -> dict[str, object]:
    """The events of one broken publish, with the receiver of `root` (None: this one)."""
    runtime = Runtime.make(stack)
    v1 = runtime.publish("v1")
    for name in NAMES:
        runtime.workspace(name, v1)
    env = runtime.env(IMAGE_AUTO_REFRESH="true", POLL_INTERVAL="10", SWAP_GRACE_SECONDS="2")
    log = Path(tempfile.mkstemp(prefix="storm-", suffix=".log")[1])
    server = ReceiverProcess(env, log, cwd=root)
    try:
        server.wait_ready()
        since_ns = time.time_ns()
        runtime.publish("v2", cmd=["/bin/no-such-command"])
        time.sleep(seconds)
    finally:
        server.stop()
    events = stack.events(since_ns, runtime.prefix, ("create", "stop", "die"))
    running = [
        stack.client.api.inspect_container(f"{runtime.prefix}{n}")["State"]["Running"]
        for n in NAMES
    ]
    stack.cleanup_containers(runtime.prefix)
    return {
        "receiver": str(root or "this checkout"),
        "seconds": seconds,
        "replacements_created": sum(e.action == "create" for e in events),
        "stop_die_events": sum(e.action in ("stop", "die") for e in events),
        "workspaces_running_after": sum(running),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=50.0)
    parser.add_argument("--receiver-root", type=Path, help="a checkout to compare with")
    args = parser.parse_args()
    with Stack.start() as stack:
        rows = [storm(stack, args.seconds, None)]
        if args.receiver_root is not None:
            rows.append(storm(stack, args.seconds, args.receiver_root))
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
