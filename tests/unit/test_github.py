"""GitHub deliveries: signatures over raw bytes, strict decoding, and safe interpretation."""

from __future__ import annotations

import contextlib
import copy
import hmac
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from receiver import payloads
from receiver.errors import ReceiverError
from receiver.github import (
    Delivery,
    Interpretation,
    Trigger,
    Verifier,
    WebhookError,
    interpret,
    parse_delivery,
    signature_for,
    verify_signature,
)
from receiver.imageref import ImageRef
from receiver.payloads import decode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"
SECRET = "s3cret"
DIGEST = "sha256:" + "ab" * 32
MULTIARCH = "package.published.container.multiarch-index.json"
MULTIARCH_DIGEST = "sha256:89160c587d0c36bf54090497a465445c14980ba48efbcf3b0d03c49b76f3feb8"
# Reasons echo at most ~100 characters of payload text, plus their own words.
REASON_LIMIT = 150
DISPATCH_TYPES = ("template-image-published", "on-demand-test")
TEMPLATE_IMAGES = {
    "claude-code": ImageRef("ghcr.io", "molecule-ai/workspace-template-claude-code", "latest"),
    "codex": ImageRef("ghcr.io", "molecule-ai/workspace-template-codex", "latest"),
}


def load(name: str) -> dict[str, Any]:
    """One fixture payload, freshly parsed so a test may edit it."""
    document: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return document


def headers_for(
    body: bytes,
    *,
    event: str | None = "ping",
    secret: str = SECRET,
    content_type: str | None = "application/json",
    delivery_id: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
) -> dict[str, str]:
    """Lower-case headers as GitHub would send them for `body`, signed with `secret`."""
    headers = {"x-hub-signature-256": signature_for(body, secret)}
    if event is not None:
        headers["x-github-event"] = event
    if content_type is not None:
        headers["content-type"] = content_type
    if delivery_id is not None:
        headers["x-github-delivery"] = delivery_id
    return headers


def delivery(event: str, payload: Mapping[str, Any]) -> Delivery:
    """A delivery as parse_delivery would return it for this JSON payload."""
    return Delivery(event=event, delivery_id="d-1", payload=decode(event, json.dumps(payload)))


def status_of(call: Callable[[], object]) -> int:
    """The status of the WebhookError that `call` raises."""
    with pytest.raises(WebhookError) as caught:
        call()
    return caught.value.status


def www(tag: str = "0e2a89b", registry: str = "ghcr.io") -> dict[str, ImageRef]:
    """An images map watching the real capture's package under `tag`."""
    return {"www": ImageRef(registry, "theryangeary/www", tag)}


# Signatures


def test_github_known_answer() -> None:
    """GitHub's documented test vector signs to the documented header value."""
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_for(b"Hello, World!", "It's a Secret to Everybody") == expected
    verify_signature(b"Hello, World!", expected, ["It's a Secret to Everybody"])


def test_octokit_known_answer() -> None:
    """octokit's test vector signs to its documented header value."""
    expected = "sha256=4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3"
    assert signature_for(b'{"foo":"bar"}', "mysecret") == expected
    verify_signature(b'{"foo":"bar"}', expected, ["mysecret"])


def test_no_secret_is_503() -> None:
    """Without a configured secret every delivery is refused as unavailable, signed or not."""
    body = b"{}"
    assert status_of(lambda: verify_signature(body, signature_for(body, ""), [])) == 503
    assert status_of(lambda: verify_signature(body, None, [])) == 503


def test_empty_secrets_count_as_none() -> None:
    """An empty secret is a key everybody knows, so it never verifies anything."""
    body = b"{}"
    assert status_of(lambda: verify_signature(body, signature_for(body, ""), ["", ""])) == 503


