"""Admin tokens: signed, expiring, verified against every key for rotation."""

from __future__ import annotations

import hmac

import pytest

from receiver import github
from receiver.admin_auth import AdminTokens, bearer_token
from receiver.errors import AdminTokenError


class Now:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_mint_then_verify() -> None:
    """A fresh token verifies and names its subject."""
    tokens = AdminTokens(["k1"])
    assert tokens.verify(tokens.mint(subject="ci")) == "ci"


def test_token_expires() -> None:
    """A token is refused once its ttl has passed, and not a second before."""
    now = Now()
    tokens = AdminTokens(["k1"], clock=now)
    token = tokens.mint(ttl=60)
    now.t += 59
    assert tokens.verify(token) == "admin"
    now.t += 1
    with pytest.raises(AdminTokenError, match="expired"):
        tokens.verify(token)


def test_rotation_old_tokens_verify_new_ones_use_the_first_key() -> None:
    """Tokens signed with an older key still verify; new ones are signed with the first key."""
    old_token = AdminTokens(["old"]).mint()
    rotated = AdminTokens(["new", "old"])
    assert rotated.verify(old_token) == "admin"
    assert AdminTokens(["new"]).verify(rotated.mint()) == "admin"
    with pytest.raises(AdminTokenError):
        AdminTokens(["old"]).verify(rotated.mint())


def test_foreign_key_and_tampering_are_refused() -> None:
    """A token from another key, or with a changed payload or signature, is refused."""
    token = AdminTokens(["k1"]).mint()
    with pytest.raises(AdminTokenError):
        AdminTokens(["k2"]).verify(token)
    payload, _, signature = token.rpartition(".")
    for forged in (payload + "x." + signature, payload + "." + signature[::-1], "", "garbage"):
        with pytest.raises(AdminTokenError):
            AdminTokens(["k1"]).verify(forged)


def test_no_keys_and_bad_ttl_are_errors() -> None:
    """Tokens need a key; a non-positive ttl is refused."""
    with pytest.raises(ValueError, match="admin key"):
        AdminTokens([])
    with pytest.raises(ValueError, match="ttl"):
        AdminTokens(["k"]).mint(ttl=0)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    """Only `Bearer <token>` yields a token."""
    assert bearer_token(header) == token


def test_signatures_and_tokens_are_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both the webhook HMAC and admin tokens go through hmac.compare_digest, every
    configured secret tried, even for a malformed or matching header."""
    calls: list[int] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    body = b"{}"
    github.verify_signature(body, github.signature_for(body, "one"), ["one", "two", "three"])
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(github.WebhookError):
        github.verify_signature(body, "sha256=nothex", ["one", "two"])
    assert len(calls) == 2
    calls.clear()
    tokens = AdminTokens(["k1", "k2"])
    tokens.verify(tokens.mint())
    assert calls  # itsdangerous checks signatures with hmac.compare_digest
