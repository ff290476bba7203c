"""What the receiver reads of GitHub's webhook payloads, as typed values decoded from the body.

A delivery's body is decoded straight into these (msgspec): the dozen fields the receiver
reads become attributes; everything else, most of an ~11 KB `package` delivery, is only
checked to be well-formed JSON and never built into Python objects. That is most of what
a delivery costs (stdlib `json.loads` of the whole body took 45 of its 70 µs).

Decoding is as lenient about shapes as the interpretation is (github.py): a field may hold
any JSON value, and an object where a scalar is expected (or the reverse) decodes as that
value, for `interpret` to read as absent. So a mistyped field makes a delivery ignored,
never refused; only a body that is not one JSON object is malformed.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

# Any JSON value but an object: where an object is expected, one of these reads as absent.
NotObject = str | int | float | bool | list[Any] | None


class _Value(msgspec.Struct, frozen=True, gc=False):
    """A JSON object of which only the declared fields are read; the rest is skipped."""


class Owner(_Value, frozen=True):
    login: Any = None


class Tag(_Value, frozen=True):
    name: Any = None
    digest: Any = None


class ContainerMetadata(_Value, frozen=True):
    tag: Tag | NotObject = None


class PackageVersion(_Value, frozen=True):
    version: Any = None
    container_metadata: ContainerMetadata | NotObject = None


class Registry(_Value, frozen=True):
    type: Any = None


class Package(_Value, frozen=True):
    name: Any = None
    package_type: Any = None
    ecosystem: Any = None
    owner: Owner | NotObject = None
    package_version: PackageVersion | NotObject = None
    registry: Registry | NotObject = None


class PackageEvent(_Value, frozen=True):
    """`package` and `registry_package` deliveries (each carries the package under its name)."""

    action: Any = None
    package: Package | NotObject = None
    registry_package: Package | NotObject = None


class ClientPayload(_Value, frozen=True):
    runtime: Any = None
    runtimes: Any = None
    digest: Any = None


class Repository(_Value, frozen=True):
    name: Any = None


class DispatchEvent(_Value, frozen=True):
    """`repository_dispatch` deliveries."""

    action: Any = None
    client_payload: ClientPayload | NotObject = None
    repository: Repository | NotObject = None


class OtherEvent(_Value, frozen=True):
    """Every other event (`ping` among them): nothing in it is read."""


Payload = PackageEvent | DispatchEvent | OtherEvent

PACKAGE_EVENTS: Final = ("package", "registry_package")
DISPATCH_EVENT: Final = "repository_dispatch"

_PACKAGE = msgspec.json.Decoder(PackageEvent)
_DISPATCH = msgspec.json.Decoder(DispatchEvent)
_OTHER = msgspec.json.Decoder(OtherEvent)


class PayloadError(ValueError):
    """The body is not one JSON object (or holds a number no float can hold)."""


def decode(event: str, document: bytes | str) -> Payload:
    """The payload of an `event` delivery from its JSON text (UTF-8 already checked)."""
    if event in PACKAGE_EVENTS:
        decoder: msgspec.json.Decoder[Any] = _PACKAGE
    elif event == DISPATCH_EVENT:
        decoder = _DISPATCH
    else:
        decoder = _OTHER
    try:
        payload: Payload = decoder.decode(document)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"payload must be a JSON object ({exc})") from None
    except (msgspec.DecodeError, RecursionError):
        # RecursionError is how the decoder gives up on absurdly deep nesting.
        raise PayloadError("body is not valid JSON") from None
    return payload
