"""The GitHub webhook route: verify, interpret, hand triggers to the coordinator, answer."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import github, logs
from .admin import error, read_capped
from .digests import COALESCED, UNCHANGED, Coordinator
from .imageref import ImageRef
from .metrics import Metrics
from .registry import RegistryClient

log = logging.getLogger(__name__)


def routes(
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
        answer = await handle(request)
        metrics.delivery(request.headers.get("x-github-event"), _outcome(answer))
        return answer

    async def handle(request: Request) -> JSONResponse:
        if not secrets:
            return error(503, "webhooks are disabled: GITHUB_WEBHOOK_SECRET is not set")
        if github.SIGNATURE_HEADER not in request.headers:
            # Nothing to verify: refuse before reading the body, so unsigned floods are cheap.
            return error(401, "missing X-Hub-Signature-256 header")
        body = await read_capped(request, max_body)
        if body is None:
            return error(413, f"body larger than {max_body} bytes")
        try:
            delivery = github.parse_delivery(request.headers, body, secrets)
            meaning = github.interpret(delivery, images, dispatch_types)
        except github.WebhookError as exc:
            return error(exc.status, str(exc))
        # From here on every log line, and the refresh this delivery starts, carries its id.
        with logs.context(delivery=delivery.delivery_id):
            return accept(delivery, meaning)

    def accept(delivery: github.Delivery, meaning: github.Interpretation) -> JSONResponse:
        summary: dict[str, object] = {"delivery": delivery.delivery_id, "event": delivery.event}
        context = {"event": delivery.event}
        if meaning.kind == "ping":
            return JSONResponse({**summary, "pong": True})
        if meaning.kind == "ignored":
            log.debug(
                "delivery %s (%s) ignored: %s",
                delivery.delivery_id,
                delivery.event,
                meaning.reason,
                extra=context,
            )
            return JSONResponse({**summary, "ignored": meaning.reason}, status_code=202)
        source = f"webhook:{delivery.event}"
        runtimes: dict[str, str] = {}
        for trigger in meaning.triggers:
            if trigger.resolve:
                lookup = functools.partial(registry.digest, images[trigger.runtime])
                coordinator.spawn_resolving(trigger.runtime, lookup, source)
                runtimes[trigger.runtime] = "resolving"
            else:
                runtimes[trigger.runtime] = coordinator.submit(
                    trigger.runtime, trigger.digest, source
                )
        # A delivery that starts nothing (a duplicate, a redelivery) is counted in the
        # metrics, not logged: at webhook rates the log line costs more than the work.
        busy = any(outcome not in (UNCHANGED, COALESCED) for outcome in runtimes.values())
        (log.info if busy else log.debug)(
            "delivery %s (%s): %s",
            delivery.delivery_id,
            delivery.event,
            runtimes,
            extra={**context, "runtimes": runtimes},
        )
        return JSONResponse({**summary, "runtimes": runtimes}, status_code=202)

    return [Route("/webhooks/github", github_webhook, methods=["POST"])]


# Delivery outcomes for the metrics, by answer status; 202 answers say more in their body.
_OUTCOMES = {
    200: "ping",
    400: "malformed",
    401: "unauthorized",
    413: "too_large",
    415: "unsupported_type",
    503: "disabled",
}


def _outcome(answer: JSONResponse) -> str:
    if answer.status_code == 202:
        return "ignored" if b'"ignored"' in answer.body else "accepted"
    return _OUTCOMES.get(answer.status_code, str(answer.status_code))
