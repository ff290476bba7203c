"""Poll cost: one tick's duration and registry requests for R runtimes, ours vs the original.

The registry is a GHCR-like token registry (tests/support/token_registry.py) behind a proxy that
adds `delay` each way to the registry and to its token realm.  Ours is what the poller
runs per tick, `RegistryClient.digests()` on the receiver's own HTTP client: one token
request naming every repository and the HEADs all at once (up to 100 in flight).  The
baseline is the original design, in the same process and event loop: per runtime, in turn,
a token GET for its one scope, then the manifest HEAD.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from receiver import imageref
from receiver.clock import SystemClock
from receiver.registry import MANIFEST_TYPES, TIMEOUT, RegistryClient, http_client

from .util import python, ratios, say, summary

TOKEN_EXPIRED = 3600.0  # seconds the client's clock jumps for a cold tick


class Far:
    """The poll_server process and what it printed."""

    def __init__(self, repos: int, delay: float, workdir: Path) -> None:
        self.process = subprocess.Popen(
            [
                python(),
                "-m",
                "bench.poll_server",
                "--repos",
                str(repos),
                "--delay",
                str(delay),
                "--workdir",
                str(workdir),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("poll_server exited before it was ready")
        self.info: dict[str, Any] = json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class AheadClock(SystemClock):
    """The real clock, moved `ahead` seconds on its monotonic side (to expire tokens)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.ahead


async def _ours(info: dict[str, Any], count: int) -> dict[str, dict[str, float]]:
    """First tick (new client), cold tick (every token expired), warm tick (tokens cached)."""
    refs = [
        imageref.parse(f"{info['registry']}/{repo}:latest") for repo in info["repositories"][:count]
    ]
    clock = AheadClock()
    out: dict[str, dict[str, float]] = {}
    async with http_client() as http:
        client = RegistryClient(http, (info["user"], info["password"]), clock=clock)
        for name in ("first", "cold", "warm"):
            if name == "cold":
                clock.ahead += TOKEN_EXPIRED
            head, token = client.counters.head, client.counters.token
            started = time.perf_counter()
            found = await client.digests(refs)
            seconds = time.perf_counter() - started
            wrong = [ref for ref, digest in found.items() if digest != info["digest"]]
            if wrong:
                raise RuntimeError(f"ours: {len(wrong)} wrong digests, e.g. {found[wrong[0]]}")
            heads, tokens = client.counters.head - head, client.counters.token - token
            out[name] = {
                "seconds": seconds,
                "head": heads,
                "token": tokens,
                "per_runtime": (heads + tokens) / count,
            }
    return out


async def _baseline(info: dict[str, Any], count: int) -> dict[str, float]:
    """The original design: per runtime, a token for its scope, then the HEAD."""
    auth = httpx.BasicAuth(info["user"], info["password"])
    heads = tokens = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for repo in info["repositories"][:count]:
            tokens += 1
            answer = await http.get(
                info["realm"],
                params={"service": info["service"], "scope": f"repository:{repo}:pull"},
                auth=auth,
            )
            answer.raise_for_status()
            token = answer.json()["token"]
            heads += 1
            head = await http.head(
                f"http://{info['registry']}/v2/{repo}/manifests/latest",
                headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_TYPES},
            )
            if head.headers.get("docker-content-digest") != info["digest"]:
                raise RuntimeError(f"baseline: {repo} answered {head.status_code}")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "head": heads,
        "token": tokens,
        "per_runtime": (heads + tokens) / count,
    }


def run(workdir: Path, counts: list[int], reps: int, delay: float) -> dict[str, Any]:
    say(f"poll: starting a token registry with {max(counts)} repositories behind proxies")
    far = Far(max(counts), delay, workdir)
    raw: dict[int, dict[str, list[dict[str, float]]]] = {
        n: {"first": [], "cold": [], "warm": [], "baseline": []} for n in counts
    }
    try:
        info = far.info
        say(f"poll: registry ready in {info['setup_seconds']:.1f}s")
        for rep in range(reps):
            for count in counts:
                ours = asyncio.run(_ours(info, count))
                for name, figures in ours.items():
                    raw[count][name].append(figures)
                base = asyncio.run(_baseline(info, count))
                raw[count]["baseline"].append(base)
                say(
                    f"poll: rep {rep + 1}/{reps} R={count}: ours first "
                    f"{ours['first']['seconds']:.3f}s cold {ours['cold']['seconds']:.3f}s "
                    f"warm {ours['warm']['seconds']:.3f}s "
                    f"({ours['cold']['per_runtime']:.3f} req/runtime cold); "
                    f"baseline {base['seconds']:.2f}s ({base['per_runtime']:.1f} req/runtime)"
                )
    finally:
        far.close()

    results: dict[str, Any] = {}
    for count in counts:
        entry: dict[str, Any] = {}
        for name, rows in raw[count].items():
            entry[name] = {
                "seconds": summary([r["seconds"] for r in rows]),
                "per_runtime": summary([r["per_runtime"] for r in rows]),
                "head": summary([r["head"] for r in rows]),
                "token": summary([r["token"] for r in rows]),
            }
        base_s = [r["seconds"] for r in raw[count]["baseline"]]
        entry["speedup"] = {
            name: ratios(base_s, [r["seconds"] for r in raw[count][name]])
            for name in ("first", "cold", "warm")
        }
        results[str(count)] = entry
    return {
        "settings": {
            "delay_each_way_ms": delay * 1000,
            "repetitions": reps,
            "setup_seconds": far.info["setup_seconds"],
            "registry": "docker-registry (distribution) with token auth, via delay proxies",
        },
        "runtimes": results,
    }
