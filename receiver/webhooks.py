"""The GitHub webhook route: verify, interpret, hand triggers to the coordinator, answer."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import github, logs
from .coordinator import Coordinator
from .imageref import ImageRef
from .metrics import Metrics
from .outcomes import DeliveryOutcome, TriggerOutcome, webhook
from .registry import RegistryClient
from .web import error, read_capped

log = logging.getLogger(__name__)

# A refused delivery's outcome, by the status it is refused with.
_REFUSED = {
    400: DeliveryOutcome.MALFORMED,
    401: DeliveryOutcome.UNAUTHORIZED,
    413: DeliveryOutcome.TOO_LARGE,
    415: DeliveryOutcome.UNSUPPORTED_TYPE,
    503: DeliveryOutcome.DISABLED,
}
# Outcomes of a trigger that start no work: a delivery of only these is not logged at INFO.
_IDLE = (TriggerOutcome.UNCHANGED, TriggerOutcome.COALESCED, TriggerOutcome.QUARANTINED)

Answer = tuple[DeliveryOutcome, JSONResponse]


def _refuse(status: int, message: str) -> Answer:
    return _REFUSED[status], error(status, message)


def routes(
    *,
    coordinator: Coordinator,
    registry: RegistryClient,
    images: Mapping[str, ImageRef],
    secrets: tuple[str, ...],
    dispatch_types: tuple[str, ...],
    max_body: int,
    metrics: Metrics,
) -> list[Route]:
    """The webhook route, bound to the coordinator, the registry client and the settings."""
    # No dedup by delivery id: a redelivery is how an operator retries a failed refresh, and
    # the digest book already makes duplicates of a digest cost nothing.

    async def github_webhook(request: Request) -> JSONResponse:
        outcome, answer = await handle(request)
        metrics.delivery(request.headers.get(github.EVENT_HEADER), outcome)
        return answer

    async def handle(request: Request) -> Answer:
        if not secrets:
            return _refuse(503, "webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set")
        if github.SIGNATURE_HEADER not in request.headers:
            # Nothing to verify: refuse before reading the body, so unsigned floods are cheap.
            return _refuse(401, "missing X-Hub-Signature-256 header")
        body = await read_capped(request, max_body)
        if body is None:
            return _refuse(413, f"body larger than {max_body} bytes")
        try:
            delivery = github.parse_delivery(request.headers, body, secrets)
            meaning = github.interpret(delivery, images, dispatch_types)
        except github.WebhookError as exc:
            return _refuse(exc.status, str(exc))
        # From here on every log line, and the refresh this delivery starts, carries its id.
        with logs.context(delivery=delivery.delivery_id):
            return accept(delivery, meaning)

    def accept(delivery: github.Delivery, meaning: github.Interpretation) -> Answer:
        summary: dict[str, object] = {"delivery": delivery.delivery_id, "event": delivery.event}
        context = {"event": delivery.event}
        if meaning.kind == "ping":
            return DeliveryOutcome.PING, JSONResponse({**summary, "pong": True})
        if meaning.kind == "ignored":
            log.debug(
                "delivery %s (%s) ignored: %s",
                delivery.delivery_id,
                delivery.event,
                meaning.reason,
                extra=context,
            )
            answer = JSONResponse({**summary, "ignored": meaning.reason}, status_code=202)
            return DeliveryOutcome.IGNORED, answer
        source = webhook(delivery.event)
        runtimes: dict[str, TriggerOutcome] = {}
        for trigger in meaning.triggers:
            if trigger.resolve:
                lookup = functools.partial(registry.digest, images[trigger.runtime])
                outcome = coordinator.submit_resolving(trigger.runtime, lookup, source)
            else:
                outcome = coordinator.submit(trigger.runtime, trigger.digest, source)
            runtimes[trigger.runtime] = outcome
        # A delivery that starts nothing (a duplicate, a redelivery) is counted in the
        # metrics, not logged: at webhook rates the log line costs more than the work.
        busy = any(outcome not in _IDLE for outcome in runtimes.values())
        words = {runtime: str(outcome) for runtime, outcome in runtimes.items()}
        (log.info if busy else log.debug)(
            "delivery %s (%s): %s",
            delivery.delivery_id,
            delivery.event,
            words,
            extra={**context, "runtimes": words},
        )
        answer = JSONResponse({**summary, "runtimes": words}, status_code=202)
        return DeliveryOutcome.ACCEPTED, answer

    return [Route("/webhooks/github", github_webhook, methods=["POST"])]