def test_missing_header_is_401() -> None:
    """A delivery without X-Hub-Signature-256 is unauthorised."""
    with pytest.raises(WebhookError) as caught:
        verify_signature(b"{}", None, [SECRET])
    assert caught.value.status == 401
    assert isinstance(caught.value, ReceiverError)


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        "sha256=",
        "sha256=zz",
        "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17x",
        "sha256=\u00e9" * 3,
    ],
)
def test_malformed_header_is_401(header: str) -> None:
    """Anything but `sha256=` and the exact lower-case hex is refused, never crashing."""
    body, secret = b"Hello, World!", "It's a Secret to Everybody"
    assert status_of(lambda: verify_signature(body, header, [secret])) == 401


def test_wrong_secret_is_401() -> None:
    """A signature made with another secret is refused."""
    body = b"{}"
    assert status_of(lambda: verify_signature(body, signature_for(body, "other"), [SECRET])) == 401


def test_tampered_body_is_401() -> None:
    """A signature covers the exact bytes: one changed byte fails it."""
    header = signature_for(b'{"a":1}', SECRET)
    assert status_of(lambda: verify_signature(b'{"a":2}', header, [SECRET])) == 401


def test_surrounding_whitespace_is_tolerated() -> None:
    """Whitespace around the header value (as some servers leave it) does not matter."""
    body = b"{}"
    verify_signature(body, f"  {signature_for(body, SECRET)} ", [SECRET])


@pytest.mark.parametrize("signing", ["old", "new"])
def test_rotated_secrets(signing: str) -> None:
    """During rotation a signature made with any configured secret verifies."""
    body = b'{"zen":"rotate"}'
    verify_signature(body, signature_for(body, signing), ["old", "new"])


@pytest.mark.parametrize(
    "header",
    [None, "sha256=zz", signature_for(b"{}", "k1"), signature_for(b"{}", "k3")],
    ids=["missing", "malformed", "first-matches", "last-matches"],
)
def test_every_secret_is_compared(header: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A present header is compared against every secret, with no early exit on match or shape."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    with contextlib.suppress(WebhookError):
        verify_signature(b"{}", header, ["k1", "k2", "k3"])
    assert len(calls) == (0 if header is None else 3)


def test_a_string_is_not_a_list_of_secrets() -> None:
    """Passing one secret as a bare string is a programming error, not a list of characters."""
    with pytest.raises(TypeError):
        verify_signature(b"{}", signature_for(b"{}", "s"), "s")


# Parsing


def test_parse_json_delivery() -> None:
    """A signed JSON delivery yields its event, delivery GUID and the payload's fields the
    receiver reads (the rest is skipped)."""
    body = b'{"action":"t","client_payload":{"runtime":"a","x":[1]},"zen":"Keep it awesome."}'
    parsed = parse_delivery(headers_for(body, event="repository_dispatch"), body, [SECRET])
    assert parsed == Delivery(
        event="repository_dispatch",
        delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958",
        payload=payloads.DispatchEvent(
            action="t", client_payload=payloads.ClientPayload(runtime="a")
        ),
    )


def test_missing_delivery_id_is_empty() -> None:
    """Without X-GitHub-Delivery the delivery id is the empty string."""
    body = b"{}"
    assert parse_delivery(headers_for(body, delivery_id=None), body, [SECRET]).delivery_id == ""


def test_starlette_headers_any_case() -> None:
    """Header names are matched case-insensitively through Starlette's Headers (X-Github-…)."""
    body = b'{"zen":"z"}'
    headers = Headers(
        headers={
            "X-Hub-Signature-256": signature_for(body, SECRET),
            "X-Github-Event": "ping",
            "X-Github-Delivery": "guid-1",
            "Content-Type": "application/json",
        }
    )
    parsed = parse_delivery(headers, body, [SECRET])
    assert (parsed.event, parsed.delivery_id) == ("ping", "guid-1")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ",
    ],
)
def test_json_content_type_parameters_allowed(content_type: str) -> None:
    """Media type parameters and case do not matter."""
    body = b"{}"
    headers = headers_for(body, content_type=content_type)
    assert parse_delivery(headers, body, [SECRET]).payload == payloads.OtherEvent()


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/jsonx", "multipart/form-data"]
)
def test_other_content_types_are_415(content_type: str | None) -> None:
    """Only JSON and form-urlencoded bodies are accepted."""
    body = b"{}"
    headers = headers_for(body, content_type=content_type)
    assert status_of(lambda: parse_delivery(headers, body, [SECRET])) == 415


