"""A GHCR-like registry for tests: Debian's ``docker-registry`` behind a token service.

The registry (distribution 2.8) runs with ``auth.token``: without a bearer token it
answers 401 with ``Bearer realm=…,service=…,scope=repository:<name>:pull``.  The token
service is a small HTTP server in this process; ``GET <realm>?service=…&scope=…`` with
optional HTTP Basic credentials answers ``{"token": …}``, an ES256 JWT whose header
carries the signing certificate (``x5c``) that the registry trusts as its
``rootcertbundle``.  That is the flow Docker and the receiver go through against GHCR.

Grants: a known user with the right password gets ``pull`` and ``push`` on every
repository; anonymous requests get ``pull`` on public repositories only; wrong
credentials are refused with 401 and a JSON error body.  Repositories that are not
granted are left out of the token's ``access`` claim (a partial grant is not an error),
so the registry then refuses the token for them.  Entries of `public` name a repository
exactly, or, ending in ``/``, every repository under that prefix (``"public/"``).

Tokens last `expires_in` seconds, or 60 when it is None; then the response has no
``expires_in`` field, as GHCR's has none.  Note that distribution accepts a token until
60 s *after* its ``exp`` (clock-skew leeway): to get a token the registry refuses as
stale without waiting, set `clock_offset` (e.g. -3600) so tokens are issued in the past.

Every token request is logged (`token_requests()`); `fail_with` makes the token service
answer that HTTP status to every request, to test outages.

This module must not import pytest: scripts outside the test suite use it too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hmac
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.support.daemons import (
    Closing,
    LoopbackServer,
    StackUnavailable,
    registry_config,
    serve_registry,
    stop_process,
)

__all__ = [
    "DEFAULT_TOKEN_SECONDS",
    "TokenRegistry",
    "TokenRequest",
    "decode_jwt",
]

# The receiver's registry client is httpx, which says so in its User-Agent.
RECEIVER_AGENT = "python-httpx/"
DEFAULT_TOKEN_SECONDS = 60  # the token spec's default lifetime when expires_in is absent
USER_ACTIONS: tuple[str, ...] = ("pull", "push")
ANONYMOUS_ACTIONS: tuple[str, ...] = ("pull",)


@dataclass(frozen=True)
class TokenRequest:
    """One request the token service answered.

    `user` is the user name offered (Basic auth with GET, the form with POST; None when
    anonymous), whether or not the password was right; `scopes` are the requested scopes
    in order; `granted` the ``repository:<name>:<actions>`` entries the issued token
    carries (empty if none); `method` how it was asked (POST: an OAuth2 password grant);
    `agent` the asker's User-Agent.
    """

    user: str | None
    scopes: tuple[str, ...]
    service: str | None
    account: str | None
    status: int
    granted: tuple[str, ...] = ()
    method: str = "GET"
    agent: str = field(default="", compare=False)

    @property
    def from_engine(self) -> bool:
        """Whether the Docker engine asked (for a pull or push), not the receiver itself."""
        return not self.agent.startswith(RECEIVER_AGENT)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a JWT, unverified (for assertions)."""
    header, claims, _signature = token.split(".")
    return json.loads(_b64url_decode(header)), json.loads(_b64url_decode(claims))


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension allowing just `allowed` (x509.KeyUsage wants all nine named)."""
    return x509.KeyUsage(**{usage: usage in allowed for usage in _KEY_USAGES})


class _Signer:
    """An EC P-256 key with a self-signed certificate: the registry's trusted root."""

    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage("digital_signature", "key_cert_sign"), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        # x5c holds standard (not URL-safe) base64 of the DER certificate, RFC 7515 4.1.6.
        self.x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact ES256 JWS of `claims` with the certificate in its header."""
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(_json_bytes(header))}.{_b64url(_json_bytes(claims))}"
        der = self.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        # JWS wants the raw r || s, each 32 bytes big-endian, not the DER sequence.
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    """The token service's requests, answered by the TokenRegistry that runs it."""

    # HTTP/1.0: one request per connection, so no idle keep-alive holds up shutdown.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        owner = self._owner()
        user, valid = owner._authenticate(self.headers.get("Authorization"))
        self._send(*owner._answer(url.path, query, user, valid, self._asker("GET")))

    def do_POST(self) -> None:
        """The OAuth2 password grant containerd's resolver sends first (a form with
        grant_type, username, password, scope, service), as distribution's token
        servers answer it."""
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        owner = self._owner()
        url = urllib.parse.urlsplit(self.path)
        if form.get("grant_type", [""])[0] != "password":
            self._send(400, _error_body("UNSUPPORTED", "grant_type must be password"), {})
            return
        name, password = form.get("username", [""])[0], form.get("password", [""])[0]
        user, valid = owner._check(name, password) if name else (None, True)
        self._send(*owner._answer(url.path, form, user, valid, self._asker("POST")))

    def _asker(self, method: str) -> tuple[str, str]:
        return method, self.headers.get("User-Agent", "")

    def _send(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        data = _json_bytes(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        self._owner()._log_line(format % args)

    def _owner(self) -> TokenRegistry:
        owner = getattr(self.server, "owner", None)
        assert isinstance(owner, TokenRegistry)
        return owner


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _registry_answers(address: str) -> bool:
    # A token-auth registry answers /v2/ with 401 until a client shows a token: it is up.
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=1) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code == 401
    except OSError:
        return False


class TokenRegistry(Closing):
    """A token-auth registry plus its token service; use as a context manager."""

    registry: str  # "127.0.0.1:PORT", the registry's host for image references
    realm: str  # the token service's URL, as the registry's challenge names it
    service: str  # the `service` of the challenge and the tokens' audience
    issuer: str  # the tokens' `iss`, which the registry trusts
    users: dict[str, str]  # user name -> password
    public: tuple[str, ...]  # repositories (or "prefix/") anonymous clients may pull
    expires_in: int | None  # token lifetime to report; None: omit it (60 s)
    fail_with: int | None  # when set, the token service answers this status to everyone
    clock_offset: float  # seconds added to the clock tokens are issued by

    def __init__(
        self,
        *,
        users: Mapping[str, str],
        public: Iterable[str] = (),
        expires_in: int | None = None,
    ) -> None:
        self.service = "receiver-test-registry"
        self.issuer = "receiver-test-token-service"
        self.users = dict(users)
        self.public = tuple(public)
        self.expires_in = expires_in
        self.fail_with = None
        self.clock_offset = 0.0
        self._initial_expires_in = expires_in
        self._requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._signer: _Signer | None = None
        self._tmp: Path | None = None
        self._server: LoopbackServer | None = None
        self._registry_proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        users: Mapping[str, str],
        public: Iterable[str] = (),
        expires_in: int | None = None,
    ) -> TokenRegistry:
        """Start the token service and the registry; `workdir` is the parent of the temp dir."""
        started = cls(users=users, public=public, expires_in=expires_in)
        try:
            started._start(workdir)
        except BaseException:
            started.close()
            raise
        return started

    def _start(self, workdir: Path | None) -> None:
        if shutil.which("docker-registry") is None:
            raise StackUnavailable("no docker-registry on PATH (install docker-registry)")
        parent = workdir if workdir is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp = Path(tempfile.mkdtemp(prefix="rtr-", dir=parent))
        self._signer = _Signer(self.issuer)
        bundle = tmp / "token-signer.pem"
        bundle.write_bytes(self._signer.cert_pem)

        self._server = LoopbackServer(_TokenHandler, self)
        self.realm = f"http://{self._server.address}/token"

        token = {
            "realm": self.realm,
            "service": self.service,
            "issuer": self.issuer,
            "rootcertbundle": str(bundle),
        }

        def settings(address: str) -> dict[str, Any]:
            return registry_config(address, tmp / "registry", auth={"token": token})

        self.registry, self._registry_proc = serve_registry(
            tmp, "registry", settings, _registry_answers
        )

    def close(self) -> None:
        """Stop the registry and the token service and delete the temp dir."""
        if self._closed:
            return
        self._closed = True
        if self._registry_proc is not None:
            stop_process(self._registry_proc)
            self._registry_proc = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- for assertions ----------------------------------------------------------------

    @property
    def log_path(self) -> Path | None:
        """The registry's log file (the token service's lines go to token-service.log)."""
        return self._tmp / "registry.log" if self._tmp is not None else None

    def token_requests(self) -> list[TokenRequest]:
        """Every token request answered since the start or the last reset, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset_log(self) -> None:
        """Forget the token requests logged so far."""
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Forget the log and undo `fail_with`, `clock_offset` and `expires_in` changes."""
        self.reset_log()
        self.fail_with = None
        self.clock_offset = 0.0
        self.expires_in = self._initial_expires_in

    def is_public(self, repository: str) -> bool:
        """Whether anonymous clients may pull `repository`."""
        return any(
            repository.startswith(entry) if entry.endswith("/") else repository == entry
            for entry in self.public
        )

    # -- the token service -------------------------------------------------------------

    def _answer(
        self,
        path: str,
        params: Mapping[str, list[str]],
        user: str | None,
        valid: bool,
        asker: tuple[str, str],
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A token request's answer; `params` are its query (GET) or form (POST) fields,
        `user` the client offered, `valid` whether its credentials hold."""
        if path != "/token":
            return 404, _error_body("NOT_FOUND", f"no such endpoint {path}"), {}
        # The spec repeats `scope` per resource; OAuth2-style clients join them with spaces.
        scopes = tuple(part for value in params.get("scope", ()) for part in value.split())
        service = params.get("service", [None])[0]
        account = params.get("account", [None])[0]

        def record(status: int, granted: tuple[str, ...] = ()) -> None:
            entry = TokenRequest(user, scopes, service, account, status, granted, *asker)
            with self._lock:
                self._requests.append(entry)

        fail_with = self.fail_with
        if fail_with is not None:
            record(fail_with)
            return fail_with, _error_body("UNAVAILABLE", "token service failing on purpose"), {}
        if not valid:
            record(401)
            refused = _error_body("UNAUTHORIZED", "authentication required: bad credentials")
            return 401, refused, {"WWW-Authenticate": f'Basic realm="{self.service}"'}
        if service != self.service:
            record(400)
            return 400, _error_body("DENIED", f"unknown service {service!r}"), {}

        access = self._grant(user, scopes)
        now = int(time.time() + self.clock_offset)
        lifetime = self.expires_in if self.expires_in is not None else DEFAULT_TOKEN_SECONDS
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        assert self._signer is not None
        token = self._signer.sign(claims)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "issued_at": issued.isoformat().replace("+00:00", "Z"),
        }
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        granted = tuple(f"repository:{a['name']}:{','.join(a['actions'])}" for a in access)
        record(200, granted)
        return 200, body, {}

    def _authenticate(self, authorization: str | None) -> tuple[str | None, bool]:
        """The offered user name (None if anonymous) and whether the credentials hold."""
        if not authorization:
            return None, True
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        user, colon, password = decoded.partition(":")
        if not colon:
            return user or None, False
        return self._check(user, password)

    def _check(self, user: str, password: str) -> tuple[str, bool]:
        """The user, and whether `password` is theirs."""
        expected = self.users.get(user)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        return user, ok

    def _grant(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        """The `access` claim: per repository, the requested actions this client may do."""
        granted: dict[str, list[str]] = {}
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            if user is not None:
                allowed = USER_ACTIONS
            elif self.is_public(name):
                allowed = ANONYMOUS_ACTIONS
            else:
                continue
            requested = actions.split(",")
            actions_for = granted.setdefault(name, [])
            for action in allowed:
                if (action in requested or "*" in requested) and action not in actions_for:
                    actions_for.append(action)
        return [
            {"type": "repository", "name": name, "actions": actions}
            for name, actions in granted.items()
            if actions
        ]

    def _log_line(self, line: str) -> None:
        if self._tmp is None:
            return
        with contextlib.suppress(OSError), (self._tmp / "token-service.log").open("a") as out:
            out.write(f"{time.strftime('%H:%M:%S')} {line}\n")
