"""Webhook ingest: signed ~11 KB `package` deliveries for a watched runtime whose digest is
unchanged (the coalescing path), at fixed concurrency from wrk in its own process.

Contenders, each its own process pinned to the same CPU (wrk on the other):
- ours: the receiver (`python -m receiver serve`), default settings;
- ceiling: a bare ASGI app that reads the body and checks the HMAC, under the receiver's
  own uvicorn settings (`receiver.server.serve`);
- peer: @octokit/webhooks' `createNodeMiddleware` verifying the same signature.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from . import deliveries
from .util import (
    LOAD_CPU,
    Child,
    free_port,
    pinned,
    ratios,
    say,
    server_python,
    server_pythonpath,
    summary,
)

RUNTIME = "ingest"
OCTOKIT_PACKAGE = "@octokit/webhooks"


def receiver_env(stack: Any, secret: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The receiver's environment for the ingest and memory benchmarks."""
    env = {
        **os.environ,
        "RUNTIMES": f"{RUNTIME},codex,gemini",
        "IMAGE_TEMPLATE": deliveries.image_template(stack.registry),
        "GITHUB_WEBHOOK_SECRET": secret,
        "DOCKER_HOST": stack.docker_host,
    }
    env.update(extra or {})
    return env


def seed_image(stack: Any) -> str:
    """Publish the ingest runtime's image and pull it, so boot seeding knows its digest."""
    published = stack.publish(deliveries.repository(RUNTIME), version="ingest-v1")
    stack.pull_local(published.ref)
    return str(published.digest)


def start_receiver(
    stack: Any, secret: str, workdir: Path, name: str, pythonpath: str = ""
) -> Child:
    port = free_port()
    env = {**receiver_env(stack, secret), "PYTHONPATH": server_pythonpath(pythonpath)}
    child = Child(
        name,
        [server_python(), "-m", "receiver", "serve", "--port", str(port)],
        workdir / f"{name}.log",
        env=env,
        # Not the repository root: the checkout's receiver comes from PYTHONPATH (after a
        # variant under test, when there is one).
        cwd=workdir,
        port=port,
    )
    child.wait_http(f"http://127.0.0.1:{port}/readyz")
    return child


def wait_unchanged(base: str, body: bytes, secret: str, timeout: float = 30) -> None:
    """Deliver until the receiver answers `unchanged` (boot seeding runs in the background)."""
    deadline = time.monotonic() + timeout
    answer: httpx.Response | None = None
    while time.monotonic() < deadline:
        answer = deliveries.deliver(base, body, secret)
        if answer.status_code == 202 and answer.json().get("runtimes") == {RUNTIME: "unchanged"}:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the receiver never answered unchanged: {answer and answer.text}")


def install_octokit(workdir: Path) -> tuple[Path, str]:
    """npm-install @octokit/webhooks into a temp dir; returns the dir and the version."""
    target = workdir / "octokit"
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text('{"name": "bench-peer", "private": true}\n')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", OCTOKIT_PACKAGE],
        cwd=target,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.copy(Path(__file__).with_name("octokit_peer.mjs"), target / "peer.mjs")
    meta = json.loads(
        (target / "node_modules" / "@octokit" / "webhooks" / "package.json").read_text()
    )
    return target, str(meta["version"])


