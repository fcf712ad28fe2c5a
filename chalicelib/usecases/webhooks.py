"""Inbound provider webhooks: verify the provider's signature, then queue a targeted background sync.

A webhook is only a hint that a dataset changed upstream. It never carries data
we store: the sync it queues pulls the records through the provider's API like
any other sync, so a forged or replayed webhook could at worst cause a sync.
Even that is refused: every webhook must carry a valid, fresh provider signature
(``webhook_signatures.py``), checked against the provider's configuration (``webhook_config.py``).

WHOOP's v2 body is ``{"user_id": <int64>, "id": <uuid>, "type":
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

import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import (
    ClaimNotWonError,
    DatasetNotFoundError,
    NotFoundError,
    QueueUnavailableError,
    ValidationError,
)
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, Trigger
from chalicelib.domain.policy import SyncPolicy
from chalicelib.providers import ProviderRegistry
from chalicelib.usecases.webhook_config import WebhookConfig, parse_webhook_config, read_secret
from chalicelib.usecases.webhook_signatures import WebhookSignatureError, verify_signature

logger = logging.getLogger(__name__)

ACCEPTED: dict[str, str] = {"status": "accepted"}
"""The one answer to every verified webhook, whether or not it matched a connection (no user oracle)."""

MAX_WEBHOOK_BODY_BYTES = 65_536
"""WHOOP's bodies are ~150 bytes; anything near this is not a notification."""

_MAX_PROVIDER_USER_ID_CHARS = 256


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
