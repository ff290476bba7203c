"""The whole loop on this machine: publish v1, run workspaces, publish v2, deliver, compare.

Brings up a private Docker engine and a local registry (tests/support/stack.py) unless usable ones
are reachable, starts the receiver with `serve`, publishes v2 and sends the signed `package`
deliveries GitHub would send for it, shows the swaps as they happen, and prints a
before/after table and the time from the delivery to every workspace running v2.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker.errors
import httpx

from tests.support import deliveries
from tests.support.service import ReceiverProcess
from tests.support.stack import QUICK_STOP_CMD, Stack, StackUnavailable

RUNTIME = "claude-code"
WORKSPACES = ("ws-demo-alice", "ws-demo-bob")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def repo_digest(stack: Stack, image_id: str) -> str:
    """The registry digest the engine knows an image by (its RepoDigests entry)."""
    digests = stack.client.images.get(image_id).attrs.get("RepoDigests") or []
    return str(digests[0]).split("@", 1)[1][:19] if digests else "(none)"


def table(stack: Stack, title: str) -> None:
    print(f"\n{title}")
    print(f"  {'container':<16} {'image digest':<21} {'/version':<9} {'running':<8} data")
    for name in WORKSPACES:
        info = stack.client.api.inspect_container(name)
        version = stack.read_file(name, "/version")
        data = stack.read_file(name, "/workspace/notes.txt")
        running = "yes" if info["State"]["Running"] else "no"
        digest = repo_digest(stack, info["Image"])
        print(f"  {name:<16} {digest:<21} {version:<9} {running:<8} {data}")
    print()


def publish_deliveries(digest: str) -> list[tuple[str, bytes]]:
    """What GitHub sends for a multi-arch push: the tagged index, then one untagged delivery
    per platform manifest (the receiver acts on the first and ignores the others)."""
    name = deliveries.template_name(RUNTIME)
    manifests = [(digest, "latest")] + [("sha256:" + f"{n:x}" * 64, "") for n in (1, 2)]
    bodies = [deliveries.package_body(name, d, tag, owner="molecule-ai") for d, tag in manifests]
    return [(f"demo-{uuid.uuid4()}", body) for body in bodies]


def deliver(server: ReceiverProcess, secret: str, delivery: str, body: bytes) -> httpx.Response:
    return deliveries.deliver(server.base, body, secret, delivery=delivery)


def watch(stack: Stack, target_image: str, since: float, timeout: float = 120) -> float | None:
    """Print each workspace's changes as they happen; seconds until all run the target."""
    last: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = True
        for name in WORKSPACES:
            aside = stack.client.api.containers(all=True, filters={"name": f"^/{name}-receiver"})
            try:
                info = stack.client.api.inspect_container(name)
                running = bool(info["State"]["Running"])
                on_target = info["Image"] == target_image
                state = ("new" if on_target else "old") + (" running" if running else " stopped")
            except docker.errors.NotFound:
                running, on_target, state = False, False, "being replaced"
            if aside:
                state += ", old one set aside"
            if last.get(name) != state:
                print(f"  +{time.monotonic() - since:5.2f}s  {name}: {state}", flush=True)
                last[name] = state
            done = done and running and on_target and not aside
        if done:
            return time.monotonic() - since
        time.sleep(0.05)
    return None


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
        v1 = stack.publish(repository, version="v1", volumes=["/workspace"], cmd=QUICK_STOP_CMD)
        for name in WORKSPACES:
            stack.cleanup_containers(name)
            stack.run_container(name, v1.ref, env={"OWNER": name[8:]})
            stack.exec(name, "sh", "-c", f"echo 'notes of {name[8:]}' > /workspace/notes.txt")
        say(f"started {', '.join(WORKSPACES)} on v1, each with notes in its /workspace volume")
        table(stack, "before")

        secret = secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "RUNTIMES": RUNTIME,
            "IMAGE_TEMPLATE": f"{stack.registry}/molecule-ai/workspace-template-{{runtime}}:latest",
            "CONTAINER_PREFIX": "ws-demo-",
            "GITHUB_WEBHOOK_SECRET": secret,
            "ADMIN_SECRET_KEY": secrets.token_urlsafe(32),
            "DOCKER_HOST": stack.docker_host,
            "SWAP_GRACE_SECONDS": "1",
            "SWAP_STOP_TIMEOUT": "2",
        }
        log = Path(tempfile.mkstemp(prefix="receiver-demo-", suffix=".log")[1])
        server = ReceiverProcess(env, log, port=args.port or None)
        say(f"started the receiver on {server.base} (log: {log})")
        server.wait_ready()

        say("publishing v2 (multi-arch style: GitHub will send one delivery per manifest)")
        v2 = stack.publish(repository, version="v2", volumes=["/workspace"], cmd=QUICK_STOP_CMD)
        forged = deliver(server, "not-the-secret", "demo-forged", b"{}")
        say(f"a delivery signed with the wrong secret: HTTP {forged.status_code}")
        say("sending the signed package deliveries to POST /webhooks/github")
        started = time.monotonic()
        for delivery, body in publish_deliveries(v2.digest):
            answer = deliver(server, secret, delivery, body)
            took = (time.monotonic() - started) * 1000
            print(f"  +{took:5.0f}ms  HTTP {answer.status_code}: {answer.text}", flush=True)
        say("watching the workspaces")
        elapsed = watch(stack, v2.image_id, started)
        table(stack, "after")
        if elapsed is None:
            say("some workspaces did not move to v2 in time")
            return 1
        say(f"every workspace runs v2 with its data, {elapsed:.1f}s after the delivery")
        return 0
    finally:
        if server is not None:
            server.stop()
        for name in WORKSPACES:
            stack.cleanup_containers(name)
        stack.close()
        say("stopped what the demo started")


if __name__ == "__main__":
    raise SystemExit(main())
