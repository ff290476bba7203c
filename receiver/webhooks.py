"""The GitHub webhook route: verify, interpret, hand triggers to the coordinator, answer.

This is the receiver's hot path: a redelivery storm or a busy organisation's hook costs
this per request. So it is a bare ASGI endpoint: it reads the few headers it needs from the
scope and the body from `receive`, and answers with JSON encoded once, without building
Starlette's Request and Response objects (which cost more than the rest of a delivery but
the HMAC and the decoding; docs/benchmarks.md has the profile).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Final

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import github, logs
from .coordinator import Coordinator
from .imageref import ImageRef
from .metrics import Metrics
from .outcomes import DeliveryOutcome, TriggerOutcome, webhook
from .registry import RegistryClient
from .web import ClientGone, body_message, json_body, json_start, receive_capped

log = logging.getLogger(__name__)

PATH: Final = "/webhooks/github"

# A refused delivery's outcome, by the status it is refused with.
_REFUSED = {
    400: DeliveryOutcome.MALFORMED,
    401: DeliveryOutcome.UNAUTHORIZED,
    413: DeliveryOutcome.TOO_LARGE,
    415: DeliveryOutcome.UNSUPPORTED_TYPE,
    503: DeliveryOutcome.DISABLED,
}
# Outcomes of a trigger that start no work: a delivery of only these is not logged at INFO.
_IDLE = frozenset((TriggerOutcome.UNCHANGED, TriggerOutcome.COALESCED, TriggerOutcome.QUARANTINED))
# The request headers the route reads, by their ASGI (lower-case bytes) names.
_READ = {
    name.encode("ascii"): name
    for name in (
        github.SIGNATURE_HEADER,
        github.EVENT_HEADER,
        github.DELIVERY_HEADER,
        github.CONTENT_TYPE_HEADER,
        "content-length",
    )
}

Answer = tuple[DeliveryOutcome, int, bytes]


def _refuse(status: int, message: str) -> Answer:
    return _REFUSED[status], status, json_body({"error": message})


def request_headers(scope: Scope) -> dict[str, str]:
    """The headers the route reads, by lower-case name; the first of repeated ones counts."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = _READ.get(raw_name)
        if name is not None and name not in found:
            found[name] = raw_value.decode("latin-1")
    return found


class WebhookEndpoint:
    """`POST /webhooks/github`, bound to the coordinator, the registry client and settings."""

    # No dedup by delivery id: a redelivery is how an operator retries a failed refresh, and
    # the digest book already makes duplicates of a digest cost nothing.

    def __init__(
        self,
        *,
        coordinator: Coordinator,
        registry: RegistryClient,
        images: Mapping[str, ImageRef],
        secrets: tuple[str, ...],
        dispatch_types: tuple[str, ...],
        max_body: int,
        metrics: Metrics,
    ) -> None:
        self.coordinator = coordinator
        self.registry = registry
        self.images = dict(images)
        self.verifier = github.Verifier(secrets)
        self.dispatch_types = dispatch_types
        self.max_body = max_body
        self.metrics = metrics

    def route(self) -> Route:
        """The route in Starlette's table (its other methods get the JSON 405 there)."""
        return Route(PATH, self, methods=["POST"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        try:
            outcome, status, body = await self.handle(headers, receive)
        except ClientGone:
            return  # nobody to answer, nothing done
        self.metrics.delivery(github.event_name(headers), outcome)
        await send(json_start(status, body))
        await send(body_message(body))

    async def handle(self, headers: Mapping[str, str], receive: Receive) -> Answer:
        if not self.verifier:
            return _refuse(503, "webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set")
        if github.SIGNATURE_HEADER not in headers:
            # Nothing to verify: refuse before reading the body, so unsigned floods are cheap.
            return _refuse(401, "missing X-Hub-Signature-256 header")
        body = await receive_capped(receive, self.max_body, headers.get("content-length"))
        if body is None:
            return _refuse(413, f"body larger than {self.max_body} bytes")
        try:
            delivery = github.parse_delivery(headers, body, self.verifier)
            meaning = github.interpret(delivery, self.images, self.dispatch_types)
        except github.WebhookError as exc:
            return _refuse(exc.status, str(exc))
        # From here on every log line, and the refresh this delivery starts, carries its id.
        tagged = logs.tag(delivery=delivery.delivery_id)
        try:
            return self.accept(delivery, meaning)
        finally:
            logs.untag(tagged)

    def accept(self, delivery: github.Delivery, meaning: github.Interpretation) -> Answer:
        delivery_id, event = delivery.delivery_id, delivery.event
        if meaning.kind == "ping":
            answer = {"delivery": delivery_id, "event": event, "pong": True}
            return DeliveryOutcome.PING, 200, json_body(answer)
        if meaning.kind == "ignored":
            log.debug(
                "delivery %s (%s) ignored: %s",
                delivery_id,
                event,
                meaning.reason,
                extra={"event": event},
            )
            answer = {"delivery": delivery_id, "event": event, "ignored": meaning.reason}
            return DeliveryOutcome.IGNORED, 202, json_body(answer)
        source = webhook(event)
        runtimes: dict[str, TriggerOutcome] = {}
        for trigger in meaning.triggers:
            if trigger.resolve:
                lookup = functools.partial(self.registry.digest, self.images[trigger.runtime])
                outcome = self.coordinator.submit_resolving(trigger.runtime, lookup, source)
            else:
                outcome = self.coordinator.submit(trigger.runtime, trigger.digest, source)
            runtimes[trigger.runtime] = outcome
        # A delivery that starts nothing (a duplicate, a redelivery) is counted in the
        # metrics, not logged: at webhook rates the log line costs more than the work.
        level = logging.DEBUG if _IDLE.issuperset(runtimes.values()) else logging.INFO
        if log.isEnabledFor(level):
            words = {runtime: str(outcome) for runtime, outcome in runtimes.items()}
            log.log(
                level,
                "delivery %s (%s): %s",
                delivery_id,
                event,
                words,
                extra={"event": event, "runtimes": words},
            )
        answer = {"delivery": delivery_id, "event": event, "runtimes": runtimes}
        return DeliveryOutcome.ACCEPTED, 202, json_body(answer)
