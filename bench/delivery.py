"""The profile of one delivery: what each stage of the webhook route costs, now and before.

In-process, no server: the receiver's ASGI app over a recording fake engine answers the
ingest benchmark's delivery (an ~11 KB signed `package` delivery whose digest is
unchanged), and its stages are timed alone (bench/delivery_child.py). The same script runs
once on this checkout and once on an older one (`--before`, a git ref checked out into a
temporary worktree), each in a process of its own on the servers' interpreter, so the two
columns come from one run on one machine. The ceiling is bench/ceiling.py's bare app (body
read and HMAC), called the same way.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .util import ROOT, SERVER_CPU, pinned, say, server_python, server_pythonpath

# The receiver before the speed work of issue 16 (the last commit before it).
BEFORE = "dae53cc"
STAGES = ("verify", "decode", "interpret", "submit", "delivery", "ceiling")


def _measure(tree: Path) -> dict[str, Any]:
    done = subprocess.run(
        pinned(SERVER_CPU, [server_python(), str(ROOT / "bench" / "delivery_child.py")]),
        env={"PYTHONPATH": server_pythonpath(str(tree)), "PATH": "/usr/bin:/bin"},
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"delivery profile of {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(workdir: Path, before: str = BEFORE, reps: int = 3) -> dict[str, Any]:
    """Stage costs (µs, least of `reps` child runs) now and at `before`."""
    tree = workdir / "before"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(tree), before],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        columns: dict[str, dict[str, float]] = {"now": {}, "before": {}}
        for rep in range(reps):
            for name, where in (("now", ROOT), ("before", tree)):
                figures = _measure(where)["figures"]
                for stage in STAGES:
                    best = columns[name].get(stage)
                    columns[name][stage] = min(best, figures[stage]) if best else figures[stage]
            say(
                f"delivery: rep {rep + 1}/{reps}: now {columns['now']['delivery']:.1f} µs, "
                f"before {columns['before']['delivery']:.1f} µs per delivery"
            )
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)],
            cwd=ROOT,
            check=False,
            capture_output=True,
        )
    return {"before_ref": before, "repetitions": reps, "us": columns}
