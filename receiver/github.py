"""Verify and interpret GitHub webhook deliveries, without any I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qs

from .errors import ReceiverError
from .imageref import ImageRef, is_digest, is_tag

SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
CONTENT_TYPE_HEADER = "content-type"

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_SIGNATURE_SHAPE = re.compile(r"sha256=[0-9a-f]{64}")
_PACKAGE_EVENTS = ("package", "registry_package")
_PACKAGE_ACTIONS = ("published", "updated")
_CONTAINER_KINDS = ("container", "docker")
_TEMPLATE_MARKER = "workspace-template-"
_ECHO_LIMIT = 100
# GitHub sends a single field; the cap keeps parse_qs from building a huge dict for junk.
_MAX_FORM_FIELDS = 20


class WebhookError(ReceiverError):
    """A delivery is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    """A verified, decoded delivery: the event name, its GUID and the JSON object it carried."""

    event: str
    delivery_id: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Trigger:
    """Refresh `runtime`: to `digest` when known, or after resolving its tag when `resolve`."""

    runtime: str
    digest: str | None
    resolve: bool


@dataclass(frozen=True)
class Interpretation:
    """What a delivery asks for: a ping answer, some triggers, or nothing (with a reason)."""

    kind: Literal["ping", "trigger", "ignored"]
    triggers: tuple[Trigger, ...] = ()
    reason: str = ""