@pytest.mark.parametrize("event", [None, "", "  "])
def test_missing_event_is_400(event: str | None) -> None:
    """A signed delivery without an X-GitHub-Event name is malformed."""
    body = b"{}"
    headers = headers_for(body, event=event)
    with pytest.raises(WebhookError) as caught:
        parse_delivery(headers, body, [SECRET])
    assert caught.value.status == 400
    assert "X-GitHub-Event" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b'{"a": 1}{"b": 2}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": "\xff"}',
        b"\xef\xbb\xbf{}",
        b"[]",
        b'"text"',
        b"42",
        b"null",
        b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    ],
    ids=[
        "empty",
        "truncated",
        "text",
        "two-documents",
        "nan",
        "infinity",
        "invalid-utf8",
        "bom",
        "array",
        "string",
        "number",
        "null",
        "too-deep",
    ],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    """Bodies that are not exactly one UTF-8 JSON object are refused with 400."""
    assert status_of(lambda: parse_delivery(headers_for(body), body, [SECRET])) == 400


def test_order_secret_before_everything() -> None:
    """With no secret configured the answer is 503 whatever else is wrong."""
    body = b"\xff"
    headers = {"content-type": "text/plain"}
    assert status_of(lambda: parse_delivery(headers, body, [])) == 503


def test_order_signature_before_parsing() -> None:
    """An unsigned or wrongly signed request is 401 before its content type or body is looked at."""
    body = b"\xff not json"
    assert status_of(lambda: parse_delivery({"content-type": "text/plain"}, body, [SECRET])) == 401
    headers = headers_for(body, secret="wrong", event=None, content_type="text/plain")
    assert status_of(lambda: parse_delivery(headers, body, [SECRET])) == 401


def test_order_content_type_before_event() -> None:
    """A signed request with a bad content type is 415 even without an event name."""
    body = b"\xff"
    headers = headers_for(body, event=None, content_type="text/plain")
    assert status_of(lambda: parse_delivery(headers, body, [SECRET])) == 415


def test_order_event_before_body() -> None:
    """A signed request without an event is refused for that before its body is decoded."""
    body = b"\xff"
    with pytest.raises(WebhookError) as caught:
        parse_delivery(headers_for(body, event=None), body, [SECRET])
    assert caught.value.status == 400
    assert "X-GitHub-Event" in caught.value.message


def test_form_delivery() -> None:
    """A form delivery carries the JSON in `payload`, signed over the whole raw form body."""
    document = {"action": "Design for failure & + = %.", "client_payload": {"runtime": "a"}}
    body = urlencode({"payload": json.dumps(document)}).encode("ascii")
    headers = headers_for(
        body, event="repository_dispatch", content_type="application/x-www-form-urlencoded"
    )
    assert parse_delivery(headers, body, [SECRET]).payload == payloads.DispatchEvent(
        action="Design for failure & + = %.", client_payload=payloads.ClientPayload(runtime="a")
    )


