# ruff: noqa: RUF001, RUF002 -- the page and the table use typographic dashes and signs
"""Goals, the printed table, docs/benchmarks.md and the swap-scaling plot, from the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .util import ROOT

DOCS = ROOT / "docs"
DELIVERY_STAGES = ("verify", "decode", "interpret", "submit", "delivery", "ceiling")
_STAGE_TEXT = {
    "verify": "HMAC-SHA256 of the body, compared with the signature",
    "decode": "the body decoded (github.parse_delivery, less the HMAC)",
    "interpret": "what the delivery asks for (github.interpret)",
    "submit": "the digest book: unchanged (Coordinator.submit)",
    "delivery": "**the whole delivery**: the ASGI app, request in, answer out",
    "ceiling": "bench/ceiling.py's bare app (body read, HMAC), called the same way",
}
PLOT = DOCS / "swap-scaling.png"


def fmt(s: dict[str, Any] | None, unit: str = "", digits: int = 2, scale: float = 1.0) -> str:
    """'median (min–max)' of a summary."""
    if not s or s.get("median") is None:
        return "–"
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    if s.get("n", 0) <= 1:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue with its figure and whether it was met."""
    out: list[dict[str, Any]] = []
    bench = results.get("benchmarks", {})

    def add(name: str, figure: str, met: bool | None) -> None:
        out.append({"goal": name, "figure": figure, "met": met})

    ingest = bench.get("ingest")
    if ingest and "ratios" in ingest:
        peer = ingest["ratios"]["ours/peer"]
        ceiling = ingest["ratios"]["ours/ceiling"]
        add("ingest ≥ 0.6× ceiling", f"ours/ceiling {fmt(ceiling)}", ceiling["median"] >= 0.6)
        add("ingest ≥ 0.8× peer", f"ours/peer {fmt(peer)}", peer["median"] >= 0.8)
        add("stretch: ingest at parity with the peer", f"ours/peer {fmt(peer)}", None)
    trigger = bench.get("trigger")
    entry = trigger.get("k", {}).get("10", {}) if trigger else {}
    if "ours, no canary" in entry:
        plain, canary = entry["ours, no canary"], entry.get("ours")
        with_canary = (
            f"; with the default canary {fmt(canary['running_vs_floor'])}×" if canary else ""
        )
        add(
            "trigger-to-running K=10 ≤ 1.1× CLI floor (all running, no canary)",
            f"{fmt(plain['running_vs_floor'])}×{with_canary}",
            plain["running_vs_floor"]["median"] <= 1.1,
        )
    poll = bench.get("poll")
    if poll and "100" in poll.get("runtimes", {}):
        row = poll["runtimes"]["100"]
        first, cold = row["first"], row["cold"]
        baseline = row["baseline"]["seconds"]["median"]
        add(
            "poll R=100 tick ≤ 0.05× the original design",
            f"first {first['seconds']['median'] / baseline:.3f}×, cold "
            f"{cold['seconds']['median'] / baseline:.3f}× ({fmt(first['seconds'], ' s', 3)}, "
            f"{fmt(cold['seconds'], ' s', 3)} against {baseline:.2f} s)",
            max(first["seconds"]["median"], cold["seconds"]["median"]) <= 0.05 * baseline,
        )
        add(
            "poll R=100 ≤ 1.05 requests per runtime",
            f"first {fmt(first['per_runtime'], '', 3)}, cold {fmt(cold['per_runtime'], '', 3)}",
            max(first["per_runtime"]["median"], cold["per_runtime"]["median"]) <= 1.05,
        )
    memory = bench.get("memory")
    if memory and "idle_mib" in memory:
        idle = memory["idle_mib"]
        add("idle RSS ≤ 50 MiB", f"{idle:.1f} MiB ({idle * 1.048576:.1f} MB)", idle <= 50)
        last = memory["samples"][-1]
        growth = last["rss_mib"] - idle
        add(
            "RSS after 50,000 deliveries within 25 MiB of idle",
            f"{growth:+.1f} MiB after {last['deliveries']:,}",
            growth <= 25 and last["deliveries"] >= 50_000,
        )
    return out


def _mark(met: bool | None) -> str:
    return "met" if met else "MISSED" if met is not None else "–"


