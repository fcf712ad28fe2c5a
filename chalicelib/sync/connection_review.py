"""After a sync failed on the connection's credentials: count the refusal, and stop scheduling a
connection that needs the user (a refused refresh token, or too many rejections in a row)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from chalicelib.domain.config import Settings
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey
from chalicelib.providers import ProviderRegistry

logger = logging.getLogger(__name__)


class ReviewStore(Protocol):
    """What a connection's review touches: its auth failures and its datasets' schedule."""

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None: ...

    def record_auth_failure(self, connection: Connection, *, threshold: int, reason: str, now: float) -> bool: ...

    def set_schedule(self, keys: Iterable[DatasetKey], next_sync_at: float | None) -> None: ...


class ConnectionReview:
    def __init__(self, store: ReviewStore, registry: ProviderRegistry, settings: Settings) -> None:
        self._store = store
        self._registry = registry
        self._settings = settings

    def count_auth_failure(self, connection: Connection, error: str, now: float) -> None:
        threshold = self._settings.needs_review_after_auth_failures
        reason = f"the provider rejected the credentials {threshold} times in a row ({error}); update them with PUT"
        if not self._store.record_auth_failure(connection, threshold=threshold, reason=reason, now=now):
            return
        logger.warning("connection %s/%s needs review: %s", connection.user_id, connection.connection_id, error)
        self.unschedule(connection, now)

    def unschedule(self, connection: Connection, now: float) -> None:
        keys = [
            DatasetKey(connection.user_id, connection.connection_id, data_type)
            for data_type in self._registry.get(connection.provider).data_types()
        ]
        self._store.set_schedule(keys, None)
        # A PUT may have revived the connection meanwhile. It writes the connection before it reschedules,
        # so if we still see it broken here, its rescheduling comes after ours; if not, reschedule it now.
        current = self._store.get_connection(connection.user_id, connection.connection_id, consistent=True)
        if current is not None and current.status is ConnectionStatus.ACTIVE:
            self._store.set_schedule(keys, now)