def test_form_signed_over_json_only_is_401() -> None:
    """A signature over the decoded JSON instead of the raw form body does not verify."""
    text = '{"zen":"z"}'
    body = ("payload=" + quote_plus(text)).encode("ascii")
    headers = headers_for(body, content_type="application/x-www-form-urlencoded")
    headers["x-hub-signature-256"] = signature_for(text.encode(), SECRET)
    assert status_of(lambda: parse_delivery(headers, body, [SECRET])) == 401


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"other=%7B%7D",
        b"payload=%7B%7D&payload=%7B%7D",
        b"payload=",
        b"payload=%7B%22a%22%3A%22%FF%22%7D",
        b"payload=%5B%5D",
        b"payload=%7B%7D" + b"&x=1" * 50,
    ],
    ids=[
        "empty",
        "no-payload",
        "two-payloads",
        "blank-payload",
        "invalid-utf8",
        "array",
        "too-many-fields",
    ],
)
def test_malformed_forms_are_400(body: bytes) -> None:
    """A form needs exactly one `payload` field holding a UTF-8 JSON object."""
    headers = headers_for(body, content_type="application/x-www-form-urlencoded")
    assert status_of(lambda: parse_delivery(headers, body, [SECRET])) == 400


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.json")))
@pytest.mark.parametrize("encoding", ["json", "form"])
def test_fixtures_parse_in_both_encodings(name: str, encoding: str) -> None:
    """Every example payload survives both content types unchanged."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    if encoding == "json":
        body, content_type = text.encode("utf-8"), "application/json"
    else:
        body = urlencode({"payload": text}).encode("ascii")
        content_type = "application/x-www-form-urlencoded"
    event = name.split(".")[0]
    headers = headers_for(body, event=event, content_type=content_type)
    parsed = parse_delivery(headers, body, [SECRET])
    assert parsed.event == event
    assert parsed.payload == decode(event, text)
    kinds = {
        "package": payloads.PackageEvent,
        "registry_package": payloads.PackageEvent,
        "repository_dispatch": payloads.DispatchEvent,
    }
    assert type(parsed.payload) is kinds.get(event, payloads.OtherEvent)


# Interpreting: ping and unknown events


@pytest.mark.parametrize(
    "name", ["ping.json", "ping.with-app_id.json", "ping.with-organization.json"]
)
def test_ping(name: str) -> None:
    """A ping asks for nothing but an answer."""
    assert interpret(delivery("ping", load(name)), TEMPLATE_IMAGES, DISPATCH_TYPES) == (
        Interpretation(kind="ping")
    )


@pytest.mark.parametrize("event", ["push", "release", "Package", "x" * 500])
def test_other_events_are_ignored(event: str) -> None:
    """Events other than ping, package, registry_package and repository_dispatch are ignored."""
    result = interpret(delivery(event, load(MULTIARCH)), www(), DISPATCH_TYPES)
    assert result.kind == "ignored"
    assert result.triggers == ()
    assert result.reason.startswith("event ")
    assert len(result.reason) <= REASON_LIMIT


# Interpreting: package and registry_package


def test_multiarch_index_names_watched_tag() -> None:
    """The real tagged index delivery for the watched tag triggers with its digest, no lookup."""
    result = interpret(delivery("package", load(MULTIARCH)), www(), DISPATCH_TYPES)
    assert result == Interpretation(
        kind="trigger", triggers=(Trigger("www", MULTIARCH_DIGEST, resolve=False),)
    )


def test_multiarch_index_names_another_tag() -> None:
    """A push of another tag of a watched package asks the caller to resolve the watched tag."""
    result = interpret(delivery("package", load(MULTIARCH)), www("latest"), DISPATCH_TYPES)
    assert result == Interpretation(kind="trigger", triggers=(Trigger("www", None, resolve=True),))


def test_registry_host_is_not_compared() -> None:
    """A local registry can stand in for GHCR: only the repository path is matched."""
    images = www(registry="127.0.0.1:5000")
    result = interpret(delivery("package", load(MULTIARCH)), images, DISPATCH_TYPES)
    assert result.triggers == (Trigger("www", MULTIARCH_DIGEST, resolve=False),)


def test_registry_package_event_reads_its_own_key() -> None:
    """A registry_package delivery carries the same package object under its own key."""
    payload = load(MULTIARCH)
    payload["registry_package"] = payload.pop("package")
    result = interpret(delivery("registry_package", payload), www(), DISPATCH_TYPES)
    assert result.triggers == (Trigger("www", MULTIARCH_DIGEST, resolve=False),)
    # The key must match the event: a `package` delivery has no `registry_package` object.
    assert interpret(delivery("package", payload), www(), DISPATCH_TYPES).kind == "ignored"


def test_updated_action_triggers_too() -> None:
    """`updated` is treated like `published`."""
    payload = load(MULTIARCH)
    payload["action"] = "updated"
    assert interpret(delivery("package", payload), www(), DISPATCH_TYPES).kind == "trigger"


@pytest.mark.parametrize("action", ["deleted", "", None, 3, ["published"]])
def test_other_actions_are_ignored(action: object) -> None:
    """Only published and updated deliveries matter, whatever the action's type."""
    payload = load(MULTIARCH)
    payload["action"] = action
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert result.kind == "ignored"
    assert result.reason.startswith("action ")


