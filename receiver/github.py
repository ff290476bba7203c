"""Verify and interpret GitHub webhook deliveries, without any I/O."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar
from urllib.parse import parse_qs

import msgspec

from . import payloads
from .errors import ReceiverError
from .imageref import ImageRef, is_digest, is_tag

SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
CONTENT_TYPE_HEADER = "content-type"

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_SIGNATURE_SHAPE = re.compile(r"sha256=[0-9a-f]{64}")
_PACKAGE_ACTIONS = ("published", "updated")
_CONTAINER_KINDS = ("container", "docker")
_TEMPLATE_MARKER = "workspace-template-"
_ECHO_LIMIT = 100
# GitHub sends a single field; the cap keeps parse_qs from building a huge dict for junk.
_MAX_FORM_FIELDS = 20

_Object = TypeVar("_Object", bound=msgspec.Struct)


class WebhookError(ReceiverError):
    """A delivery is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# The values below are made once per delivery, so they are msgspec Structs: immutable like
# frozen dataclasses, and five times cheaper to make.


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """A verified, decoded delivery: the event name, its GUID and what the receiver reads of
    the JSON object it carried."""

    event: str
    delivery_id: str
    payload: payloads.Payload


class Trigger(msgspec.Struct, frozen=True, gc=False):
    """Refresh `runtime`: to `digest` when known, or after resolving its tag when `resolve`."""

    runtime: str
    digest: str | None
    resolve: bool


class Interpretation(msgspec.Struct, frozen=True, gc=False):
    """What a delivery asks for: a ping answer, some triggers, or nothing (with a reason)."""

    kind: Literal["ping", "trigger", "ignored"]
    triggers: tuple[Trigger, ...] = ()
    reason: str = ""


def signature_for(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body` signed with `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# HMAC (RFC 2104) keys the hash by hashing the key xor'ed with these pads ahead of the text.
_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))


class _Keyed:
    """HMAC-SHA256 under one key, its two keyed hash states made once: each delivery then
    costs two copies and the hashing, not a key set-up (hmac.new does it per object, and
    hmac.HMAC.copy costs as much again in Python). hashlib's own construction, as in the
    stdlib's hmac module; the tests check it against hmac.new."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def hexdigest(self, body: bytes) -> bytes:
        """HMAC-SHA256 of `body`, lower-case hex, as ASCII bytes."""
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return binascii.hexlify(outer.digest())


class Verifier:
    """Checks `X-Hub-Signature-256` against each configured secret (more than one while a
    secret is being rotated). Each secret's keyed hash is set up once, not per delivery."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if isinstance(secrets, str):
            # A bare string is a Sequence[str] too: every character would become a secret.
            raise TypeError("secrets must be a sequence of strings, not a string")
        # An empty secret signs with a key everybody knows; it is no secret at all.
        self._keyed = tuple(_Keyed(secret.encode("utf-8")) for secret in secrets if secret)

    def __bool__(self) -> bool:
        """Whether any secret is configured."""
        return bool(self._keyed)

    def verify(self, body: bytes, header: str | None) -> None:
        """Return if `header` signs the raw `body` with any secret, else raise WebhookError."""
        if not self._keyed:
            raise WebhookError(503, "no webhook secret is configured")
        if header is None:
            raise WebhookError(401, "missing X-Hub-Signature-256 header")
        given = header.strip()
        # Bytes, because compare_digest refuses str with non-ASCII characters.
        given_bytes = given.encode("utf-8", "replace")
        scheme, given_hex = given_bytes[:7], given_bytes[7:]
        matched = False
        # Every key is tried even after a match or a malformed header, so the time taken
        # says nothing about which key matched or how the header was wrong.
        for keyed in self._keyed:
            matched |= hmac.compare_digest(keyed.hexdigest(body), given_hex)
        if matched and scheme == b"sha256=":
            return
        if _SIGNATURE_SHAPE.fullmatch(given) is None:
            raise WebhookError(401, "malformed X-Hub-Signature-256 header")
        raise WebhookError(401, "X-Hub-Signature-256 does not match")


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Return if `header` signs the raw `body` with any of `secrets`, else raise WebhookError."""
    Verifier(secrets).verify(body, header)


def event_name(headers: Mapping[str, str]) -> str:
    """The delivery's event, from its X-GitHub-Event header ("" when it has none)."""
    return headers.get(EVENT_HEADER, "").strip()