def signature_for(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body` signed with `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Return if `header` signs the raw `body` with any of `secrets`, else raise WebhookError."""
    if isinstance(secrets, str):
        # A bare string is a Sequence[str] too: every character would become a secret.
        raise TypeError("secrets must be a sequence of strings, not a string")
    # An empty secret signs with a key everybody knows; it is no secret at all.
    keys = [secret for secret in secrets if secret]
    if not keys:
        raise WebhookError(503, "no webhook secret is configured")
    if header is None:
        raise WebhookError(401, "missing X-Hub-Signature-256 header")
    given = header.strip()
    # Bytes, because compare_digest refuses str with non-ASCII characters.
    given_bytes = given.encode("utf-8", "replace")
    matched = False
    # Every key is tried even after a match or a malformed header, so the time taken
    # says nothing about which key matched or how the header was wrong.
    for key in keys:
        expected = signature_for(body, key).encode("ascii")
        matched |= hmac.compare_digest(expected, given_bytes)
    if matched:
        return
    if _SIGNATURE_SHAPE.fullmatch(given) is None:
        raise WebhookError(401, "malformed X-Hub-Signature-256 header")
    raise WebhookError(401, "X-Hub-Signature-256 does not match")


def parse_delivery(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> Delivery:
    """Verify and decode one delivery from its (lower-case keyed) headers and raw body."""
    # The signature is checked over the raw bytes before anything is parsed, so an
    # unsigned flood costs one HMAC per secret and nothing more.
    verify_signature(body, headers.get(SIGNATURE_HEADER), secrets)
    media_type = headers.get(CONTENT_TYPE_HEADER, "").partition(";")[0].strip().lower()
    if media_type not in (_JSON, _FORM):
        raise WebhookError(415, "content type must be application/json or form-urlencoded")
    event = headers.get(EVENT_HEADER, "").strip()
    if not event:
        raise WebhookError(400, "missing X-GitHub-Event header")
    payload = _decode(body, form=media_type == _FORM)
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
    if delivery.event in _PACKAGE_EVENTS:
        return _package(delivery.payload, delivery.event, images)
    if delivery.event == "repository_dispatch":
        return _dispatch(delivery.payload, images, dispatch_types)
    return _ignored(f"event {_echo(delivery.event)} not handled")


def _decode(body: bytes, *, form: bool) -> dict[str, Any]:
    """The JSON object in `body` (raw JSON, or the `payload` field of a form)."""
    try:
        text = body.decode("utf-8")
        if form:
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
            text = values[0]
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and too many form fields; RecursionError
        # is how the json module gives up on absurdly deep nesting.
        raise WebhookError(400, "body is not valid JSON") from None
    if not isinstance(document, dict):
        raise WebhookError(400, "payload must be a JSON object")
    return document


def _reject_constant(name: str) -> NoReturn:
    """Refuse NaN and Infinity, which Python accepts but JSON does not have."""
    raise ValueError(f"{name} is not JSON")


def _package(
    payload: Mapping[str, Any], event: str, images: Mapping[str, ImageRef]
) -> Interpretation:
    """A `package` or `registry_package` delivery: the tagged push of a watched image."""
    action = payload.get("action")
    if action not in _PACKAGE_ACTIONS:
        return _ignored(f"action {_echo(action)}")
    package = _field(payload, event)
    if not _is_container(package):
        return _ignored("not a container package")
    owner, name = _text(package, "owner", "login"), _text(package, "name")
    if not owner or not name:
        return _ignored("package has no owner or name")
    # owner.login, not namespace: namespace is unreliable (octokit's examples put the
    # repository there). GHCR names are lower case while GitHub keeps the account's case.
    repository = f"{owner}/{name}".lower()
    runtimes = [runtime for runtime, ref in images.items() if ref.repository == repository]
    if not runtimes:
        return _ignored(f"package {_echo(repository)} is not watched")
    version = _field(package, "package_version")
    tag_info = _field(version, "container_metadata", "tag")
    tag = _text(tag_info, "name")
    if not tag:
        # A multi-arch push sends one delivery per platform manifest, untagged; only
        # the tagged index delivery matters.
        return _ignored("untagged manifest")
    if not is_tag(tag):
        return _ignored(f"tag {_echo(tag)} is not a valid tag")
    # The version is the pushed manifest's digest; tag.digest repeats it in real deliveries.
    candidates = (_text(version, "version"), _text(tag_info, "digest"))
    digest = next((value for value in candidates if is_digest(value)), None)
    triggers = tuple(
        Trigger(runtime, digest, resolve=False)
        if digest and images[runtime].tag == tag
        # Another tag of the package (one push may deliver only one of its tags), or no
        # digest: the watched tag's digest has to be asked of the registry.
        else Trigger(runtime, None, resolve=True)
        for runtime in runtimes
    )
    return Interpretation(kind="trigger", triggers=triggers)


def _is_container(package: object) -> bool:
    """Tell whether a package object describes a container image."""
    kinds = {_text(package, "package_type").lower(), _text(package, "ecosystem").lower()}
    if not kinds.intersection(_CONTAINER_KINDS):
        return False
    # octokit's examples mix package_type and ecosystem (an npm package with ecosystem
    # "docker"); the registry holding the package settles it when it is named.
    registry = _text(package, "registry", "type").lower()
    return not registry or registry in _CONTAINER_KINDS


def _dispatch(
    payload: Mapping[str, Any], images: Mapping[str, ImageRef], dispatch_types: Sequence[str]
) -> Interpretation:
    """A `repository_dispatch` delivery: an explicit request naming runtimes, maybe a digest."""
    action = payload.get("action")
    if not isinstance(action, str) or action not in dispatch_types:
        return _ignored(f"dispatch type {_echo(action)} not accepted")
    digest = _field(payload, "client_payload", "digest")
    # A digest the sender got wrong is refused rather than ignored: silently resolving
    # the tag instead would hide the sender's mistake.
    if digest is not None and not (isinstance(digest, str) and is_digest(digest)):
        raise WebhookError(400, "client_payload.digest must be sha256: followed by 64 hex digits")
    # Only names that are keys of `images` survive, so a payload can never pick an image.
    runtimes = [name for name in dict.fromkeys(_dispatch_names(payload)) if name in images]
    if not runtimes:
        return _ignored("no watched runtime named")
    triggers = tuple(Trigger(name, digest, resolve=digest is None) for name in runtimes)
    return Interpretation(kind="trigger", triggers=triggers)


def _dispatch_names(payload: Mapping[str, Any]) -> list[str]:
    """The runtime names a dispatch asks for, before checking them against the watch list."""
    client_payload = _field(payload, "client_payload")
    runtime = _field(client_payload, "runtime")
    if isinstance(runtime, str):
        return [runtime]
    runtimes = _field(client_payload, "runtimes")
    if isinstance(runtimes, list):
        return [name for name in runtimes if isinstance(name, str)]
    _, marker, runtime_name = _text(payload, "repository", "name").rpartition(_TEMPLATE_MARKER)
    return [runtime_name] if marker and runtime_name else []


def _field(value: object, *path: str) -> object:
    """The value at `path` inside nested JSON objects, or None where one is missing."""
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: object, *path: str) -> str:
    """The string at `path`, or "" when it is missing or not a string."""
    found = _field(value, *path)
    return found if isinstance(found, str) else ""


def _echo(value: object) -> str:
    """A short, printable rendering of a payload value for a reason string."""
    if not isinstance(value, str):
        return "(missing)" if value is None else f"({type(value).__name__})"
    text = "".join(char if char.isprintable() else "?" for char in value[:_ECHO_LIMIT])
    return text + "..." if len(value) > _ECHO_LIMIT else text


def _ignored(reason: str) -> Interpretation:
    """An Interpretation that asks for nothing, with the reason why."""
    return Interpretation(kind="ignored", reason=reason)
