"""Fuzzing the HTTP surface through the ASGI app: random methods, headers, content types,
bodies, encodings, nesting and signatures never give a 5xx, and nothing reaches the engine
without a valid signature or admin token; signed payloads never reach an image or a
container outside RUNTIMES x IMAGE_TEMPLATE x CONTAINER_PREFIX."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.admin_auth import AdminTokens
from tests.support import wiring
from tests.support.deliveries import sign
from tests.support.fakes import FakeEngine, container

SECRET = "fuzz-secret"
ADMIN_KEY = "fuzz-admin-key"
WATCHED = "ghcr.io/org/workspace-template-a:latest"
NEW_ID = "sha256:" + "0b" * 32
DIGEST = "sha256:" + "2" * 64
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EVENTS = ["package", "registry_package", "repository_dispatch", "ping", "push", "", "pïng"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


class World:
    """An app over a fake engine with one watched and several unwatched images/containers."""

    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.engine.publish(WATCHED, NEW_ID, DIGEST)
        for ref in ("ghcr.io/org/workspace-template-b:latest", "ghcr.io/evil/x:latest"):
            self.engine.publish(ref, "sha256:" + "0c" * 32, "sha256:" + "3" * 64)
        self.engine.add(container("ws-1", WATCHED, "sha256:" + "0a" * 32))
        self.engine.add(container("db-1", WATCHED, "sha256:" + "0a" * 32))
        self.engine.add(container("ws-b", "ghcr.io/org/workspace-template-b:latest", "x"))
        settings_ = wiring.settings(
            GITHUB_WEBHOOK_SECRET=SECRET, ADMIN_SECRET_KEY=ADMIN_KEY, WEBHOOK_MAX_BODY="65536"
        )
        self.client = wiring.app_client(
            self.engine, settings_, registry=wiring.registry_answering(DIGEST)
        )

    def settle(self) -> None:
        app: Any = self.client.app
        self.client.run(app.state.coordinator.idle())

    def writes(self) -> list[tuple[str, ...]]:
        """Engine calls that change something (pulls included)."""
        return [c for c in self.engine.calls if c[0] not in ("inspect", "image", "list", "ping")]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    made = World()
    yield made
    made.client.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.just(b"\xff\xfe\x00invalid utf-8 \xc3\x28"),
)
signatures = st.one_of(
    st.none(),
    header_values,
    st.just("sha256="),
    st.just("sha1=" + "0" * 40),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64).map(
        lambda h: "sha256=" + h
    ),
    st.just("SHA256=" + "0" * 64),
)


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(["/webhooks/github", "/admin/workspace-images/refresh", "/admin/status"]),
    content_type=st.one_of(
        st.none(),
        st.sampled_from(
            [
                "application/json",
                "application/x-www-form-urlencoded",
                "text/plain",
                "application/json; charset=latin-1",
                "multipart/form-data; boundary=x",
            ]
        ),
        header_values,
    ),
    event=st.one_of(st.none(), st.sampled_from(EVENTS), header_values),
    signature=signatures,
    authorization=st.one_of(st.none(), header_values, st.just("Bearer "), st.just("Bearer a.b.c")),
    body=bodies,
)
def test_nothing_unsigned_or_unauthorized_does_anything_or_breaks(
    world: World,
    method: str,
    path: str,
    content_type: str | None,
    event: str | None,
    signature: str | None,
    authorization: str | None,
    body: bytes,
) -> None:
    """Random requests without the secret or a token: never 5xx, never an engine write."""
    headers = {
        name: value.encode()  # bytes: a non-ASCII header is sent as its UTF-8 bytes
        for name, value in {
            "Content-Type": content_type,
            "X-GitHub-Event": event,
            "X-Hub-Signature-256": signature,
            "Authorization": authorization,
        }.items()
        if value is not None
    }
    before = len(world.writes())
    response = world.client.request(method, path, content=body, headers=headers)
    world.settle()
    assert response.status_code < 500
    assert len(world.writes()) == before


@FUZZ
@given(event=st.sampled_from(EVENTS), payload=json_values, form=st.booleans())
def test_signed_random_payloads_never_break_or_reach_outside_the_watch_list(
    world: World, event: str, payload: Any, form: bool
) -> None:
    """Validly signed but arbitrary JSON: never 5xx; any engine write concerns only the
    watched image and `ws-` containers."""
    text = json.dumps(payload)
    body = ("payload=" + httpx.QueryParams({"p": text}).get("p", "")).encode() if form else text
    raw = body if isinstance(body, bytes) else body.encode()
    headers = {
        "Content-Type": b"application/x-www-form-urlencoded" if form else b"application/json",
        "X-GitHub-Event": event.encode(),
        "X-Hub-Signature-256": sign(raw, SECRET).encode(),
    }
    response = world.client.post("/webhooks/github", content=raw, headers=headers)
    world.settle()
    assert response.status_code < 500
    assert_confined(world)


INJECTIONS = [
    "a; rm -rf /",
    "../../etc/passwd",
    "a:latest@sha256:" + "0" * 64,
    "ghcr.io/evil/x",
    "b",
    "$(touch /tmp/pwned)",
    "a\nb",
    "A",
    "a/../b",
    "`id`",
    "*",
]


@pytest.mark.parametrize("name", INJECTIONS)
def test_payload_names_cannot_choose_an_image_or_container(world: World, name: str) -> None:
    """Runtime names, package names, tags and digests with path, ref and shell
    metacharacters: refused or ignored, and never anything outside the watch list."""
    payloads: list[tuple[str, dict[str, Any]]] = [
        (
            "repository_dispatch",
            {
                "action": "template-image-published",
                "client_payload": {"runtime": name, "runtimes": [name, "a"], "digest": name},
                "repository": {"name": f"workspace-template-{name}"},
            },
        ),
        (
            "package",
            {
                "action": "published",
                "package": {
                    "name": name,
                    "package_type": "container",
                    "owner": {"login": name},
                    "package_version": {
                        "version": name,
                        "container_metadata": {"tag": {"name": name, "digest": name}},
                    },
                },
            },
        ),
    ]
    for event, payload in payloads:
        raw = json.dumps(payload).encode()
        response = world.client.post(
            "/webhooks/github",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": event,
                "X-Hub-Signature-256": sign(raw, SECRET),
            },
        )
        world.settle()
        assert response.status_code in (202, 400)
    token = AdminTokens([ADMIN_KEY]).mint()
    answer = world.client.post(
        "/admin/workspace-images/refresh",
        json={"runtimes": [name]},
        headers={"Authorization": f"Bearer {token}"},
    )
    world.settle()
    assert answer.status_code == 400
    assert_confined(world)


def assert_confined(world: World) -> None:
    """Every pull was of the watched image; every container touched is a `ws-` one."""
    names = {cid: c["Name"] for cid, c in world.engine.containers.items()}
    for call in world.writes():
        if call[0] == "pull":
            assert call[1] == WATCHED
        elif call[0] in ("create", "rename"):
            assert call[-1].startswith("ws-")
        elif call[0] in ("stop", "start", "remove"):
            assert names.get(call[1], "/ws-").startswith("/ws-")