def test_owner_case_does_not_matter() -> None:
    """GitHub keeps the account's case; the match is on the lower-cased owner/name."""
    payload = load(MULTIARCH)
    payload["package"]["owner"]["login"] = "TheRyanGeary"
    payload["package"]["name"] = "WWW"
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert result.triggers == (Trigger("www", MULTIARCH_DIGEST, resolve=False),)


def test_same_name_under_another_owner_is_ignored() -> None:
    """A package with the watched name but another owner is not watched."""
    payload = load(MULTIARCH)
    payload["package"]["owner"]["login"] = "mallory"
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert result == Interpretation(kind="ignored", reason="package mallory/www is not watched")


def test_namespace_is_not_used() -> None:
    """The unreliable namespace field never decides the match; owner.login does."""
    payload = load(MULTIARCH)
    payload["package"]["namespace"] = "mallory"
    assert interpret(delivery("package", payload), www(), DISPATCH_TYPES).kind == "trigger"
    payload["package"]["owner"]["login"] = "mallory"
    payload["package"]["namespace"] = "theryangeary"
    assert interpret(delivery("package", payload), www(), DISPATCH_TYPES).kind == "ignored"


def test_unwatched_package_is_ignored() -> None:
    """A container package that no runtime watches is ignored."""
    result = interpret(delivery("package", load(MULTIARCH)), TEMPLATE_IMAGES, DISPATCH_TYPES)
    assert result == Interpretation(
        kind="ignored", reason="package theryangeary/www is not watched"
    )


def test_several_runtimes_on_one_package() -> None:
    """Each runtime watching the package gets its own trigger, by its own tag."""
    images = {
        "pinned": ImageRef("ghcr.io", "theryangeary/www", "0e2a89b"),
        "other": ImageRef("ghcr.io", "someone/else", "latest"),
        "rolling": ImageRef("ghcr.io", "theryangeary/www", "latest"),
    }
    result = interpret(delivery("package", load(MULTIARCH)), images, DISPATCH_TYPES)
    assert result.triggers == (
        Trigger("pinned", MULTIARCH_DIGEST, resolve=False),
        Trigger("rolling", None, resolve=True),
    )


@pytest.mark.parametrize(
    ("version", "tag_digest", "expected"),
    [
        (DIGEST, None, DIGEST),
        ("1.0.0", DIGEST, DIGEST),
        (None, DIGEST, DIGEST),
        ("sha256:short", "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b", None),
        (DIGEST.upper(), None, None),
    ],
)
def test_digest_source(version: object, tag_digest: object, expected: str | None) -> None:
    """The digest is package_version.version, else tag.digest, and only when well formed."""
    payload = load(MULTIARCH)
    version_object = payload["package"]["package_version"]
    version_object["version"] = version
    version_object["container_metadata"]["tag"]["digest"] = tag_digest
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    if expected is None:
        assert result.triggers == (Trigger("www", None, resolve=True),)
    else:
        assert result.triggers == (Trigger("www", expected, resolve=False),)


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("registry_package.published.docker.json", "registry_package"),
        ("package.published.docker.json", "package"),
    ],
)
def test_untagged_manifest_is_ignored(name: str, event: str) -> None:
    """Per-platform deliveries of a multi-arch push carry an empty tag and are ignored."""
    # The octokit examples' owner.login is Codertocat and the name hello-world-npm.
    images = {"hello": ImageRef("ghcr.io", "codertocat/hello-world-npm", "latest")}
    result = interpret(delivery(event, load(name)), images, DISPATCH_TYPES)
    assert result == Interpretation(kind="ignored", reason="untagged manifest")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v["container_metadata"]["tag"].pop("name"),
        lambda v: v["container_metadata"].pop("tag"),
        lambda v: v["container_metadata"]["tag"].update(name=None),
        lambda v: v["container_metadata"]["tag"].update(name=7),
        lambda v: v.update(container_metadata=None),
        lambda v: v.update(container_metadata="tag"),
    ],
    ids=["no-name", "no-tag", "null-name", "number-name", "null-metadata", "string-metadata"],
)
def test_missing_tag_is_untagged(mutate: Callable[[dict[str, Any]], object]) -> None:
    """A tag that is missing or of the wrong type counts as untagged."""
    payload = load(MULTIARCH)
    mutate(payload["package"]["package_version"])
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert result == Interpretation(kind="ignored", reason="untagged manifest")


