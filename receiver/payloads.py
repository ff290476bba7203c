"""What the receiver reads of GitHub's webhook payloads, as typed values decoded from the body.

A delivery's body is decoded straight into these (msgspec): the dozen fields the receiver
reads become attributes; everything else, most of an ~11 KB `package` delivery, is only
checked to be well-formed JSON and never built into Python objects. That is most of what
a delivery costs (stdlib `json.loads` of the whole body took 45 of its 70 µs).

Decoding is as lenient about shapes as the interpretation is (github.py): a field may hold
any JSON value, and an object where a scalar is expected (or the reverse) decodes as that
value, for `interpret` to read as absent. So a mistyped field makes a delivery ignored,
never refused; only a body that is not one JSON object is malformed. JSON that msgspec
refuses but the standard library reads (a lone surrogate escape such as `"\\ud800"` in
user-written text, a number beyond float range) is read again by `json` and converted, so
no valid delivery is refused for it: GitHub does not redeliver a refused one.
"""

from __future__ import annotations

import json
from typing import Final, NoReturn, TypeVar

import msgspec

# Any JSON value but an object: where an object is expected, one of these reads as absent.
NotObject = str | int | float | bool | list[object] | None


class _Value(msgspec.Struct, frozen=True, gc=False):
    """A JSON object of which only the declared fields are read; the rest is skipped."""


class Owner(_Value, frozen=True):
    login: object = None


class Tag(_Value, frozen=True):
    name: object = None
    digest: object = None


class ContainerMetadata(_Value, frozen=True):
    tag: Tag | NotObject = None


class PackageVersion(_Value, frozen=True):
    version: object = None
    container_metadata: ContainerMetadata | NotObject = None


class Registry(_Value, frozen=True):
    type: object = None


class Package(_Value, frozen=True):
    name: object = None
    package_type: object = None
    ecosystem: object = None
    owner: Owner | NotObject = None
    package_version: PackageVersion | NotObject = None
    registry: Registry | NotObject = None


class PackageEvent(_Value, frozen=True):
    """`package` and `registry_package` deliveries (each carries the package under its name)."""

    action: object = None
    package: Package | NotObject = None
    registry_package: Package | NotObject = None


class ClientPayload(_Value, frozen=True):
    runtime: object = None
    runtimes: object = None
    digest: object = None


class Repository(_Value, frozen=True):
    name: object = None


class DispatchEvent(_Value, frozen=True):
    """`repository_dispatch` deliveries."""

    action: object = None
    client_payload: ClientPayload | NotObject = None
    repository: Repository | NotObject = None


class OtherEvent(_Value, frozen=True):
    """Every other event (`ping` among them): nothing in it is read."""


Payload = PackageEvent | DispatchEvent | OtherEvent

PACKAGE_EVENTS: Final = ("package", "registry_package")
DISPATCH_EVENT: Final = "repository_dispatch"

_PACKAGE: Final = msgspec.json.Decoder(PackageEvent)
_DISPATCH: Final = msgspec.json.Decoder(DispatchEvent)
_OTHER: Final = msgspec.json.Decoder(OtherEvent)

_P = TypeVar("_P", PackageEvent, DispatchEvent, OtherEvent)


class PayloadError(ValueError):
    """The body is not one JSON object."""


def decode(event: str, document: bytes | str) -> Payload:
    """The payload of an `event` delivery from its JSON text (UTF-8 already checked)."""
    if event in PACKAGE_EVENTS:
        return _decoded(_PACKAGE, PackageEvent, document)
    if event == DISPATCH_EVENT:
        return _decoded(_DISPATCH, DispatchEvent, document)
    return _decoded(_OTHER, OtherEvent, document)


def _decoded(decoder: msgspec.json.Decoder[_P], kind: type[_P], document: bytes | str) -> _P:
    try:
        return decoder.decode(document)
    except (msgspec.DecodeError, RecursionError):
        # Its ValidationError (a number beyond float range, a body that is no object) is a
        # DecodeError; RecursionError is how it gives up on absurdly deep nesting.
        return _read_by_stdlib(kind, document)


def _read_by_stdlib(kind: type[_P], document: bytes | str) -> _P:
    """What msgspec refused, read by `json` (strictly: no NaN or Infinity) and converted."""
    try:
        # From text, so that a byte-order mark is refused as msgspec refuses it.
        text = document if isinstance(document, str) else document.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise PayloadError("body is not valid JSON") from None
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"payload must be a JSON object ({exc})") from None


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")