def wrk(
    url: str, body_path: Path, signature: str, connections: int, seconds: float
) -> dict[str, Any]:
    """One wrk run; its Lua script prints a JSON summary."""
    script = Path(__file__).with_name("ingest.lua")
    env = {**os.environ, "BENCH_BODY": str(body_path), "BENCH_SIGNATURE": signature}
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    done = subprocess.run(
        pinned(LOAD_CPU, [*args, "-s", str(script), url]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next((row for row in reversed(done.stdout.splitlines()) if row.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(line)
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["bad"] = sum(figures["errors"].values())
    return figures


def start_ceiling(secret: str, workdir: Path, name: str, pythonpath: str = "") -> Child:
    port = free_port()
    env = {**os.environ, "BENCH_SECRET": secret, "PYTHONPATH": server_pythonpath(pythonpath)}
    child = Child(
        name,
        [server_python(), "-m", "bench.ceiling", "--port", str(port)],
        workdir / f"{name.replace(' ', '-')}.log",
        env=env,
        cwd=workdir,
        port=port,
    )
    child.wait_http(f"{child.base}/", ok=(401,))
    return child


def run(
    stack: Any,
    workdir: Path,
    reps: int,
    seconds: float,
    connections: int,
    variants: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`variants` (name -> PYTHONPATH) add "ours NAME" and "ceiling NAME" contenders: the
    same servers importing what that PYTHONPATH names first (a patched receiver, httptools)."""
    variants = variants or {}
    secret = deliveries.new_secret()
    digest = seed_image(stack)
    body = deliveries.package_body(RUNTIME, digest)
    body_path = workdir / "ingest-body.json"
    body_path.write_bytes(body)
    signature = deliveries.sign(body, secret)

    say("ingest: installing @octokit/webhooks from npm into a temp dir")
    octokit_dir, octokit_version = install_octokit(workdir)

    say("ingest: starting the receiver, the bare ASGI ceiling and the octokit peer")
    servers: dict[str, Child] = {}
    try:
        servers["ours"] = start_receiver(stack, secret, workdir, "ingest-receiver")
        servers["ceiling"] = start_ceiling(secret, workdir, "ceiling")
        port = free_port()
        servers["peer"] = Child(
            "octokit peer",
            ["node", "peer.mjs", str(port)],
            workdir / "peer.log",
            env={**os.environ, "BENCH_SECRET": secret},
            cwd=octokit_dir,
            port=port,
        )
        servers["peer"].wait_http(f"{servers['peer'].base}/healthz")
        for name, path in variants.items():
            servers[f"ours {name}"] = start_receiver(
                stack, secret, workdir, f"ingest-receiver-{name}", pythonpath=path
            )
            servers[f"ceiling {name}"] = start_ceiling(secret, workdir, f"ceiling {name}", path)

        urls = {}
        for name, child in servers.items():
            url = f"{child.base}/webhooks/github"
            urls[name] = url
            if name.startswith("ours"):
                wait_unchanged(child.base, body, secret)
            expected = 200 if name == "peer" else 202
            answer = httpx.post(url, content=body, headers=deliveries.headers(body, secret))
            if answer.status_code != expected:
                raise RuntimeError(f"{name} answered {answer.status_code}: {answer.text}")
            forged = httpx.post(
                url, content=body, headers=deliveries.headers(body, "not-the-secret")
            )
            if forged.status_code < 400:
                raise RuntimeError(f"{name} accepted a forged signature")

        say("ingest: warming up each for 2 s")
        for name in servers:
            wrk(urls[name], body_path, signature, connections, 2)

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        order = list(servers)
        for rep in range(reps):
            # Rotate the order so no contender always runs right after the same other one.
            shift = rep % len(order)
            for name in order[shift:] + order[:shift]:
                figures = wrk(urls[name], body_path, signature, connections, seconds)
                runs[name].append(figures)
                say(
                    f"ingest: rep {rep + 1}/{reps} {name:14} {figures['rps']:8.0f} req/s  "
                    f"p50 {figures['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {figures['p99_us'] / 1000:6.2f} ms"
                    + (f"  {figures['bad']} errors" if figures["bad"] else "")
                )
        rss = {name: child.rss_kib() for name, child in servers.items()}
    finally:
        for child in servers.values():
            child.stop()

    contenders = {
        name: {
            "rps": summary([r["rps"] for r in rows]),
            "p50_ms": summary([r["p50_us"] / 1000 for r in rows]),
            "p99_ms": summary([r["p99_us"] / 1000 for r in rows]),
            "errors": sum(r["bad"] for r in rows),
            "rss_mib_after": rss[name] / 1024,
        }
        for name, rows in runs.items()
    }
    rps = {name: [r["rps"] for r in rows] for name, rows in runs.items()}
    paired = {
        "ours/peer": ratios(rps["ours"], rps["peer"]),
        "ours/ceiling": ratios(rps["ours"], rps["ceiling"]),
    }
    for name in variants:
        paired[f"ours {name}/peer"] = ratios(rps[f"ours {name}"], rps["peer"])
        paired[f"ours {name}/ceiling {name}"] = ratios(rps[f"ours {name}"], rps[f"ceiling {name}"])
        paired[f"ours {name}/ours"] = ratios(rps[f"ours {name}"], rps["ours"])
    return {
        "settings": {
            "connections": connections,
            "seconds": seconds,
            "repetitions": reps,
            "body_bytes": len(body),
            "octokit_webhooks": octokit_version,
            "load_generator": "wrk -t1 (LuaJIT script), pinned to its own CPU",
        },
        "contenders": contenders,
        "ratios": paired,
        "variants": variants,
    }
