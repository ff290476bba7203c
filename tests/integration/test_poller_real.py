"""The poller on the real engine and registry: an update published while the receiver was
down is applied on the first tick; a restart alone recreates nothing; a runtime whose
repository is missing does not hold the others back."""

from __future__ import annotations

from pathlib import Path

from tests.support.service import ReceiverProcess, wait_for
from tests.support.stack import Stack
from tests.support.token_registry import TokenRegistry
from tests.support.workspaces import receiver_env


def test_poller_catches_an_update_made_while_down_and_a_restart_changes_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    runtime, missing = stack.unique("rt"), stack.unique("gone")
    prefix = f"{stack.unique('ws')}-"
    stack.track_container(prefix)
    v1 = stack.publish(f"org/workspace-template-{runtime}", version="v1")
    for name in ("one", "two"):
        stack.run_container(f"{prefix}{name}", v1.ref)
    # Published while no receiver runs: no webhook will ever say so.
    v2 = stack.publish(f"org/workspace-template-{runtime}", version="v2")
    env = {
        **receiver_env(stack, f"{runtime},{missing}", prefix),
        "IMAGE_AUTO_REFRESH": "true",
        "POLL_INTERVAL": "600",
    }

    def images() -> dict[str, tuple[str, bool]]:
        """Container id → (image id, running), by the workspace names (mid-swap, a name
        may be unbound: that workspace is then left out)."""
        found = {}
        for name in ("one", "two"):
            inspect = stack.named(f"{prefix}{name}")
            if inspect is not None:
                found[inspect["Id"]] = (inspect["Image"], inspect["State"]["Running"])
        return found

    first = ReceiverProcess(env, tmp_path / "first.log")
    try:
        first.wait_ready("/healthz")
        token = first.admin_token(ttl=300)
        wait_for(
            "the first tick's refresh",
            lambda: set(images().values()) == {(v2.image_id, True)},
            first,
        )
        wait_for(
            "the book to commit v2",
            lambda: first.status(token)["runtimes"][runtime]["seen"] == v2.digest,
            first,
        )
        shown = first.status(token)
    finally:
        assert first.stop(timeout=60) == 0
    mine = shown["runtimes"][runtime]
    assert mine["last_trigger"]["source"] == "poll"
    assert mine["last_refresh"]["ok"] is True
    assert sorted(mine["last_refresh"]["recreated"]) == [f"{prefix}one", f"{prefix}two"]
    assert shown["runtimes"][missing]["last_poll"]["error"].endswith("(404)")
    assert shown["runtimes"][missing]["seen"] is None
    assert shown["poller"]["last_tick"]["outcomes"] == {
        runtime: "scheduled",
        missing: "fetch failed",
    }

    after_first = images()
    second = ReceiverProcess(env, tmp_path / "second.log")
    try:
        second.wait_ready("/healthz")
        wait_for(
            "the second receiver's first tick",
            lambda: second.status(token)["poller"]["ticks"] >= 1,
            second,
        )
        shown = second.status(token)
    finally:
        assert second.stop(timeout=60) == 0
    # Seeded from the host at boot: the tick finds nothing new and touches nothing.
    assert shown["runtimes"][runtime]["seen"] == v2.digest
    assert shown["poller"]["last_tick"]["outcomes"][runtime] == "unchanged"
    assert shown["runtimes"][runtime]["last_refresh"] is None
    assert images() == after_first


def test_poller_on_a_token_registry_batches_tokens_and_pulls_with_credentials(
    stack: Stack, token_registry: TokenRegistry, tmp_path: Path
) -> None:
    """Private repositories behind a GHCR-like token service: the first tick costs one HEAD
    to learn the challenge and one token request naming every repository, and the engine
    pulls with GHCR_USER/GHCR_TOKEN."""
    token_registry.reset()
    creds = ("reader", token_registry.users["reader"])
    runtimes = [stack.unique("rt") for _ in range(3)]
    prefix = f"{stack.unique('ws')}-"
    stack.track_container(prefix)
    newest = {}
    for runtime in runtimes:
        repo = f"private/workspace-template-{runtime}"
        v1 = stack.publish(repo, version="v1", registry=token_registry.registry, auth=creds)
        stack.run_container(f"{prefix}{runtime}", v1.ref, auth=creds)
        newest[runtime] = stack.publish(
            repo, version="v2", registry=token_registry.registry, auth=creds
        )
    token_registry.reset_log()
    template = f"{token_registry.registry}/private/workspace-template-{{runtime}}:latest"
    env = {
        **receiver_env(stack, ",".join(runtimes), prefix),
        "IMAGE_TEMPLATE": template,
        "GHCR_USER": creds[0],
        "GHCR_TOKEN": creds[1],
        "IMAGE_AUTO_REFRESH": "true",
        "POLL_INTERVAL": "600",
    }

    def on_v2() -> bool:
        return all(
            stack.running_image(f"{prefix}{runtime}") == (newest[runtime].image_id, True)
            for runtime in runtimes
        )

    server = ReceiverProcess(env, tmp_path / "serve.log")
    try:
        server.wait_ready("/healthz")
        token = server.admin_token(ttl=300)
        wait_for("every runtime on v2", on_v2, server)
        wait_for(
            "the book to commit",
            lambda: all(
                server.status(token)["runtimes"][r]["seen"] == newest[r].digest for r in runtimes
            ),
            server,
        )
    finally:
        assert server.stop(timeout=60) == 0
    requests = token_registry.token_requests()
    polls = [r for r in requests if not r.from_engine]
    assert [len(r.scopes) for r in polls] == [3]
    assert all(r.user == "reader" and r.status == 200 for r in polls)
    pulls = [r for r in requests if r.from_engine]
    assert len(pulls) >= len(runtimes)
    assert all(r.user == "reader" and r.status == 200 for r in pulls)
    assert creds[1] not in server.log()
