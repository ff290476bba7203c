"""The whole loop on this machine: publish v1, run workspaces, publish v2, refresh, compare.

Brings up a private Docker engine and a local registry (tests/stack.py) unless usable ones
are reachable, starts the receiver with `serve`, and drives it through the admin route.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service import ReceiverProcess  # noqa: E402
from tests.stack import Stack, StackUnavailable  # noqa: E402

RUNTIME = "claude-code"
WORKSPACES = ("ws-demo-alice", "ws-demo-bob")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def table(stack: Stack, title: str) -> None:
    print(f"\n{title}")
    print(f"  {'container':<16} {'image id':<20} {'/version':<9} {'running':<8} data")
    for name in WORKSPACES:
        info = stack.client.api.inspect_container(name)
        version = stack.exec(name, "cat", "/version")
        data = stack.exec(name, "cat", "/workspace/notes.txt")
        running = "yes" if info["State"]["Running"] else "no"
        print(f"  {name:<16} {info['Image'][7:19]:<20} {version:<9} {running:<8} {data}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="receiver port (default: a free one)")
    args = parser.parse_args()

    say("starting a Docker engine and a registry on 127.0.0.1 (or using the ones you have)")
    try:
        stack = Stack.start()
    except StackUnavailable as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 1
    server: ReceiverProcess | None = None
    try:
        repository = f"molecule-ai/workspace-template-{RUNTIME}"
        say(f"publishing v1 of {stack.registry}/{repository}:latest")
        v1 = stack.publish(repository, version="v1", volumes=["/workspace"])
        for name in WORKSPACES:
            stack.cleanup_containers(name)
            stack.run_container(name, v1.ref, env={"OWNER": name[8:]})
            stack.exec(name, "sh", "-c", f"echo 'notes of {name[8:]}' > /workspace/notes.txt")
        say(f"started {', '.join(WORKSPACES)} on v1, each with notes in its /workspace volume")
        table(stack, "before")

        env = {
            **os.environ,
            "RUNTIMES": RUNTIME,
            "IMAGE_TEMPLATE": f"{stack.registry}/molecule-ai/workspace-template-{{runtime}}:latest",
            "CONTAINER_PREFIX": "ws-demo-",
            "ADMIN_SECRET_KEY": secrets.token_urlsafe(32),
            "DOCKER_HOST": stack.docker_host,
            "SWAP_GRACE_SECONDS": "1",
            "SWAP_STOP_TIMEOUT": "2",
        }
        log = Path(tempfile.mkstemp(prefix="receiver-demo-", suffix=".log")[1])
        server = ReceiverProcess(env, log, port=args.port or None)
        say(f"started the receiver on {server.base} (log: {log})")
        server.wait_ready()

        say("publishing v2")
        v2 = stack.publish(repository, version="v2", volumes=["/workspace"])
        token = server.admin_token(ttl=300, subject="demo")
        say("asking for a refresh: POST /admin/workspace-images/refresh")
        started = time.monotonic()
        response = httpx.post(
            f"{server.base}/admin/workspace-images/refresh",
            headers={"Authorization": f"Bearer {token}"},
            json={"runtimes": [RUNTIME]},
            timeout=300,
        )
        elapsed = time.monotonic() - started
        print(f"  HTTP {response.status_code} in {elapsed:.1f}s: {response.text}")
        table(stack, "after")
        moved = all(
            stack.client.api.inspect_container(name)["Image"] == v2.image_id for name in WORKSPACES
        )
        say("every workspace runs v2 with its data" if moved else "some workspaces did not move")
        return 0 if moved and response.status_code == 200 else 1
    finally:
        if server is not None:
            server.stop()
        for name in WORKSPACES:
            stack.cleanup_containers(name)
        stack.close()
        say("stopped what the demo started")


if __name__ == "__main__":
    raise SystemExit(main())
