"""Inbound provider webhooks. No bearer token: the provider's signature authenticates each request."""

from __future__ import annotations

from chalice.app import Blueprint, Request, Response

from chalicelib.api.http import endpoint
from chalicelib.api.views import JSON_HEADERS
from chalicelib.container import Container
from chalicelib.usecases.webhooks import ACCEPTED

webhook_api = Blueprint(__name__)
# Providers post JSON; some label it loosely. The body is verified byte for byte whatever the label.
_BODY_TYPES = ["application/json", "text/plain"]


@webhook_api.route("/webhooks/{provider}", methods=["POST"], content_types=_BODY_TYPES)
@endpoint(webhook_api, auth="none")
def receive_webhook(container: Container, request: Request, provider: str) -> Response:
    # The HMAC covers the exact bytes the provider sent: never re-serialise the parsed JSON.
    raw = request.raw_body or b""
    body = raw.encode("utf-8") if isinstance(raw, str) else raw
    container.webhooks.receive(provider, request.headers, body)
    return Response(body=dict(ACCEPTED), status_code=202, headers=JSON_HEADERS)
