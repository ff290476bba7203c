"""Memory: the receiver's resident memory at idle and while 50,000 deliveries go through it.

A fresh receiver (the ingest benchmark's settings) is measured after start, then after
each batch of mixed deliveries from a separate load generator process (mostly the
unchanged-digest path, plus forged signatures, untagged manifests, unwatched packages,
other events and pings, each with a new delivery id), then again after a pause.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from . import deliveries, ingest
from .util import LOAD_CPU, pinned, python, say

CONNECTIONS = 16


def _load(spec_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        pinned(LOAD_CPU, [python(), "-m", "bench.loadgen", str(spec_path)]),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(stack: Any, workdir: Path, total: int, batches: int, pause: float) -> dict[str, Any]:
    secret = deliveries.new_secret()
    digest = ingest.seed_image(stack)
    receiver = ingest.start_receiver(stack, secret, workdir, "memory-receiver")
    samples: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    try:
        body = deliveries.package_body(ingest.RUNTIME, digest)
        ingest.wait_unchanged(receiver.base, body, secret)
        time.sleep(2)
        idle = receiver.rss_kib()
        samples.append({"deliveries": 0, "rss_mib": idle / 1024})
        say(f"memory: idle {idle / 1024:.1f} MiB")
        per_batch = total // batches
        spec = {
            "host": "127.0.0.1",
            "port": receiver.port,
            "path": "/webhooks/github",
            "connections": CONNECTIONS,
            "count": per_batch,
            "requests": deliveries.memory_mix(ingest.RUNTIME, digest, secret),
        }
        spec_path = workdir / "memory-spec.json"
        spec_path.write_text(json.dumps(spec))
        sent = 0
        for _ in range(batches):
            result = _load(spec_path)
            sent += int(result["count"])
            for status, count in result["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
            rss = receiver.rss_kib()
            samples.append({"deliveries": sent, "rss_mib": rss / 1024})
            say(
                f"memory: {sent:6d} deliveries ({result['count'] / result['seconds']:.0f}/s) "
                f"RSS {rss / 1024:.1f} MiB"
            )
        time.sleep(pause)
        after_pause = receiver.rss_kib() / 1024
        say(f"memory: after a {pause:g} s pause {after_pause:.1f} MiB")
    finally:
        receiver.stop()
    first_batch = samples[1]["rss_mib"] if len(samples) > 1 else samples[0]["rss_mib"]
    return {
        "settings": {
            "deliveries": total,
            "batches": batches,
            "connections": CONNECTIONS,
            "pause_seconds": pause,
            "mix": {
                "unchanged digest": 14,
                "forged signature": 2,
                "untagged manifest": 2,
                "unwatched package": 1,
                "issues event": 1,
                "ping": 1,
            },
        },
        "idle_mib": samples[0]["rss_mib"],
        "samples": samples,
        "after_pause_mib": after_pause,
        "growth_after_first_batch_mib": samples[-1]["rss_mib"] - first_batch,
        "growth_total_mib": after_pause - samples[0]["rss_mib"],
        "statuses": statuses,
    }