@pytest.mark.parametrize("tag", ["bad tag", "-lead", "a" * 129, "v1;rm -rf /", "../x"])
def test_invalid_tag_is_ignored(tag: str) -> None:
    """A tag the registry could not hold is ignored instead of resolved."""
    payload = load(MULTIARCH)
    payload["package"]["package_version"]["container_metadata"]["tag"]["name"] = tag
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert result.kind == "ignored"
    assert result.reason.endswith("is not a valid tag")
    assert len(result.reason) <= REASON_LIMIT


def test_npm_package_is_not_a_container() -> None:
    """octokit's npm example (package_type npm, registry npm) is not a container package."""
    images = {"hello": ImageRef("ghcr.io", "codertocat/hello-world-npm", "latest")}
    result = interpret(delivery("package", load("package.published.npm.json")), images, ())
    assert result == Interpretation(kind="ignored", reason="not a container package")


@pytest.mark.parametrize(
    ("package_type", "ecosystem", "registry_type", "container"),
    [
        ("CONTAINER", "CONTAINER", "CONTAINER", True),
        ("container", None, None, True),
        (None, "docker", None, True),
        ("npm", "docker", "CONTAINER", True),
        ("npm", "docker", "npm", False),
        ("npm", "npm", "CONTAINER", False),
        ("maven", None, None, False),
        (None, None, None, False),
        (5, ["container"], None, False),
    ],
)
def test_container_detection(
    package_type: object, ecosystem: object, registry_type: object, container: bool
) -> None:
    """package_type or ecosystem must say container/docker; a named registry must agree."""
    payload = load(MULTIARCH)
    package = payload["package"]
    package["package_type"] = package_type
    package["ecosystem"] = ecosystem
    package["registry"]["type"] = registry_type
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert (result.kind == "trigger") is container
    if not container:
        assert result.reason == "not a container package"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.pop("package"),
        lambda p: p.update(package=None),
        lambda p: p.update(package=["www"]),
        lambda p: p["package"].pop("owner"),
        lambda p: p["package"].update(owner="theryangeary"),
        lambda p: p["package"]["owner"].update(login=None),
        lambda p: p["package"].update(name=["www"]),
        lambda p: p["package"].update(package_version=None),
    ],
)
def test_wrong_types_are_ignored_not_raised(mutate: Callable[[dict[str, Any]], object]) -> None:
    """Missing or mistyped package fields make the delivery ignored, never an exception."""
    payload = load(MULTIARCH)
    mutate(payload)
    assert interpret(delivery("package", payload), www(), DISPATCH_TYPES).kind == "ignored"


# Interpreting: repository_dispatch


def dispatch(
    client_payload: object = None, *, action: object = "on-demand-test", repo: object = None
) -> Delivery:
    """The octokit repository_dispatch example with its action, client_payload or repo edited."""
    payload = load("repository_dispatch.json")
    payload["action"] = action
    payload["client_payload"] = client_payload
    if repo is not None:
        payload["repository"]["name"] = repo
    return delivery("repository_dispatch", payload)


def test_dispatch_fixture_as_is() -> None:
    """The unedited example (octo-repo, no runtime named) is ignored though its type is accepted."""
    payload = load("repository_dispatch.json")
    result = interpret(delivery("repository_dispatch", payload), TEMPLATE_IMAGES, DISPATCH_TYPES)
    assert result == Interpretation(kind="ignored", reason="no watched runtime named")