def table(results: dict[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    lines = [f"benchmarks {results['date']}  load before {results['load_before']}"]
    bench = results.get("benchmarks", {})
    delivery = bench.get("delivery")
    if delivery and "us" in delivery:
        now, before = delivery["us"]["now"], delivery["us"]["before"]
        lines.append(f"\none delivery, in-process (µs): now / before ({delivery['before_ref']})")
        for stage in DELIVERY_STAGES:
            lines.append(f"  {stage:10} {now[stage]:8.1f} / {before[stage]:8.1f}")
    ingest = bench.get("ingest")
    if ingest and "contenders" in ingest:
        lines.append("\ningest (req/s, p50 ms, p99 ms)")
        for name, row in ingest["contenders"].items():
            lines.append(
                f"  {name:8} {fmt(row['rps'], '', 0):>22}  {fmt(row['p50_ms']):>22}  "
                f"{fmt(row['p99_ms']):>24}"
            )
        for name, ratio in ingest["ratios"].items():
            lines.append(f"  {name:13} {fmt(ratio)}")
    trigger = bench.get("trigger")
    if trigger and "k" in trigger:
        lines.append("\ntrigger-to-running (s): total; ack / pull / swap; ratio to floor")
        for k, entry in trigger["k"].items():
            for label, row in entry.items():
                ratio = f"  {fmt(row['vs_floor'])}×" if "vs_floor" in row else ""
                lines.append(
                    f"  K={k:<3}{label:16} {fmt(row['total']):>20}; {fmt(row['ack'], '', 3)} / "
                    f"{fmt(row['pull'])} / {fmt(row['swap'])}{ratio}"
                )
    scaling = bench.get("scaling")
    if scaling and "k" in scaling:
        lines.append("\nswap scaling (s, s per container, speed-up vs sequential CLI)")
        for k, entry in scaling["k"].items():
            for label, row in entry.items():
                speed = f"  ×{fmt(row['speedup_vs_cli'])}" if "speedup_vs_cli" in row else ""
                lines.append(
                    f"  K={k:<3}{label:16} {fmt(row['seconds']):>20} "
                    f"{fmt(row['per_container']):>18}{speed}"
                )
    poll = bench.get("poll")
    if poll and "runtimes" in poll:
        lines.append("\npoll tick (s; requests per runtime)")
        for count, row in poll["runtimes"].items():
            for name in ("first", "cold", "warm", "baseline"):
                speed = (
                    f"  ×{fmt(row['speedup'][name], '', 1)} faster"
                    if name in row["speedup"]
                    else ""
                )
                lines.append(
                    f"  R={count:<4}{name:9} {fmt(row[name]['seconds'], '', 3):>24}  "
                    f"{fmt(row[name]['per_runtime'], '', 3):>8}{speed}"
                )
    memory = bench.get("memory")
    if memory and "idle_mib" in memory:
        lines.append(
            f"\nmemory: idle {memory['idle_mib']:.1f} MiB; "
            + ", ".join(f"{s['deliveries']}: {s['rss_mib']:.1f}" for s in memory["samples"][1:])
            + f"; after pause {memory['after_pause_mib']:.1f} MiB"
        )
    for name, entry in bench.items():
        if "error" in entry:
            lines.append(f"\n{name}: FAILED: {entry['error']}")
    lines.append("\ngoals")
    for goal in goals(results):
        lines.append(f"  [{_mark(goal['met']):6}] {goal['goal']}: {goal['figure']}")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path = PLOT) -> bool:
    """The swap-scaling plot (seconds per K), when matplotlib is installed."""
    scaling = results.get("benchmarks", {}).get("scaling")
    if not scaling or "k" not in scaling:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ks = sorted(int(k) for k in scaling["k"])
    labels = list(scaling["k"][str(ks[0])])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for axis, key in ((left, "seconds"), (right, "per_container")):
        for label in labels:
            rows = [scaling["k"][str(k)][label][key] for k in ks]
            med = [row["median"] for row in rows]
            low = [row["median"] - row["min"] for row in rows]
            high = [row["max"] - row["median"] for row in rows]
            axis.errorbar(ks, med, yerr=[low, high], marker="o", capsize=3, label=label)
        axis.set_xlabel("containers swapped (K)")
        axis.set_xticks(ks)
        axis.grid(alpha=0.3)
    left.set_ylabel("seconds for all K (median, min–max)")
    right.set_ylabel("seconds per container")
    right.set_ylim(bottom=0)
    left.legend()
    grace = scaling["settings"]["grace_seconds"]
    fig.suptitle(f"Swap scaling: image already pulled, SWAP_GRACE_SECONDS={grace:g}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def markdown(results: dict[str, Any], json_path: str, plotted: bool) -> str:
    """docs/benchmarks.md."""
    m = results["machine"]
    bench = results.get("benchmarks", {})
    out: list[str] = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/bench` from [`{json_path}`](../{json_path}); do not edit by hand.",
        "",
        "Every figure is measured side by side with its comparison **in the same run**, "
        "interleaved, several repetitions; shown as median (min–max). This machine is shared "
        "and noisy, so the **ratios** are the result; absolute numbers are context only. "
        "Nothing here is a pass/fail test.",
        "",
        "## Machine and run",
        "",
        f"- date: {results['date']}{' (quick run)' if results.get('quick') else ''}; "
        f"run took {results['seconds']:.0f} s; receiver at commit "
        f"{results.get('commit', 'unknown')}",
        f"- load average (1, 5, 15 min): before {results['load_before']}, "
        f"after {results['load_after']}",
        f"- {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}, kernel {m['kernel']}",
        f"- Python {m['python']}, uvicorn {m['uvicorn']} ({m['uvicorn_http']}), "
        f"starlette {m['starlette']}; Node {m['node']}; {m['wrk']}; docker {m['docker']}",
        "- the servers under test (the receiver, the ceiling) run on `.venv-runtime`, a "
        "virtualenv with the receiver's runtime dependencies only, as deploy/Dockerfile "
        "installs them",
        "",
        "## Goals",
        "",
        "| goal | figure | |",
        "|---|---|---|",
    ]
    for goal in goals(results):
        out.append(f"| {goal['goal']} | {goal['figure']} | {_mark(goal['met'])} |")
    out.append("")

    delivery = bench.get("delivery")
    if delivery and "us" in delivery:
        now, before = delivery["us"]["now"], delivery["us"]["before"]
        out += [
            "## 0. The profile of one delivery",
            "",
            "What each stage of the webhook route costs for the ingest benchmark's delivery "
            "(below), in-process with no server: the receiver's ASGI app over a recording "
            "fake engine (`bench/delivery.py`). Each stage timed alone, the least of 7 runs "
            "of 2,000 calls, with the garbage collector off (the whole delivery with it on, as "
            f"in a server); the least of {delivery['repetitions']} such processes. *before*: "
            f"the same script on commit {delivery['before_ref']}, the receiver before the "
            "speed work, in the same run.",
            "",
            "| stage | now (µs) | before (µs) |",
            "|---|---|---|",
        ]
        for stage in DELIVERY_STAGES:
            out.append(f"| {_STAGE_TEXT[stage]} | {now[stage]:.1f} | {before[stage]:.1f} |")
        out += [
            "",
            f"A delivery costs {before['delivery'] / now['delivery']:.1f}× less than before, "
            f"{now['delivery'] / now['ceiling']:.1f}× the bare app's. Where it went: the body "
            "is decoded straight into typed values of just the fields read "
            "(`receiver/payloads.py`, msgspec) instead of `json.loads` of all of it; the route "
            "is a bare ASGI endpoint served before Starlette's middleware and router; the "
            "HMAC key is set up once per secret; deliveries are counted in plain integers; "
            "the values made per delivery are msgspec Structs.",
            "",
        ]

    ingest = bench.get("ingest")
    if ingest and "contenders" in ingest:
        s = ingest["settings"]
        out += [
            "## 1. Webhook ingest",
            "",
            f"A signed `package` delivery ({s['body_bytes']:,} bytes, the real multi-arch "
            "capture's shape) for a watched runtime whose digest is unchanged (answer 202 "
            f"`unchanged`), from {s['load_generator']}: {s['connections']} connections, "
            f"{s['seconds']:g} s per run, {s['repetitions']} run(s) each, interleaved. Each server "
            "is one process pinned to the other CPU. *ours*: `python -m receiver serve` with "
            "default settings (INFO logs to a file). *ceiling*: a bare ASGI app that reads the "
            "body and checks the HMAC (`bench/ceiling.py`) under the receiver's own uvicorn "
            "stack and settings (`receiver.server.serve`: httptools, uvloop, one worker). "
            "*peer*: `@octokit/webhooks` "
            f"{s['octokit_webhooks']} `createNodeMiddleware` verifying the same signature.",
            "",
            "| server | requests/s | p50 latency (ms) | p99 latency (ms) | RSS after (MiB) |",
            "|---|---|---|---|---|",
        ]
        for name, row in ingest["contenders"].items():
            out.append(
                f"| {name} | {fmt(row['rps'], '', 0)} | {fmt(row['p50_ms'])} | "
                f"{fmt(row['p99_ms'])} | {row['rss_mib_after']:.1f} |"
            )
        out += [
            "",
            f"Ratios (per run, paired): ours/peer {fmt(ingest['ratios']['ours/peer'])}, "
            f"ours/ceiling {fmt(ingest['ratios']['ours/ceiling'])}.",
            "",
        ]

    trigger = bench.get("trigger")
    if trigger and "k" in trigger:
        s = trigger["settings"]
        out += [
            "## 2. Trigger-to-running",
            "",
            "From sending a signed delivery for a newly published digest to all K containers "
            "running the new image (polled on the engine) and the swap settled (every old "
            "container removed). *ack*: the 202; *pull*: from the 202 to the receiver's "
            "`pulled` log line; *swap*: from there to settled. The *floor* is the docker CLI "
            "in the same run: `docker pull`, then for every container at once `docker stop`, "
            "`docker rm`, `docker run` (no rename aside, no health wait, nothing to go back "
            f"to). SWAP_GRACE_SECONDS={s['grace_seconds']:g} (the safety wait: a new "
            "container must keep running that long before the old one is removed); the "
            f"containers run {s['stop']}. "
            "*receiver's metric*: what the receiver itself records in "
            "`receiver_trigger_to_running_seconds` (arrival to refresh done). "
            "*grace excluded* subtracts grace × waves from ours (waves: the canary's, then "
            "⌈(K − canary) / SWAP_PARALLELISM⌉): what the swap costs besides its deliberate "
            "waits. *ours* and *ours P=4* run the default rollout: one canary swapped and "
            "proven alone (its grace waited out) before the rest, the price of never "
            "restarting every workspace on a bad image; *ours, no canary* "
            "(`ROLLOUT_CANARY=0`) is the swap machinery alone, the figure to hold against "
            "the floor. The engine holds the swap-scaling workspaces too (about 90 "
            "containers); a refresh lists and inspects every container of the host before "
            "it swaps (to find the workspaces and what joins their namespaces), the floor "
            "looks at none.",
            "",
            "| K | who | total (s) | all running (s) | ack (ms) | pull (s) | swap (s) | "
            "receiver's metric (s) | × floor | × floor, running | × floor, grace excluded |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k, entry in trigger["k"].items():
            for label, row in entry.items():
                extra = (
                    f"{fmt(row['vs_floor'])} | {fmt(row['running_vs_floor'])} | "
                    f"{fmt(row['without_grace_vs_floor'])}"
                    if "vs_floor" in row
                    else "– | – | –"
                )
                out.append(
                    f"| {k} | {label} | {fmt(row['total'])} | {fmt(row['running'])} | "
                    f"{fmt(row['ack'], '', 0, 1000)} | {fmt(row['pull'])} | {fmt(row['swap'])} "
                    f"| {fmt(row.get('metric'))} | {extra} |"
                )
        out.append("")

    scaling = bench.get("scaling")
    if scaling and "k" in scaling:
        out += [
            "## 3. Swap scaling",
            "",
            "K containers of one runtime moved onto a new image that is already pulled: an "
            "admin refresh (answers when every swap is done) with SWAP_PARALLELISM 16 (the "
            "default) and 4 (the earlier default), against a sequential CLI script (`docker "
            "stop`, `rm`, `run`, "
            f"one container after another). SWAP_GRACE_SECONDS="
            f"{scaling['settings']['grace_seconds']:g}.",
            "",
            "| K | who | seconds | seconds per container | speed-up vs sequential CLI |",
            "|---|---|---|---|---|",
        ]
        for k, entry in scaling["k"].items():
            for label, row in entry.items():
                speed = fmt(row["speedup_vs_cli"]) + "×" if "speedup_vs_cli" in row else "–"
                out.append(
                    f"| {k} | {label} | {fmt(row['seconds'])} | {fmt(row['per_container'])} | "
                    f"{speed} |"
                )
        out.append("")
        if plotted:
            out += ["![swap scaling](swap-scaling.png)", ""]

    poll = bench.get("poll")
    if poll and "runtimes" in poll:
        s = poll["settings"]
        out += [
            "## 4. Poll cost",
            "",
            f"R runtimes, each its own repository on {s['registry']} adding "
            f"{s['delay_each_way_ms']:g} ms each way (registry and token realm). *ours*: one "
            "poller tick, `RegistryClient.digests()` on the receiver's own HTTP client "
            "(`registry.http_client()`; plain HTTP/1.1 here, the registry being plain HTTP); "
            "*first*: a new client (one HEAD learns the challenge, then one token request "
            "names every repository, then every HEAD at once); *cold*: every token expired, "
            "challenge known — what each production tick is with the default 300 s interval "
            "and 60 s tokens; *warm*: tokens cached. Its limit is a token round trip plus a "
            f"HEAD round trip, {4 * s['delay_each_way_ms']:g} ms for a cold tick, plus the "
            "CPU of a hundred requests on the two cores the registry, the token service and "
            "the delay proxies share. Against a registry that speaks HTTP/2 (GHCR does) the "
            "same client sends a whole tick over one connection "
            "(tests/integration/test_registry_http2_real.py). "
            "*baseline*: the original design in the same process — per runtime, in turn, a "
            "token GET for its scope, then the manifest HEAD. Requests counted by the clients "
            f"(token + HEAD). {s['repetitions']} repetitions; setting up the repositories took "
            f"{s['setup_seconds']:.1f} s.",
            "",
            "| R | tick | seconds | requests per runtime | HEAD | token | speed-up vs baseline |",
            "|---|---|---|---|---|---|---|",
        ]
        for count, row in poll["runtimes"].items():
            for name in ("first", "cold", "warm", "baseline"):
                speed = fmt(row["speedup"][name], "", 1) + "×" if name in row["speedup"] else "–"
                out.append(
                    f"| {count} | {name} | {fmt(row[name]['seconds'], '', 3)} | "
                    f"{fmt(row[name]['per_runtime'], '', 3)} | {fmt(row[name]['head'], '', 0)} | "
                    f"{fmt(row[name]['token'], '', 0)} | {speed} |"
                )
        out.append("")

    memory = bench.get("memory")
    if memory and "idle_mib" in memory:
        s = memory["settings"]
        mix = ", ".join(f"{v} {k}" for k, v in s["mix"].items())
        out += [
            "## 5. Memory",
            "",
            f"Resident memory (VmRSS) of a fresh receiver (on `.venv-runtime`, as deployed) at "
            "idle, then after each batch of "
            f"{s['deliveries'] // s['batches']:,} signed deliveries ({s['connections']} "
            f"connections, a new delivery id each; mix per 21: {mix}), then after a "
            f"{s['pause_seconds']:g} s pause. Answers: "
            + ", ".join(f"{v:,}× {k}" for k, v in sorted(memory["statuses"].items()))
            + ".",
            "",
            "| deliveries | RSS (MiB) |",
            "|---|---|",
        ]
        for sample in memory["samples"]:
            out.append(f"| {sample['deliveries']:,} | {sample['rss_mib']:.1f} |")
        out += [
            f"| after pause | {memory['after_pause_mib']:.1f} |",
            "",
            f"Growth from the first batch to the end: "
            f"{memory['growth_after_first_batch_mib']:+.2f} MiB.",
            "",
        ]

    for name, entry in bench.items():
        if "error" in entry:
            out += [f"**{name} failed:** `{entry['error']}`", ""]

    out += [
        "## Reproduce",
        "",
        "```sh",
        "scripts/bench            # everything (~12 min); updates this page",
        "scripts/bench --quick    # a short smoke run (~1.5 min); JSON only",
        "scripts/bench --only ingest,poll --reps 5",
        "scripts/bench --only delivery --before <git ref>   # one delivery, now and then",
        "scripts/bench --profile  # py-spy profile of the receiver under ingest load",
        "# a patched copy of receiver/ measured beside the current one (ingest, trigger, swap):",
        "scripts/bench --only ingest --variant patched=/tmp/patched   # /tmp/patched/receiver/…",
        "```",
        "",
        "`scripts/bench` installs what it needs (Debian's docker.io, docker-registry, "
        "busybox-static and wrk; the `bench` extra; `.venv-runtime` with the receiver's "
        "runtime dependencies; `@octokit/webhooks` from npm into a "
        "temp dir), starts a private dockerd and registry (`tests/support/stack.py`) and a token "
        "registry (`tests/support/token_registry.py`), and writes `bench/results/<date>.json`. "
        "Run it when the machine is quiet (load average under 1.5): `--wait-quiet 300` "
        "waits up to that long for it.",
        "",
    ]
    return "\n".join(out)
