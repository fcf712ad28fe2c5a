"""Inbound provider webhooks: verify the provider's signature, then queue a targeted background sync.

A webhook is only a hint that a dataset changed upstream. It never carries data
we store: the sync it queues pulls the records through the provider's API like
any other sync, so a forged or replayed webhook could at worst cause a sync.
Even that is refused: every webhook must carry a valid, fresh provider signature.

Configuration lives in the provider's entry of the providers file::

    "webhooks": {
      "scheme": "whoop",
      "secret_env": "WHOOP_CLIENT_SECRET",
      "user_id_field": "user_id",
      "event_type_field": "type",
      "events": {"recovery.updated": "recovery", "workout.updated": ["workout", "cycle"]},
      "tolerance_seconds": 300
    }

``events`` maps a provider event type to the data type(s) it changes; any other
event type is acknowledged and ignored. The secret is read from the named
environment variable when a webhook arrives (deployment configuration, never a
connection's credentials).

WHOOP (scheme ``whoop``, developer.whoop.com/docs/developing/webhooks): each
POST carries ``X-WHOOP-Signature`` = base64(HMAC-SHA256(client secret,
``X-WHOOP-Signature-Timestamp`` + raw body)); the timestamp is milliseconds since
the epoch. The v2 body is ``{"user_id": <int64>, "id": <uuid>, "type":
"<object>.updated|deleted", "trace_id": "<uuid>"}`` for ``sleep``, ``workout``
and ``recovery`` (a v2 recovery event carries the id of its sleep). WHOOP retries
a delivery that gets no 2xx, so anything we deliberately ignore gets a 202.

``*.deleted`` events: WHOOP's collection endpoints return no tombstones, and a
webhook-queued sync is incremental (it only asks for records updated since the
watermark), so it cannot see a deletion; only the periodic full pass
(``full_resync_seconds``) sweeps deleted records out. The shipped configuration
therefore leaves ``*.deleted`` unmapped (acknowledged, no sync). An operator may
still map them: the configuration accepts any event name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.config import ConfigurationError
from chalicelib.domain.errors import (
    AuthenticationError,
    ClaimNotWonError,
    DatasetNotFoundError,
    NotFoundError,
    QueueUnavailableError,
    ValidationError,
)
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, Trigger
from chalicelib.domain.policy import SyncPolicy
from chalicelib.providers import ProviderRegistry

logger = logging.getLogger(__name__)

WHOOP_SIGNATURE_HEADER = "X-WHOOP-Signature"
WHOOP_TIMESTAMP_HEADER = "X-WHOOP-Signature-Timestamp"

ACCEPTED: dict[str, str] = {"status": "accepted"}
"""The one answer to every verified webhook, whether or not it matched a connection (no user oracle)."""

MAX_WEBHOOK_BODY_BYTES = 65_536
"""WHOOP's bodies are ~150 bytes; anything near this is not a notification."""

_MAX_TIMESTAMP_DIGITS = 16
_MAX_PROVIDER_USER_ID_CHARS = 256
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class WebhookScheme(StrEnum):
    WHOOP = "whoop"


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookConfig:
    provider: str
    scheme: WebhookScheme
    secret_env: str
    """Name of the environment variable holding the signing secret (never the secret itself)."""
    user_id_field: str
    event_type_field: str
    events: Mapping[str, tuple[str, ...]]
    """Event type -> the data types it changes."""
    tolerance_seconds: int
    """How far the signed timestamp may be from our clock, either way, before it is a replay (or a skew)."""


_CONFIG_KEYS = frozenset({"scheme", "secret_env", "user_id_field", "event_type_field", "events", "tolerance_seconds"})
_DEFAULT_TOLERANCE_SECONDS = 300
_MAX_TOLERANCE_SECONDS = 3600


def _config_error(provider: str, key: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"provider {provider!r}: webhooks.{key} {problem}")