def test_dispatch_type_must_be_accepted() -> None:
    """A dispatch whose event type is not configured is ignored."""
    result = interpret(
        dispatch({"runtime": "codex"}), TEMPLATE_IMAGES, ["template-image-published"]
    )
    assert result == Interpretation(
        kind="ignored", reason="dispatch type on-demand-test not accepted"
    )


@pytest.mark.parametrize("action", [None, 1, ["on-demand-test"], {"on-demand-test": 1}])
def test_dispatch_type_of_wrong_type_is_ignored(action: object) -> None:
    """A missing or non-string action is never accepted."""
    result = interpret(
        dispatch({"runtime": "codex"}, action=action), TEMPLATE_IMAGES, DISPATCH_TYPES
    )
    assert result.kind == "ignored"


def test_dispatch_types_must_not_be_a_string() -> None:
    """A bare string of dispatch types would accept its substrings, so it is refused."""
    with pytest.raises(TypeError):
        interpret(dispatch({"runtime": "codex"}), TEMPLATE_IMAGES, "on-demand-test-x")


def test_dispatch_runtime_from_client_payload() -> None:
    """client_payload.runtime names the runtime; without a digest the tag is resolved."""
    result = interpret(dispatch({"runtime": "codex"}), TEMPLATE_IMAGES, DISPATCH_TYPES)
    assert result == Interpretation(
        kind="trigger", triggers=(Trigger("codex", None, resolve=True),)
    )


def test_dispatch_runtimes_list() -> None:
    """client_payload.runtimes names several runtimes, deduplicated, in order, unknown dropped."""
    client_payload = {"runtimes": ["codex", "nope", "claude-code", "codex", 3, None]}
    result = interpret(dispatch(client_payload), TEMPLATE_IMAGES, DISPATCH_TYPES)
    assert result.triggers == (
        Trigger("codex", None, resolve=True),
        Trigger("claude-code", None, resolve=True),
    )


def test_dispatch_runtime_wins_over_runtimes() -> None:
    """When both are given, the single runtime is used."""
    client_payload = {"runtime": "codex", "runtimes": ["claude-code"]}
    result = interpret(dispatch(client_payload), TEMPLATE_IMAGES, DISPATCH_TYPES)
    assert result.triggers == (Trigger("codex", None, resolve=True),)


def test_dispatch_digest() -> None:
    """A valid client_payload.digest is used as is, with no lookup."""
    result = interpret(
        dispatch({"runtime": "codex", "digest": DIGEST}), TEMPLATE_IMAGES, DISPATCH_TYPES
    )
    assert result.triggers == (Trigger("codex", DIGEST, resolve=False),)


@pytest.mark.parametrize(
    "digest",
    ["", "latest", DIGEST.upper(), DIGEST[:-1], DIGEST + "0", "sha512:" + "a" * 128, 5, []],
)
def test_dispatch_bad_digest_is_400(digest: object) -> None:
    """A client_payload.digest that is present but not a sha256 digest is refused with 400."""
    call = dispatch({"runtime": "codex", "digest": digest})
    assert status_of(lambda: interpret(call, TEMPLATE_IMAGES, DISPATCH_TYPES)) == 400


def test_dispatch_null_digest_is_absent() -> None:
    """A null digest counts as no digest."""
    result = interpret(
        dispatch({"runtime": "codex", "digest": None}), TEMPLATE_IMAGES, DISPATCH_TYPES
    )
    assert result.triggers == (Trigger("codex", None, resolve=True),)


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("workspace-template-codex", ("codex",)),
        ("molecule-workspace-template-claude-code", ("claude-code",)),
        ("workspace-template-", ()),
        ("workspace-template-unknown", ()),
        ("codex", ()),
        ("octo-repo", ()),
        (42, ()),
    ],
)
def test_dispatch_runtime_from_repository_name(repo: object, expected: tuple[str, ...]) -> None:
    """Without a runtime in client_payload, a repo named …workspace-template-<runtime> names it."""
    for client_payload in (None, {}, {"unit": False, "integration": True}, "runtime", ["codex"]):
        result = interpret(dispatch(client_payload, repo=repo), TEMPLATE_IMAGES, DISPATCH_TYPES)
        assert tuple(trigger.runtime for trigger in result.triggers) == expected
        assert result.kind == ("trigger" if expected else "ignored")


