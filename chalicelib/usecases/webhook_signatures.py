"""Webhook signatures: pure checks of the raw body against the provider's signing secret.

WHOOP (scheme ``whoop``, developer.whoop.com/docs/developing/webhooks): each
POST carries ``X-WHOOP-Signature`` = base64(HMAC-SHA256(client secret,
``X-WHOOP-Signature-Timestamp`` + raw body)); the timestamp is milliseconds since
the epoch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from chalicelib.domain.errors import AuthenticationError
from chalicelib.usecases.webhook_config import WebhookConfig, WebhookScheme, config_error

WHOOP_SIGNATURE_HEADER = "X-WHOOP-Signature"
WHOOP_TIMESTAMP_HEADER = "X-WHOOP-Signature-Timestamp"

_MAX_TIMESTAMP_DIGITS = 16


class WebhookSignatureError(AuthenticationError):
    """The webhook's signature is missing, invalid or outside the allowed time window."""

    def __init__(self, reason: str) -> None:
        # One message for every failure: the caller learns nothing about which check it failed.
        super().__init__("the webhook signature is missing, invalid or expired")
        self.reason = reason
        """A stable code for logs and tests: ``missing_signature``, ``missing_timestamp``,
        ``malformed_timestamp``, ``bad_signature`` or ``stale_timestamp``."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (HTTP/2 and API Gateway lower-case them)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def whoop_signature(secret: str, timestamp: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, timestamp header + raw body)), as WHOOP computes it."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_whoop_signature(
    headers: Mapping[str, str], body: bytes, secret: str, *, now: float, tolerance_seconds: float
) -> None:
    """Raise ``WebhookSignatureError`` unless the raw ``body`` is signed by ``secret`` within the time window.

    The timestamp is part of the signed message, so it cannot be moved forward
    without the secret: a captured webhook can be replayed only within the window.
    """
    signature = (_header(headers, WHOOP_SIGNATURE_HEADER) or "").strip()
    timestamp = (_header(headers, WHOOP_TIMESTAMP_HEADER) or "").strip()
    if not signature:
        raise WebhookSignatureError("missing_signature")
    if not timestamp:
        raise WebhookSignatureError("missing_timestamp")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookSignatureError("malformed_timestamp")
    try:
        provided = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError("bad_signature") from None
    expected = base64.b64decode(whoop_signature(secret, timestamp, body))
    if not hmac.compare_digest(provided, expected):
        raise WebhookSignatureError("bad_signature")
    signed_at = int(timestamp) / 1000.0  # WHOOP sends milliseconds since the epoch
    if abs(now - signed_at) > tolerance_seconds:
        raise WebhookSignatureError("stale_timestamp")


def verify_signature(
    config: WebhookConfig, headers: Mapping[str, str], body: bytes, secret: str, *, now: float
) -> None:
    """Dispatch on the provider's scheme. Always uses the raw body, never a re-serialised one."""
    if config.scheme is WebhookScheme.WHOOP:
        verify_whoop_signature(headers, body, secret, now=now, tolerance_seconds=config.tolerance_seconds)
        return
    raise config_error(config.provider, "scheme", f"{config.scheme.value!r} has no verifier")  # pragma: no cover
