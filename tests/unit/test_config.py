"""Settings are validated at start with one clear error per bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver import config
from receiver.errors import ConfigError


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(env)
    return caught.value.problems


def test_defaults_follow_the_contract() -> None:
    """Only RUNTIMES is required; every other setting has the contract's default."""
    settings = config.load({"RUNTIMES": "claude-code, codex"})
    assert settings.runtimes == ("claude-code", "codex")
    assert settings.image_template == "ghcr.io/molecule-ai/workspace-template-{runtime}:latest"
    assert settings.container_prefix == "ws-"
    assert settings.auto_refresh is False
    assert settings.poll_interval == 300
    assert settings.dispatch_event_types == ("template-image-published",)
    assert settings.webhook_secrets == ()
    assert settings.admin_keys == ()
    assert settings.registry_auth is None
    assert str(settings.image_for("codex")) == "ghcr.io/molecule-ai/workspace-template-codex:latest"


def test_every_bad_setting_is_reported_at_once() -> None:
    """Several bad settings give one line each, naming the setting."""
    found = problems(
        {
            "RUNTIMES": "Claude Code,ok",
            "IMAGE_TEMPLATE": "ghcr.io/x/y:latest",
            "POLL_INTERVAL": "five",
            "IMAGE_AUTO_REFRESH": "maybe",
            "GHCR_USER": "me",
            "LOG_FORMAT": "xml",
            "CONTAINER_PREFIX": "-bad",
        }
    )
    names = [line.split(":")[0] for line in found]
    assert names == [
        "RUNTIMES",
        "IMAGE_TEMPLATE",
        "CONTAINER_PREFIX",
        "GHCR_USER and GHCR_TOKEN",
        "LOG_FORMAT",
        "IMAGE_AUTO_REFRESH",
        "POLL_INTERVAL",
    ]
    assert "'Claude Code' is not a valid runtime name" in found[0]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ghcr.io/x/{other}:latest", "must contain {runtime}"),
        ("ghcr.io/x/{runtime}-{other}", "no placeholder but {runtime}"),
        ("ghcr.io/x/{runtime}:bad tag", "does not give an image reference"),
        ("ghcr.io/x/{runtime}@sha256:" + "a" * 64, "pins a digest"),
    ],
)
def test_bad_templates_are_refused(template: str, message: str) -> None:
    """IMAGE_TEMPLATE must render to a tag reference through {runtime} alone."""
    (line,) = problems({"RUNTIMES": "a", "IMAGE_TEMPLATE": template})
    assert message in line


def test_runtimes_are_required_and_unique() -> None:
    """An empty or repeated RUNTIMES is an error."""
    assert "RUNTIMES: required" in problems({})[0]
    assert "listed twice" in problems({"RUNTIMES": "a,a"})[0]


def test_interval_has_a_floor() -> None:
    """A poll interval below 10 s would hammer the registry."""
    assert "below the minimum" in problems({"RUNTIMES": "a", "POLL_INTERVAL": "1"})[0]


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    """NAME_FILE reads the secret from a file, trailing newline stripped."""
    (tmp_path / "hook").write_text("one\ntwo\n")
    (tmp_path / "token").write_text("ghp_x\n")
    settings = config.load(
        {
            "RUNTIMES": "a",
            "GITHUB_WEBHOOK_SECRET_FILE": str(tmp_path / "hook"),
            "GHCR_USER": "me",
            "GHCR_TOKEN_FILE": str(tmp_path / "token"),
            "ADMIN_SECRET_KEY": "new,old",
        }
    )
    assert settings.webhook_secrets == ("one", "two")
    assert settings.registry_auth == ("me", "ghp_x")
    assert settings.admin_keys == ("new", "old")


def test_secret_file_problems_are_reported(tmp_path: Path) -> None:
    """A missing file, or both NAME and NAME_FILE, is an error, never a silent empty secret."""
    found = problems(
        {
            "RUNTIMES": "a",
            "ADMIN_SECRET_KEY_FILE": str(tmp_path / "absent"),
            "GITHUB_WEBHOOK_SECRET": "x",
            "GITHUB_WEBHOOK_SECRET_FILE": str(tmp_path / "absent"),
        }
    )
    assert any(
        "GITHUB_WEBHOOK_SECRET and GITHUB_WEBHOOK_SECRET_FILE are both set" in p for p in found
    )
    assert any(p.startswith("ADMIN_SECRET_KEY_FILE: cannot read") for p in found)


def test_secrets_stay_out_of_the_repr() -> None:
    """Printing a Config never shows a secret."""
    settings = config.load(
        {"RUNTIMES": "a", "GHCR_USER": "me", "GHCR_TOKEN": "tok-123", "ADMIN_SECRET_KEY": "k-456"}
    )
    assert "tok-123" not in repr(settings)
    assert "k-456" not in repr(settings)


def test_docker_settings_pass_through() -> None:
    """DOCKER_HOST is handed to the SDK as given; unrelated variables are not."""
    settings = config.load({"RUNTIMES": "a", "DOCKER_HOST": "unix:///x.sock", "HOME": "/root"})
    assert dict(settings.docker_env) == {"DOCKER_HOST": "unix:///x.sock"}


def test_swarm_mode_settings() -> None:
    """ORCHESTRATOR picks docker (default) or swarm; INSECURE_REGISTRIES are host or
    host:port, kept lower-case; SWARM_UPDATE_TIMEOUT bounds one wait."""

    def swarm_part(settings: config.Config) -> tuple[object, ...]:
        return settings.orchestrator, settings.insecure_registries, settings.swarm_update_timeout

    assert swarm_part(config.load({"RUNTIMES": "a"})) == (config.Orchestrator.DOCKER, (), 300)
    env = {
        "RUNTIMES": "a",
        "ORCHESTRATOR": "Swarm",
        "INSECURE_REGISTRIES": "Registry.Internal:5000, 10.0.0.1:5001, plain, [fd00::1]:5000",
        "SWARM_UPDATE_TIMEOUT": "45",
    }
    registries = ("registry.internal:5000", "10.0.0.1:5001", "plain", "[fd00::1]:5000")
    assert swarm_part(config.load(env)) == (config.Orchestrator.SWARM, registries, 45)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORCHESTRATOR", "kubernetes"),
        ("INSECURE_REGISTRIES", "http://r:5000"),
        ("SWARM_UPDATE_TIMEOUT", "0"),
    ],
)
def test_a_bad_swarm_mode_setting_is_refused(name: str, value: str) -> None:
    (line,) = problems({"RUNTIMES": "a", name: value})
    assert line.startswith(f"{name}:")