def _field_name(provider: str, raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise _config_error(provider, key, "must be a non-empty string")
    return value


def _event_data_types(provider: str, event: str, value: Any, data_types: Collection[str]) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise _config_error(provider, f"events[{event!r}]", "must be a data type or a non-empty list of data types")
    unknown = sorted(set(names) - set(data_types))
    if unknown:
        raise _config_error(
            provider,
            f"events[{event!r}]",
            f"names unknown data type(s) {', '.join(unknown)} (the provider has: {', '.join(sorted(data_types))})",
        )
    return tuple(dict.fromkeys(names))  # keep the order, drop repeats


def parse_webhook_config(provider: str, raw: Mapping[str, Any], data_types: Collection[str]) -> WebhookConfig:
    """Validate a provider's ``webhooks`` entry strictly; ``ConfigurationError`` names the provider and key."""
    unknown = sorted(set(raw) - _CONFIG_KEYS)
    if unknown:
        raise _config_error(provider, unknown[0], f"is not a known key (known: {', '.join(sorted(_CONFIG_KEYS))})")
    try:
        scheme = WebhookScheme(str(raw.get("scheme")))
    except ValueError:
        known = ", ".join(s.value for s in WebhookScheme)
        raise _config_error(provider, "scheme", f"must be one of: {known}") from None
    secret_env = raw.get("secret_env")
    if not isinstance(secret_env, str) or not _ENV_NAME.match(secret_env):
        raise _config_error(provider, "secret_env", "must name an environment variable (letters, digits, _)")
    events = raw.get("events")
    if not isinstance(events, Mapping) or not events:
        raise _config_error(provider, "events", "must be a non-empty object of event type -> data type(s)")
    parsed_events: dict[str, tuple[str, ...]] = {}
    for event, value in events.items():
        if not isinstance(event, str) or not event:
            raise _config_error(provider, "events", "has an empty event type")
        parsed_events[event] = _event_data_types(provider, event, value, data_types)
    tolerance = raw.get("tolerance_seconds", _DEFAULT_TOLERANCE_SECONDS)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 1 <= tolerance <= _MAX_TOLERANCE_SECONDS:
        raise _config_error(provider, "tolerance_seconds", f"must be a whole number from 1 to {_MAX_TOLERANCE_SECONDS}")
    return WebhookConfig(
        provider=provider,
        scheme=scheme,
        secret_env=secret_env,
        user_id_field=_field_name(provider, raw, "user_id_field", "user_id"),
        event_type_field=_field_name(provider, raw, "event_type_field", "type"),
        events=parsed_events,
        tolerance_seconds=tolerance,
    )


def read_secret(config: WebhookConfig, environ: Mapping[str, str]) -> str:
    """The signing secret from the deployment's environment; a missing one is a misconfiguration (500)."""
    secret = environ.get(config.secret_env, "")
    if not secret:
        raise _config_error(config.provider, "secret_env", f"names {config.secret_env}, which is not set")
    return secret


# --- signatures ------------------------------------------------------------------------------------


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
    raise _config_error(config.provider, "scheme", f"{config.scheme.value!r} has no verifier")  # pragma: no cover


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    event_type: str
    provider_user_id: str
    """The provider's id for the user, as text (WHOOP sends an int64)."""
    data_types: tuple[str, ...]
    """What to sync; empty when the event type is not mapped (acknowledged and ignored)."""


def _provider_user_id(value: Any, field_name: str) -> str:
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"webhook body has no usable {field_name}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= _MAX_PROVIDER_USER_ID_CHARS and value.isprintable():
        return value
    raise ValidationError(f"webhook body has no usable {field_name}")


def parse_event(config: WebhookConfig, body: bytes) -> WebhookEvent:
    """Read a verified body: ``ValidationError`` (400) when it is not a JSON object with a user id and event type."""
    if len(body) > MAX_WEBHOOK_BODY_BYTES:
        raise ValidationError(f"webhook body must be at most {MAX_WEBHOOK_BODY_BYTES} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ValidationError("webhook body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ValidationError("webhook body must be a JSON object")
    user_id = _provider_user_id(payload.get(config.user_id_field), config.user_id_field)
    event_type = payload.get(config.event_type_field)
    if not isinstance(event_type, str) or not event_type:
        raise ValidationError(f"webhook body has no usable {config.event_type_field}")
    return WebhookEvent(event_type, user_id, config.events.get(event_type, ()))


# --- the use case ----------------------------------------------------------------------------------


class ConnectionsByProviderUser(Protocol):
    def find_connections_by_provider_user(self, provider: str, provider_user_id: str) -> Iterable[Connection]: ...


class PolicySource(Protocol):
    def policy(self, provider: str, data_type: str) -> SyncPolicy: ...


class BackgroundSyncs(Protocol):
    def queue_background(
        self,
        key: DatasetKey,
        provider: str,
        policy: SyncPolicy,
        *,
        trigger: Trigger,
        respect_cooldown: bool = True,
    ) -> str: ...


@dataclass(frozen=True)
class WebhookOutcome:
    """What one verified webhook did (the HTTP answer is always ``ACCEPTED``; this is for logs and tests)."""

    event_type: str
    data_types: tuple[str, ...]
    connections: int
    """Active connections of the provider user the event was about."""
    queued: int
    """Background syncs this webhook queued."""
    already_pending: int
    """Datasets whose sync was already running or queued (single flight: nothing more to do)."""


class WebhookReceiver:
    def __init__(
        self,
        registry: ProviderRegistry,
        connections: ConnectionsByProviderUser,
        policies: PolicySource,
        syncs: BackgroundSyncs,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._registry = registry
        self._connections = connections
        self._policies = policies
        self._syncs = syncs
        self._clock = clock
        self._environ = environ
        self._configs: dict[str, WebhookConfig] = {}
        self._lock = threading.Lock()

    def config(self, provider: str) -> WebhookConfig:
        """The provider's validated webhook configuration; ``NotFoundError`` when it takes no webhooks."""
        with self._lock:
            cached = self._configs.get(provider)
        if cached is not None:
            return cached
        raw = self._registry.webhook_config(provider)
        if raw is None:
            raise NotFoundError("this provider takes no webhooks here")
        data_types = self._registry.get(provider).data_types()
        parsed = parse_webhook_config(provider, raw, list(data_types))
        with self._lock:
            self._configs[provider] = parsed
        return parsed

    def receive(self, provider: str, headers: Mapping[str, str], body: bytes) -> WebhookOutcome:
        """Verify, parse and act on one webhook. Never logs the secret, the signature or the body."""
        config = self.config(provider)
        secret = read_secret(config, os.environ if self._environ is None else self._environ)
        try:
            verify_signature(config, headers, body, secret, now=self._clock.now())
        except WebhookSignatureError as exc:
            logger.debug("webhook rejected: provider=%s reason=%s", provider, exc.reason)
            raise
        event = parse_event(config, body)
        if not event.data_types:
            logger.debug("webhook ignored: provider=%s event=%s (not mapped)", provider, event.event_type)
            return WebhookOutcome(event.event_type, (), 0, 0, 0)
        outcome = self._queue_syncs(provider, event)
        logger.debug(
            "webhook accepted: provider=%s event=%s matched=%s queued=%d",
            provider,
            event.event_type,
            outcome.connections > 0,
            outcome.queued,
        )
        return outcome

    def _queue_syncs(self, provider: str, event: WebhookEvent) -> WebhookOutcome:
        matched = [
            connection
            for connection in self._connections.find_connections_by_provider_user(provider, event.provider_user_id)
            # Paused and broken connections are not synced by anyone; the index may also be briefly stale.
            if connection.provider == provider and connection.status is ConnectionStatus.ACTIVE
        ]
        queued = already_pending = 0
        queue_failed = False
        policies = {data_type: self._policies.policy(provider, data_type) for data_type in event.data_types}
        for connection in matched:
            for data_type, policy in policies.items():
                key = DatasetKey(connection.user_id, connection.connection_id, data_type)
                try:
                    self._syncs.queue_background(key, provider, policy, trigger=Trigger.WEBHOOK, respect_cooldown=False)
                    queued += 1
                except ClaimNotWonError:
                    already_pending += 1  # running or queued already: that sync will see this change too
                except DatasetNotFoundError:
                    pass  # the connection was deleted since the lookup
                except QueueUnavailableError:
                    queue_failed = True  # try the rest; then ask the provider to deliver again
        if queue_failed:
            # A 503 makes the provider redeliver; the datasets already queued then answer "already pending".
            raise QueueUnavailableError("a background sync could not be queued; deliver the webhook again")
        return WebhookOutcome(event.event_type, event.data_types, len(matched), queued, already_pending)
