"""Floods on the real stack: 10,000 deliveries, mixed valid and invalid, at 64 connections
from a separate process (tests/flood.py) against the receiver's own process. No 5xx, every
delivery answered with its kind's status, each container swapped once onto the new
digest, and the receiver's memory back near its idle figure afterwards. Unsigned floods are
cheap to reject: the signature is checked before the body is parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import wiring
from tests.support.deliveries import package_body, sign
from tests.support.fakes import engine_with_stale_workspace
from tests.support.flood import EXPECTED, parse_mix, schedule
from tests.support.service import ReceiverProcess
from tests.support.stack import QUICK_STOP_CMD, Published, Stack
from tests.support.workspaces import receiver_env

from .test_webhook_real import SECRET

ROOT = Path(__file__).resolve().parents[2]


def created_names(stack: Stack, since_ns: int, prefix: str) -> list[str]:
    """Names of the containers created under `prefix` since `since_ns`, one per create."""
    return sorted(event.name for event in stack.events(since_ns, prefix))


MAX_BODY = 65536
TOTAL = 10_000
CONNECTIONS = 64
MIX = (
    "valid=30,untagged=15,ping=5,unsigned=15,bad-signature=10,malformed=5,"
    "content-type=5,oversized=5,unknown-event=10"
)
# Idle after the flood, the receiver may keep some of what it grew (allocator arenas,
# caches), but no more than this over its idle figure before the flood.
RSS_SLACK_KIB = 15 * 1024
SETTLE_SECONDS = 3.0


def rss_kib(pid: int) -> int:
    """The resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command's name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_flood(
    server: ReceiverProcess,
    runtime: str,
    digest: str,
    *,
    total: int,
    mix: str,
    pad: int = 0,
    connections: int = CONNECTIONS,
) -> dict[str, Any]:
    """Run tests/flood.py as its own process against the receiver; its summary."""
    command = [
        sys.executable,
        "-m",
        "tests.support.flood",
        f"--url={server.base}",
        f"--secret={SECRET}",
        f"--total={total}",
        f"--connections={connections}",
        f"--mix={mix}",
        "--owner=Org",
        f"--package=workspace-template-{runtime}",
        f"--digest={digest}",
        f"--max-body={MAX_BODY}",
        f"--pad={pad}",
        "--timeout=240",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


@pytest.fixture
def flooded(stack: Stack, tmp_path: Path) -> Iterator[tuple[ReceiverProcess, str, str, Published]]:
    """A receiver watching a runtime with two `ws-` containers on v1; v1 not yet replaced."""
    runtime = stack.unique("rt")
    prefix = f"{stack.unique('ws')}-"
    stack.track_container(prefix)
    v1 = stack.publish(f"org/workspace-template-{runtime}", version="v1", cmd=QUICK_STOP_CMD)
    for name in ("one", "two"):
        stack.run_container(f"{prefix}{name}", v1.ref)
    env = {
        **receiver_env(stack, runtime, prefix),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_MAX_BODY": str(MAX_BODY),
    }
    server = ReceiverProcess(env, tmp_path / "serve.log")
    try:
        server.wait_ready()
        yield server, runtime, prefix, v1
    finally:
        assert server.stop() == 0


def test_a_mixed_flood_of_10000_deliveries(
    stack: Stack, flooded: tuple[ReceiverProcess, str, str, Published]
) -> None:
    server, runtime, prefix, v1 = flooded
    pid = server.process.pid
    names = [f"{prefix}one", f"{prefix}two"]
    rss = {"ready": rss_kib(pid)}
    # Warm up with deliveries that trigger nothing, so the idle figure is the steady one.
    warm_mix = "untagged=1,ping=1,unsigned=1,bad-signature=1,malformed=1,unknown-event=1"
    warm = run_flood(server, runtime, v1.digest, total=600, mix=warm_mix)
    assert warm["server_errors"] == 0
    time.sleep(1.0)
    rss["idle"] = rss_kib(pid)

    v2 = stack.publish(f"org/workspace-template-{runtime}", version="v2", cmd=QUICK_STOP_CMD)
    since_ns = time.time_ns()
    summary = run_flood(server, runtime, v2.digest, total=TOTAL, mix=MIX)
    rss["after"] = rss_kib(pid)

    deadline = time.monotonic() + 60
    # By name through stack.running_image: a name is briefly unbound during its swap.
    while any(stack.running_image(n) != (v2.image_id, True) for n in names):
        assert time.monotonic() < deadline, server.log()[-5000:]
        time.sleep(0.2)
    time.sleep(SETTLE_SECONDS)
    rss["settled"] = rss_kib(pid)
    print(json.dumps({"flood": summary, "rss_kib": rss}, indent=2))

    assert summary["answered"] == TOTAL, summary
    assert summary["server_errors"] == 0, summary
    assert summary["transport_errors"] == 0, summary
    assert summary["unexpected"] == {}, summary
    counts = {kind: sum(found.values()) for kind, found in summary["by_kind"].items()}
    planned = schedule(parse_mix(MIX), TOTAL)
    assert counts == {kind: planned.count(kind) for kind in EXPECTED}
    # The first valid delivery scheduled the swap; the rest joined it or found it done.
    outcomes = summary["outcomes"]
    assert outcomes.get("scheduled") == 1, outcomes
    assert set(outcomes) <= {"scheduled", "coalesced", "unchanged"}, outcomes
    assert sum(outcomes.values()) == counts["valid"]

    # Each container swapped exactly once, and running on v2.
    assert created_names(stack, since_ns, prefix) == names
    for name in names:
        inspect = stack.client.api.inspect_container(name)
        assert (inspect["Image"], inspect["State"]["Running"]) == (v2.image_id, True)
    assert rss["settled"] - rss["idle"] < RSS_SLACK_KIB, rss
    with httpx.Client(base_url=server.base, timeout=10) as http:
        assert http.get("/healthz").status_code == 200


def test_unsigned_floods_are_cheaper_than_valid_ones(
    flooded: tuple[ReceiverProcess, str, str, Published],
) -> None:
    """Bodies near the size limit: unsigned or forged ones are refused before any parsing,
    so they cost the receiver no more than valid ones, which are parsed and interpreted.

    The cost is the receiver's own CPU time per delivery, which other work on the machine
    (other test runs, say) hardly moves, unlike its throughput."""
    server, runtime, _, v1 = flooded
    pid = server.process.pid
    # v1 is what the host runs (the boot seed): valid deliveries find nothing to do.
    costs: dict[str, float] = {}
    for kind in ("valid", "unsigned", "bad-signature", "valid", "unsigned", "bad-signature"):
        before = cpu_seconds(pid)
        found = run_flood(server, runtime, v1.digest, total=1500, mix=f"{kind}=1", pad=48_000)
        spent = (cpu_seconds(pid) - before) / 1500
        assert found["server_errors"] == 0, found
        assert found["unexpected"] == {}, found
        costs[kind] = min(costs.get(kind, spent), spent)
    print(json.dumps({"receiver_cpu_ms_per_delivery": {k: v * 1000 for k, v in costs.items()}}))
    # Least of two runs each; the clock ticks at 10 ms, hence the margin.
    assert costs["unsigned"] <= 1.1 * costs["valid"], costs
    assert costs["bad-signature"] <= 1.1 * costs["valid"], costs


def test_a_forged_delivery_is_refused_without_parsing_its_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the JSON parser made to fail, unsigned and forged deliveries still get 401: the
    signature is checked over the raw body first. A correctly signed one reaches the parser."""
    settings = wiring.settings(GITHUB_WEBHOOK_SECRET=SECRET, WEBHOOK_MAX_BODY=str(MAX_BODY))
    engine = engine_with_stale_workspace()
    client = wiring.app_client(engine, settings)
    body = package_body("workspace-template-a", "sha256:" + "2" * 64, owner="Org", pad=48_000)
    parsed: list[int] = []

    def refuse_to_parse(*_: object, **__: object) -> object:
        parsed.append(1)
        raise AssertionError("the body was parsed")

    base = {"Content-Type": "application/json", "X-GitHub-Event": "package"}
    try:
        monkeypatch.setattr("receiver.payloads.decode", refuse_to_parse)
        unsigned = client.post("/webhooks/github", content=body, headers=base)
        forged = client.post(
            "/webhooks/github",
            content=body,
            headers={**base, "X-Hub-Signature-256": sign(body, "not-the-secret")},
        )
        assert (unsigned.status_code, forged.status_code, parsed) == (401, 401, [])
        with pytest.raises(AssertionError, match="the body was parsed"):
            client.post(
                "/webhooks/github",
                content=body,
                headers={**base, "X-Hub-Signature-256": sign(body, SECRET)},
            )
        assert parsed == [1]
    finally:
        monkeypatch.undo()
        client.close()
