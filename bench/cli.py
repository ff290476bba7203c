"""`python -m bench`: run the benchmarks, print a table, write JSON, update docs/benchmarks.md."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import report
from .util import ROOT, commit, loadavg, machine, say, write_json

ALL = ("delivery", "ingest", "trigger", "swap", "poll", "memory")
QUIET_LOAD = 1.5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--only",
        default=",".join(ALL),
        help=f"comma-separated benchmarks to run (default: all of {','.join(ALL)})",
    )
    parser.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~2 min)")
    parser.add_argument("--duration", type=float, help="seconds per ingest run (10; quick 3)")
    parser.add_argument("--connections", type=int, default=32, help="ingest connections (32)")
    parser.add_argument(
        "--deliveries", type=int, help="memory: deliveries in all (50000; quick 10000)"
    )
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="update docs/benchmarks.md (default: yes for a full run of everything)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help=f"wait up to this long for the 1-min load average to fall under {QUIET_LOAD}",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHONPATH",
        help="also measure the receiver (and the ceiling) importing from PYTHONPATH first, "
        "e.g. a patched copy of receiver/ (ingest, trigger, swap); repeatable",
    )
    parser.add_argument(
        "--before",
        default=None,
        metavar="GIT_REF",
        help="delivery: the older receiver to profile beside this one (default: the last "
        "commit before the speed work)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="instead: regenerate docs/benchmarks.md and the plot from a results file",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: py-spy profile of the receiver under ingest load",
    )
    return parser


def _wait_quiet(limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        load = loadavg()[0]
        if load < QUIET_LOAD:
            return
        if time.monotonic() >= deadline:
            say(f"load average {load:.2f} is over {QUIET_LOAD}: figures will be noisier")
            return
        say(f"load average {load:.2f}: waiting for the machine to quieten")
        time.sleep(15)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ALL))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ALL)}")
        return 2
    quick = args.quick
    reps = args.reps or (1 if quick else 3)
    duration = args.duration or (3.0 if quick else 10.0)
    deliveries = args.deliveries or (10_000 if quick else 50_000)
    variants = dict(item.split("=", 1) for item in args.variant)
    update_docs = (
        args.docs
        if args.docs is not None
        else (not quick and not variants and set(wanted) == set(ALL))
    )

    if args.render is not None:
        return _render(args.render)

    from tests.support.stack import Stack, StackUnavailable

    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.monotonic()
    stack: Any = None
    try:
        if args.profile:
            from . import profile

            stack = Stack.start()
            out = ROOT / "bench" / "results" / "profile"
            out.parent.mkdir(parents=True, exist_ok=True)
            print(profile.run(stack, workdir, 15, args.connections, out))
            say(f"profile: {out}.txt (collapsed stacks), {out}.svg, {out}.report.txt")
            return 0

        _wait_quiet(args.wait_quiet)
        results: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": quick,
            "repetitions": reps,
            "machine": machine(),
            "commit": commit(),
            "load_before": loadavg(),
            "benchmarks": {},
        }
        say(f"load average {results['load_before']}; running {', '.join(wanted)}, {reps} rep(s)")
        if set(wanted) & {"ingest", "trigger", "swap", "memory"}:
            say("starting the test stack (private dockerd + registry)")
            try:
                stack = Stack.start()
            except StackUnavailable as exc:
                print(f"error: {exc.reason}")
                return 1

        def attempt(name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            try:
                return work()
            except Exception as exc:
                traceback.print_exc()
                say(f"{name}: FAILED: {exc}")
                return {"error": f"{type(exc).__name__}: {exc}"[:2000]}

        bench = results["benchmarks"]
        if "delivery" in wanted:
            from . import delivery

            before = args.before or delivery.BEFORE
            bench["delivery"] = attempt(
                "delivery", lambda: delivery.run(workdir, before, 1 if quick else reps)
            )
        if "ingest" in wanted:
            from . import ingest

            bench["ingest"] = attempt(
                "ingest",
                lambda: ingest.run(stack, workdir, reps, duration, args.connections, variants),
            )
        if "trigger" in wanted or "swap" in wanted:
            from . import swaps

            trigger_ks = [1, 10] if "trigger" in wanted else []
            swap_ks = ([1, 5] if quick else [1, 5, 20, 50]) if "swap" in wanted else []
            both = attempt(
                "swaps", lambda: swaps.run(stack, workdir, trigger_ks, swap_ks, reps, variants)
            )
            if "error" in both:
                if trigger_ks:
                    bench["trigger"] = both
                if swap_ks:
                    bench["scaling"] = both
            else:
                if trigger_ks:
                    bench["trigger"] = both["trigger"]
                if swap_ks:
                    bench["scaling"] = both["scaling"]
        if "poll" in wanted:
            from . import poll

            counts = [10, 100] if quick else [10, 100, 300]
            bench["poll"] = attempt("poll", lambda: poll.run(workdir, counts, reps, 0.025))
        if "memory" in wanted:
            from . import memory

            bench["memory"] = attempt(
                "memory", lambda: memory.run(stack, workdir, deliveries, 5, 5.0)
            )

        results["load_after"] = loadavg()
        results["seconds"] = time.monotonic() - started
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M%SZ")
        name = f"{stamp}{'-quick' if quick else ''}.json"
        json_path = ROOT / "bench" / "results" / name
        write_json(json_path, results)
        print()
        print(report.table(results))
        print()
        say(f"results: {json_path.relative_to(ROOT)}")
        if update_docs:
            plotted = report.plot(results)
            page = report.markdown(results, str(json_path.relative_to(ROOT)), plotted)
            (report.DOCS / "benchmarks.md").write_text(page)
            say("updated docs/benchmarks.md" + (" and docs/swap-scaling.png" if plotted else ""))
        return 0
    finally:
        if stack is not None:
            stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _render(path: Path) -> int:
    results = json.loads(path.read_text())
    print(report.table(results))
    plotted = report.plot(results)
    relative = path.resolve().relative_to(ROOT)
    (report.DOCS / "benchmarks.md").write_text(report.markdown(results, str(relative), plotted))
    say("updated docs/benchmarks.md" + (" and docs/swap-scaling.png" if plotted else ""))
    return 0
