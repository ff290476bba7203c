"""Admin tokens: itsdangerous-signed, expiring, verified against every configured key."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import AdminTokenError

_SALT = "receiver.admin-token.v1"
DEFAULT_TTL = 3600


class AdminTokens:
    """Mints with the first key and verifies with any of them, so keys rotate without downtime."""

    def __init__(self, keys: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("at least one admin key is needed")
        # itsdangerous signs with the last key and tries them all (newest first) to verify.
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt=_SALT)
        self._clock = clock

    def mint(self, *, ttl: int = DEFAULT_TTL, subject: str = "admin") -> str:
        """A token for `subject` valid for `ttl` seconds."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        now = int(self._clock())
        return str(self._serializer.dumps({"sub": subject, "iat": now, "exp": now + ttl}))

    def verify(self, token: str) -> str:
        """The token's subject, or AdminTokenError when it is forged, malformed or expired."""
        try:
            claims: Any = self._serializer.loads(token)
        except BadSignature:
            raise AdminTokenError("admin token is not valid") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise AdminTokenError("admin token is not valid")
        if self._clock() >= claims["exp"]:
            raise AdminTokenError("admin token has expired")
        return str(claims.get("sub", "admin"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
