"""One delivery's cost, stage by stage, in this process: run by bench/delivery.py as a script,
with PYTHONPATH naming the receiver tree to measure (this checkout, or an older one).

A script, not a module of the bench package, so that an older tree (whose bench/ lacks it)
can be measured: everything it imports comes from that tree. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import timeit
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvloop

from bench.ceiling import make_app
from receiver import github
from receiver.app import build_app
from receiver.outcomes import webhook
from tests.support import deliveries, wiring
from tests.support.fakes import FakeEngine

SECRET = "bench-delivery-secret"  # noqa: S105 (a benchmark's own secret)
DIGEST = "sha256:" + "a" * 64
RUNTIME = "ingest"
CALLS = 2000
REPEATS = 7


def best_of(stage: Callable[[], object]) -> float:
    """Microseconds per call: the least of REPEATS runs of CALLS calls (timeit: GC off)."""
    return min(timeit.repeat(stage, number=CALLS, repeat=REPEATS)) / CALLS * 1e6


def best_of_async(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[None]]) -> float:
    """Microseconds per awaited call, GC on (as in the server): the least of REPEATS runs."""

    async def many() -> None:
        for _ in range(CALLS):
            await call()

    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        loop.run_until_complete(many())
        runs.append(time.perf_counter() - started)
    return min(runs) / CALLS * 1e6


def main() -> None:
    settings = wiring.settings(f"{RUNTIME},codex,gemini", GITHUB_WEBHOOK_SECRET=SECRET)
    engine = FakeEngine()
    app: Any = build_app(settings, engine, wiring.service(engine, settings))
    coordinator = app.state.coordinator
    coordinator.book.states[RUNTIME].seen = DIGEST
    body = deliveries.package_body(deliveries.template_name(RUNTIME), DIGEST)
    sent = deliveries.headers(body, SECRET)
    headers = {name.lower(): value for name, value in sent.items()}
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/github",
        "raw_path": b"/webhooks/github",
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(sent_message: MutableMapping[str, Any]) -> None:
        if sent_message["type"] == "http.response.start":
            statuses.append(sent_message["status"])

    # What the route verifies with: a keyed Verifier where the tree has one.
    verifier: Any = getattr(github, "Verifier", None)
    secrets: Any = verifier((SECRET,)) if verifier else (SECRET,)
    signature = headers["x-hub-signature-256"]
    verify = (
        (lambda: secrets.verify(body, signature))
        if verifier
        else (lambda: github.verify_signature(body, signature, secrets))
    )
    delivery = github.parse_delivery(headers, body, secrets)
    images = {runtime: settings.image_for(runtime) for runtime in settings.runtimes}
    meaning = github.interpret(delivery, images, settings.dispatch_event_types)
    source = webhook("package")

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app_call = lambda: app(dict(scope), receive, send)  # noqa: E731
    best_of_async(loop, app_call)  # warm up
    statuses.clear()
    figures = {
        "verify": best_of(verify),
        "verify_and_decode": best_of(lambda: github.parse_delivery(headers, body, secrets)),
        "interpret": best_of(
            lambda: github.interpret(delivery, images, settings.dispatch_event_types)
        ),
        "submit": best_of(lambda: coordinator.submit(RUNTIME, DIGEST, source)),
        "delivery": best_of_async(loop, app_call),
    }
    gc.collect()
    if set(statuses) != {202} or len(meaning.triggers) != 1:
        raise SystemExit(f"the delivery was not answered 202 unchanged: {statuses[:3]}")
    figures["decode"] = figures["verify_and_decode"] - figures["verify"]
    ceiling = make_app(SECRET)
    figures["ceiling"] = best_of_async(loop, lambda: ceiling(dict(scope), receive, send))
    print(json.dumps({"figures": figures, "body_bytes": len(body)}))


if __name__ == "__main__":
    main()