def parse_delivery(
    headers: Mapping[str, str], body: bytes, secrets: Verifier | Sequence[str]
) -> Delivery:
    """Verify and decode one delivery from its (lower-case keyed) headers and raw body."""
    verifier = secrets if isinstance(secrets, Verifier) else Verifier(secrets)
    # The signature is checked over the raw bytes before anything is parsed, so an
    # unsigned flood costs one HMAC per secret and nothing more.
    verifier.verify(body, headers.get(SIGNATURE_HEADER))
    media_type = headers.get(CONTENT_TYPE_HEADER, "")
    if media_type != _JSON:  # what GitHub sends, as it sends it; anything else is normalised
        media_type = media_type.partition(";")[0].strip().lower()
    if media_type not in (_JSON, _FORM):
        raise WebhookError(415, "content type must be application/json or form-urlencoded")
    event = event_name(headers)
    if not event:
        raise WebhookError(400, "missing X-GitHub-Event header")
    payload = _decode(body, event, form=media_type == _FORM)
    return Delivery(event=event, delivery_id=headers.get(DELIVERY_HEADER, ""), payload=payload)


def interpret(
    delivery: Delivery, images: Mapping[str, ImageRef], dispatch_types: Sequence[str]
) -> Interpretation:
    """Decide which watched runtimes (keys of `images`) a delivery asks to refresh."""
    if isinstance(dispatch_types, str):
        # `in` on a bare string would accept any substring of it as a dispatch type.
        raise TypeError("dispatch_types must be a sequence of strings, not a string")
    if delivery.event == "ping":
        return Interpretation(kind="ping")
    payload = delivery.payload
    if isinstance(payload, payloads.PackageEvent) and delivery.event in payloads.PACKAGE_EVENTS:
        return _package(payload, delivery.event, images)
    if isinstance(payload, payloads.DispatchEvent) and delivery.event == payloads.DISPATCH_EVENT:
        return _dispatch(payload, images, dispatch_types)
    return _ignored(f"event {_echo(delivery.event)} not handled")


def _decode(body: bytes, event: str, *, form: bool) -> payloads.Payload:
    """The payload of `body` (raw JSON, or the `payload` field of a form)."""
    try:
        if form:
            document: bytes | str = _form_payload(body.decode("utf-8"))
        else:
            # The decoder checks the JSON but not the UTF-8 of strings it skips: that is
            # checked here (an ASCII body, the usual case, needs no decoding at all).
            document = body if body.isascii() else body.decode("utf-8")
        return payloads.decode(event, document)
    except payloads.PayloadError as exc:
        raise WebhookError(400, str(exc)) from None
    except ValueError:
        # Bad UTF-8, or too many form fields.
        raise WebhookError(400, "body is not valid JSON") from None


def _form_payload(text: str) -> str:
    """The JSON text in a form body's one `payload` field."""
    fields = parse_qs(
        text,
        keep_blank_values=True,
        encoding="utf-8",
        errors="strict",
        max_num_fields=_MAX_FORM_FIELDS,
    )
    values = fields.get("payload", [])
    if len(values) != 1:
        raise WebhookError(400, "form body must carry exactly one payload field")
    return values[0]


