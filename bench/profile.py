"""Profile the receiver under ingest load with py-spy (``python -m bench --profile``).

Starts the receiver as the ingest benchmark does, runs wrk against it while py-spy samples
the process, and prints where the time goes: the functions with the most samples on the
stack (inclusive) and at its top (self), from py-spy's collapsed stacks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import deliveries, ingest
from .util import say


def collapsed_report(path: Path, top: int = 25) -> str:
    """Inclusive and self sample shares per function from a collapsed-stack file."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1] for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"\n-- top {top} by {title} share --")
        for frame, count in table.most_common(top):
            lines.append(f"{100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


def run(stack: Any, workdir: Path, seconds: float, connections: int, out: Path) -> str:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    secret = deliveries.new_secret()
    digest = ingest.seed_image(stack)
    body = deliveries.package_body(ingest.RUNTIME, digest)
    body_path = workdir / "profile-body.json"
    body_path.write_bytes(body)
    receiver = ingest.start_receiver(stack, secret, workdir, "profile-receiver")
    try:
        ingest.wait_unchanged(receiver.base, body, secret)
        url = f"{receiver.base}/webhooks/github"
        ingest.wrk(url, body_path, deliveries.sign(body, secret), connections, 2)
        say(f"profile: py-spy samples the receiver for {seconds:g} s (+5 s for a flamegraph)")
        collapsed = out.with_suffix(".txt")
        load: dict[str, Any] = {}

        def drive() -> None:
            load.update(
                ingest.wrk(url, body_path, deliveries.sign(body, secret), connections, seconds + 7)
            )

        thread = threading.Thread(target=drive)
        thread.start()
        time.sleep(1)
        for fmt, path, duration in (
            ("raw", collapsed, seconds),
            ("flamegraph", out.with_suffix(".svg"), 5),
        ):
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(receiver.pid),
                    "--duration",
                    str(int(duration)),
                    "--rate",
                    "250",
                    "--format",
                    fmt,
                    "--output",
                    str(path),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
        thread.join()
    finally:
        receiver.stop()
    report = f"{load.get('rps', 0):.0f} req/s while sampled\n" + collapsed_report(collapsed)
    out.with_suffix(".report.txt").write_text(report + "\n")
    return report
