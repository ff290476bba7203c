"""The command line: admin-token mints verifiable tokens; bad settings exit 2 with a reason."""

from __future__ import annotations

import pytest

from receiver import config
from receiver.admin_auth import AdminTokens
from receiver.cli import build_engine, build_refresher, main
from receiver.refresh import RefreshService
from receiver.swarm import SwarmService


def test_admin_token_prints_a_token_the_service_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed token verifies with the same keys and carries the subject."""
    code = main(["admin-token", "--ttl", "60", "--subject", "ci"], {"ADMIN_SECRET_KEY": "k1,k0"})
    token = capsys.readouterr().out.strip()
    assert code == 0
    assert AdminTokens(["k1", "k0"]).verify(token) == "ci"
    assert AdminTokens(["k1"]).verify(token) == "ci"


def test_admin_token_without_a_key_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """With no key there is nothing to sign with: exit 2 and say so."""
    assert main(["admin-token"], {}) == 2
    assert "ADMIN_SECRET_KEY" in capsys.readouterr().err


def test_bad_settings_exit_2_listing_each_problem(capsys: pytest.CaptureFixture[str]) -> None:
    """serve refuses to start on invalid settings and names each one."""
    assert main(["serve"], {"RUNTIMES": "Bad Name", "POLL_INTERVAL": "x"}) == 2
    err = capsys.readouterr().err
    assert "RUNTIMES: 'Bad Name'" in err
    assert "POLL_INTERVAL: 'x'" in err


def test_refresh_takes_runtimes_from_arguments_when_unset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`refresh NAME` works without RUNTIMES; a bad name is still validated."""
    assert main(["refresh", "Bad/Name"], {}) == 2
    assert "'Bad/Name' is not a valid runtime name" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    """Unknown commands are usage errors."""
    with pytest.raises(SystemExit) as caught:
        main(["explode"], {})
    assert caught.value.code == 2


def test_the_orchestrator_picks_what_refreshes() -> None:
    """ORCHESTRATOR=swarm refreshes the Swarm's services; the default, this host's containers."""
    for orchestrator, kind in (("docker", RefreshService), ("swarm", SwarmService)):
        settings = config.load(
            {"RUNTIMES": "a", "ORCHESTRATOR": orchestrator, "DOCKER_HOST": "unix:///nonexistent"}
        )
        engine = build_engine(settings)
        try:
            assert isinstance(build_refresher(settings, engine), kind)
        finally:
            engine.close()
