"""A webhook flood: many deliveries, mixed valid and invalid, over many connections at once.

Run it as its own process, so its work does not share the receiver's event loop:

    python -m tests.support.flood --url http://127.0.0.1:8080 --secret S --total 10000 \\
        --connections 64 --owner Org --package workspace-template-x --digest sha256:... \\
        --mix valid=30,untagged=15,ping=5,unsigned=15,bad-signature=10,malformed=5,\\
content-type=5,oversized=5,unknown-event=10

It prints one JSON summary: counts by status and by kind, how many answers were not the
status a kind expects, 5xx and transport errors, the duration, requests per second and
latency percentiles, and for valid deliveries what the receiver did with each runtime
(`scheduled`, `coalesced`, `unchanged`, ...).

The client is raw asyncio HTTP/1.1 with one keep-alive connection per worker, light enough
to leave the receiver most of a small machine. A request is retried once, on a fresh
connection, only when a reused connection turns out closed before any answer (as any
keep-alive client does); those retries are counted.

This module must not import pytest, nor the receiver: it is the receiver's client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.support.deliveries import PING_FIXTURE, package_body, sign

PATH = "/webhooks/github"

# What each kind of delivery is, and the status the receiver must answer it with.
EXPECTED: dict[str, int] = {
    "valid": 202,  # signed, tagged package push of the watched image: a trigger
    "untagged": 202,  # signed, a per-platform manifest without a tag: ignored
    "ping": 200,  # signed ping
    "unsigned": 401,  # no X-Hub-Signature-256
    "bad-signature": 401,  # signed with another secret
    "malformed": 400,  # correctly signed, not JSON
    "content-type": 415,  # correctly signed, text/plain
    "oversized": 413,  # one byte over WEBHOOK_MAX_BODY
    "unknown-event": 202,  # signed, an event the receiver does not handle: ignored
}
DEFAULT_MIX = (
    "valid=30,untagged=15,ping=5,unsigned=15,bad-signature=10,malformed=5,"
    "content-type=5,oversized=5,unknown-event=10"
)


@dataclass(frozen=True)
class Target:
    """Where the flood goes and what a valid delivery names."""

    host: str
    port: int
    secret: str
    owner: str
    package: str
    tag: str
    digest: str
    max_body: int
    pad: int = 0


def requests_by_kind(target: Target) -> dict[str, tuple[dict[str, str], bytes]]:
    """Each kind's headers (without the delivery id) and body, built once."""

    def body(tag: str) -> bytes:
        return package_body(target.package, target.digest, tag, owner=target.owner, pad=target.pad)

    valid, untagged = body(target.tag), body("")
    ping = PING_FIXTURE.read_bytes()
    push = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    malformed = valid[: len(valid) // 2]
    oversized = b"{" + b" " * target.max_body  # one byte over the limit

    def signed(
        event: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[dict[str, str], bytes]:
        headers = {
            "Content-Type": content_type,
            "X-GitHub-Event": event,
            "X-Hub-Signature-256": sign(body, target.secret),
        }
        return headers, body

    unsigned_headers = {"Content-Type": "application/json", "X-GitHub-Event": "package"}
    forged = {**unsigned_headers, "X-Hub-Signature-256": sign(valid, target.secret + "-not")}
    return {
        "valid": signed("package", valid),
        "untagged": signed("package", untagged),
        "ping": signed("ping", ping),
        "unsigned": (unsigned_headers, valid),
        "bad-signature": (forged, valid),
        "malformed": signed("package", malformed),
        "content-type": signed("package", valid, "text/plain"),
        "oversized": signed("package", oversized),
        "unknown-event": signed("push", push),
    }


def parse_mix(text: str) -> dict[str, int]:
    """`kind=weight,...` into weights; unknown kinds and non-positive weights refused."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in EXPECTED:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(EXPECTED)}")
        weights[kind] = int(weight or "1")
        if weights[kind] <= 0:
            raise ValueError(f"weight of {kind} must be positive")
    if not weights:
        raise ValueError("empty mix")
    return weights


def schedule(weights: Mapping[str, int], total: int) -> list[str]:
    """`total` kinds in proportion to `weights`, each kind spread evenly over the run."""
    whole = sum(weights.values())
    counts = {kind: total * weight // whole for kind, weight in weights.items()}
    # The remainder goes to the largest fractional parts, ties in mix order.
    rest = sorted(weights, key=lambda k: -(total * weights[k] % whole))
    for kind in rest[: total - sum(counts.values())]:
        counts[kind] += 1
    slots = [((j + 0.5) / count, kind) for kind, count in counts.items() for j in range(count)]
    return [kind for _, kind in sorted(slots, key=lambda slot: slot[0])]


@dataclass
class Tally:
    """What came back."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    stale_retries: int = 0
    connections_opened: int = 0


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int, tally: Tally) -> None:
        self.host, self.port, self.tally = host, port, tally
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.used = False
        self.tally.connections_opened += 1

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, read one answer; (status, body)."""
        for attempt in (1, 2):
            if self.writer is None:
                await self.open()
            reused = self.used
            try:
                return await self._exchange(request)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                # Closed by the server before it answered a word: a stale keep-alive.
                stale = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if attempt == 1 and reused and stale:
                    self.tally.stale_retries += 1
                    continue
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.used = True
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = await self._chunked()
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        if "close" in headers.get("connection", "").lower():
            await self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:-2])


async def flood(
    target: Target, kinds: Sequence[str], connections: int, deadline_seconds: float
) -> tuple[Tally, float]:
    """Send every request in `kinds` over `connections` workers; the tally and the time."""
    prepared = requests_by_kind(target)
    heads = {
        kind: "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        for kind, (headers, _) in prepared.items()
    }
    tally = Tally(by_kind={kind: Counter() for kind in prepared})
    queue = iter(enumerate(kinds))
    host_header = f"{target.host}:{target.port}"

    def request_bytes(index: int, kind: str) -> bytes:
        body = prepared[kind][1]
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: GitHub-Hookshot/flood\r\n"
            f"X-GitHub-Delivery: flood-{index}\r\n{heads[kind]}Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("latin-1") + body

    async def worker() -> None:
        conn = Connection(target.host, target.port, tally)
        try:
            for index, kind in queue:
                started = time.perf_counter()
                try:
                    status, body = await conn.exchange(request_bytes(index, kind))
                except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                    tally.errors[f"{kind}: {type(exc).__name__}"] += 1
                    continue
                tally.latencies.append(time.perf_counter() - started)
                tally.statuses[str(status)] += 1
                tally.by_kind[kind][str(status)] += 1
                if kind == "valid" and status == 202:
                    for outcome in json.loads(body).get("runtimes", {}).values():
                        tally.outcomes[outcome] += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(connections))), timeout=deadline_seconds
    )
    return tally, time.perf_counter() - started


def summary(tally: Tally, seconds: float, total: int, connections: int) -> dict[str, Any]:
    """The JSON the command prints."""
    answered = sum(tally.statuses.values())
    latencies = sorted(tally.latencies)

    def percentile(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    unexpected = {
        kind: {status: n for status, n in counts.items() if status != str(EXPECTED[kind])}
        for kind, counts in tally.by_kind.items()
    }
    return {
        "total": total,
        "connections": connections,
        "answered": answered,
        "duration_seconds": round(seconds, 3),
        "requests_per_second": round(answered / seconds, 1) if seconds > 0 else None,
        "statuses": dict(sorted(tally.statuses.items())),
        "server_errors": sum(n for status, n in tally.statuses.items() if status.startswith("5")),
        "transport_errors": sum(tally.errors.values()),
        "errors": dict(tally.errors),
        "by_kind": {kind: dict(sorted(c.items())) for kind, c in tally.by_kind.items() if c},
        "expected": {kind: EXPECTED[kind] for kind, c in tally.by_kind.items() if c},
        "unexpected": {kind: found for kind, found in unexpected.items() if found},
        "outcomes": dict(sorted(tally.outcomes.items())),
        "latency_ms": {"p50": percentile(0.5), "p99": percentile(0.99), "max": percentile(1.0)},
        "stale_retries": tally.stale_retries,
        "connections_opened": tally.connections_opened,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.flood", description=__doc__)
    parser.add_argument("--url", required=True, help="the receiver, e.g. http://127.0.0.1:8080")
    parser.add_argument("--secret", required=True, help="the webhook secret valid ones sign with")
    parser.add_argument("--total", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"kind=weight,... ({DEFAULT_MIX})")
    parser.add_argument("--owner", default="Org")
    parser.add_argument("--package", required=True, help="e.g. workspace-template-claude-code")
    parser.add_argument("--tag", default="latest")
    parser.add_argument("--digest", required=True, help="the digest valid deliveries name")
    parser.add_argument("--max-body", type=int, default=1024 * 1024, help="WEBHOOK_MAX_BODY")
    parser.add_argument("--pad", type=int, default=0, help="extra JSON bytes in package bodies")
    parser.add_argument("--timeout", type=float, default=600, help="give up after, seconds")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        parser.error("--url must be http://host:port")
    try:
        kinds = schedule(parse_mix(args.mix), args.total)
    except ValueError as exc:
        parser.error(str(exc))
    target = Target(
        host=url.hostname,
        port=url.port or 80,
        secret=args.secret,
        owner=args.owner,
        package=args.package,
        tag=args.tag,
        digest=args.digest,
        max_body=args.max_body,
        pad=args.pad,
    )
    tally, seconds = asyncio.run(flood(target, kinds, args.connections, args.timeout))
    json.dump(summary(tally, seconds, len(kinds), args.connections), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