def test_dispatch_absent_client_payload() -> None:
    """A dispatch without any client_payload key still works from the repository name."""
    payload = load("repository_dispatch.json")
    del payload["client_payload"]
    payload["repository"]["name"] = "workspace-template-codex"
    result = interpret(delivery("repository_dispatch", payload), TEMPLATE_IMAGES, DISPATCH_TYPES)
    assert result.triggers == (Trigger("codex", None, resolve=True),)


def test_dispatch_explicit_name_beats_repository() -> None:
    """A named runtime is used even when the repository name would suggest another."""
    call = dispatch({"runtime": "claude-code"}, repo="workspace-template-codex")
    assert interpret(call, TEMPLATE_IMAGES, DISPATCH_TYPES).triggers == (
        Trigger("claude-code", None, resolve=True),
    )


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a;rm -rf /",
        "ghcr.io/evil/x",
        "ghcr.io/molecule-ai/workspace-template-codex:latest",
        "CODEX",
        " codex",
        "codex\n",
        "",
    ],
)
def test_dispatch_cannot_pick_an_image(name: str) -> None:
    """A name that is not exactly a configured runtime never produces a trigger."""
    for client_payload in ({"runtime": name}, {"runtimes": [name]}):
        result = interpret(dispatch(client_payload), TEMPLATE_IMAGES, DISPATCH_TYPES)
        assert result == Interpretation(kind="ignored", reason="no watched runtime named")
    result = interpret(
        dispatch(None, repo=f"workspace-template-{name}"), TEMPLATE_IMAGES, DISPATCH_TYPES
    )
    assert result.kind == "ignored"


def test_interpret_does_not_modify_the_payload() -> None:
    """Interpreting reads the payload and leaves it as it was."""
    payload = load(MULTIARCH)
    before = copy.deepcopy(payload)
    interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert payload == before


def test_reasons_never_echo_long_payload_text() -> None:
    """Echoed payload values are cut short and stripped of control characters."""
    payload = load(MULTIARCH)
    payload["package"]["owner"]["login"] = "evil\n" + "x" * 10_000
    result = interpret(delivery("package", payload), www(), DISPATCH_TYPES)
    assert result.kind == "ignored"
    assert "\n" not in result.reason
    assert len(result.reason) <= REASON_LIMIT
    long_type = dispatch({"runtime": "codex"}, action="t" * 10_000)
    assert len(interpret(long_type, TEMPLATE_IMAGES, DISPATCH_TYPES).reason) <= REASON_LIMIT


@settings(max_examples=200, deadline=None)
@given(secret=st.text(min_size=1, max_size=200), body=st.binary(max_size=300))
def test_the_keyed_hmac_is_hmac_sha256(secret: str, body: bytes) -> None:
    """The Verifier's own keyed construction agrees with the stdlib's hmac for any key
    (longer than a block, too) and body: what verifies is exactly GitHub's signature."""
    expected = "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()
    Verifier([secret]).verify(body, expected)
    assert signature_for(body, secret) == expected
    with pytest.raises(WebhookError):
        Verifier([secret]).verify(body + b"x", expected)


@pytest.mark.parametrize("scheme", ["sha1=", "SHA256=", "sha256:", "sha256 ", ""])
def test_the_right_hex_under_another_scheme_is_refused(scheme: str) -> None:
    """Only `sha256=` in front of the hex digest verifies."""
    hex_digest = signature_for(b"{}", SECRET).removeprefix("sha256=")
    assert status_of(lambda: verify_signature(b"{}", scheme + hex_digest, [SECRET])) == 401