def _package(
    payload: payloads.PackageEvent, event: str, images: Mapping[str, ImageRef]
) -> Interpretation:
    """A `package` or `registry_package` delivery: the tagged push of a watched image."""
    if payload.action not in _PACKAGE_ACTIONS:
        return _ignored(f"action {_echo(payload.action)}")
    package = payload.package if event == "package" else payload.registry_package
    if not isinstance(package, payloads.Package) or not _is_container(package):
        return _ignored("not a container package")
    owner = _text(_read(package.owner, payloads.Owner).login)
    name = _text(package.name)
    if not owner or not name:
        return _ignored("package has no owner or name")
    # owner.login, not namespace: namespace is unreliable (octokit's examples put the
    # repository there). GHCR names are lower case while GitHub keeps the account's case.
    repository = f"{owner}/{name}".lower()
    runtimes = [runtime for runtime, ref in images.items() if ref.repository == repository]
    if not runtimes:
        return _ignored(f"package {_echo(repository)} is not watched")
    version = _read(package.package_version, payloads.PackageVersion)
    metadata = _read(version.container_metadata, payloads.ContainerMetadata)
    tag_info = _read(metadata.tag, payloads.Tag)
    tag = _text(tag_info.name)
    if not tag:
        # A multi-arch push sends one delivery per platform manifest, untagged; only
        # the tagged index delivery matters.
        return _ignored("untagged manifest")
    if not is_tag(tag):
        return _ignored(f"tag {_echo(tag)} is not a valid tag")
    # The version is the pushed manifest's digest; tag.digest repeats it in real deliveries.
    digest: str | None = None
    for candidate in (_text(version.version), _text(tag_info.digest)):
        if is_digest(candidate):
            digest = candidate
            break
    triggers = tuple(
        [
            Trigger(runtime, digest, resolve=False)
            if digest and images[runtime].tag == tag
            # Another tag of the package (one push may deliver only one of its tags), or no
            # digest: the watched tag's digest has to be asked of the registry.
            else Trigger(runtime, None, resolve=True)
            for runtime in runtimes
        ]
    )
    return Interpretation(kind="trigger", triggers=triggers)


def _is_container(package: payloads.Package) -> bool:
    """Tell whether a package object describes a container image."""
    if (
        _text(package.package_type).lower() not in _CONTAINER_KINDS
        and _text(package.ecosystem).lower() not in _CONTAINER_KINDS
    ):
        return False
    # octokit's examples mix package_type and ecosystem (an npm package with ecosystem
    # "docker"); the registry holding the package settles it when it is named.
    named = _text(_read(package.registry, payloads.Registry).type).lower()
    return not named or named in _CONTAINER_KINDS


def _dispatch(
    payload: payloads.DispatchEvent,
    images: Mapping[str, ImageRef],
    dispatch_types: Sequence[str],
) -> Interpretation:
    """A `repository_dispatch` delivery: an explicit request naming runtimes, maybe a digest."""
    action = payload.action
    if not isinstance(action, str) or action not in dispatch_types:
        return _ignored(f"dispatch type {_echo(action)} not accepted")
    client = _read(payload.client_payload, payloads.ClientPayload)
    digest = client.digest
    # A digest the sender got wrong is refused rather than ignored: silently resolving
    # the tag instead would hide the sender's mistake.
    if digest is not None and not (isinstance(digest, str) and is_digest(digest)):
        raise WebhookError(400, "client_payload.digest must be sha256: followed by 64 hex digits")
    # Only names that are keys of `images` survive, so a payload can never pick an image.
    names = _dispatch_names(client, payload.repository)
    runtimes = [name for name in dict.fromkeys(names) if name in images]
    if not runtimes:
        return _ignored("no watched runtime named")
    triggers = tuple(Trigger(name, digest, resolve=digest is None) for name in runtimes)
    return Interpretation(kind="trigger", triggers=triggers)


def _dispatch_names(client: payloads.ClientPayload, repository: object) -> list[str]:
    """The runtime names a dispatch asks for, before checking them against the watch list."""
    if isinstance(client.runtime, str):
        return [client.runtime]
    if isinstance(client.runtimes, list):
        return [name for name in client.runtimes if isinstance(name, str)]
    repo = _text(_read(repository, payloads.Repository).name)
    _, marker, runtime_name = repo.rpartition(_TEMPLATE_MARKER)
    return [runtime_name] if marker and runtime_name else []


def _read(value: object, kind: type[_Object]) -> _Object:
    """`value` when it is a `kind` object, else one with every field absent (the payload
    lacks it, or holds another JSON type there)."""
    return value if isinstance(value, kind) else kind()


def _text(value: object) -> str:
    """`value` when it is a string, else "" (a missing or mistyped field)."""
    return value if isinstance(value, str) else ""


def _echo(value: object) -> str:
    """A short, printable rendering of a payload value for a reason string."""
    if not isinstance(value, str):
        return "(missing)" if value is None else f"({type(value).__name__})"
    text = "".join(char if char.isprintable() else "?" for char in value[:_ECHO_LIMIT])
    return text + "..." if len(value) > _ECHO_LIMIT else text


def _ignored(reason: str) -> Interpretation:
    """An Interpretation that asks for nothing, with the reason why."""
    return Interpretation(kind="ignored", reason=reason)
