"""A small HTTP/1.1 load generator with a fixed request count, run as its own process.

``python -m bench.loadgen SPEC.json`` where the spec holds ``host``, ``port``, ``path``,
``connections``, ``count`` and ``requests`` (each ``weight``, ``headers``, ``body``);
requests are sent in weighted round-robin over keep-alive connections, each with a
unique ``X-GitHub-Delivery``.  Prints one JSON line: count, seconds, statuses.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from typing import Any


def _templates(spec: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """(head before the delivery id, rest of the head and the body), one per weight unit."""
    out: list[tuple[bytes, bytes]] = []
    for request in spec["requests"]:
        body = request["body"].encode()
        lines = [f"POST {spec['path']} HTTP/1.1", f"Host: {spec['host']}:{spec['port']}"]
        lines += [f"{name}: {value}" for name, value in request["headers"].items()]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\nX-GitHub-Delivery: ").encode()
        out += [(head, b"\r\n\r\n" + body)] * int(request["weight"])
    return out


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    templates = _templates(spec)
    total = int(spec["count"])
    statuses: Counter[int] = Counter()
    next_index = 0
    errors = 0

    async def connection() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        try:
            while next_index < total:
                index = next_index
                next_index += 1
                head, rest = templates[index % len(templates)]
                writer.write(head + uuid.uuid4().hex.encode() + rest)
                status_line = await reader.readline()
                status = int(status_line.split()[1])
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                statuses[status] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(int(spec["connections"]))))
    seconds = time.perf_counter() - started
    return {
        "count": sum(statuses.values()),
        "seconds": seconds,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connection_errors": errors,
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    print(json.dumps(asyncio.run(_run(spec))), flush=True)


if __name__ == "__main__":
    main()
