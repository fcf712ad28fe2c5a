"""Connections: create or update one (credentials sealed), list them, delete one with its data.

What one user may do to the shared service through them is bounded: at most
``max_connections_per_user`` connections, and a PUT that starts a connection's data over (a new
connection, ``reset_data``, another provider) takes one of the user's manual refreshes: over that
budget it is saved all the same, its first sync due only once the budget has room again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal, Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import ConnectionLimitError, NotFoundError, StoreBusyError, ValidationError
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, validate_id
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.policies import PolicyResolver
from chalicelib.store.shared import SharedStore
from chalicelib.store.vault import CredentialsChangedError, CredentialsUnreadableError, CredentialVault
from chalicelib.usecases.manual_sync import manual_refresh_wait
from chalicelib.usecases.responses import ApiResponse

_PUT_ATTEMPTS = 3


class ConnectionsStore(Protocol):
    """What connection changes touch: connections, their datasets and the schedule (and the refresh budget)."""

    @property
    def shared(self) -> SharedStore: ...

    def count_connections(self, user_id: str, *, up_to: int) -> int: ...

    def delete_connection(self, user_id: str, connection_id: str) -> None: ...

    def delete_connection_datasets(self, user_id: str, connection_id: str, data_types: Iterable[str]) -> int: ...

    def ensure_dataset(self, key: DatasetKey, provider: str, next_sync_at: float | None = None) -> None: ...

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None: ...

    def list_connections(self, user_id: str) -> list[Connection]: ...

    def save_connection(
        self, connection: Connection, *, previous: Connection | None, credentials_written: bool
    ) -> None: ...

    def set_schedule(self, keys: Iterable[DatasetKey], next_sync_at: float | None) -> None: ...


class Keep(Enum):
    """A field the request left out: the stored value stays (as long as the provider stays the same)."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP

SettableStatus = Literal[ConnectionStatus.ACTIVE, ConnectionStatus.PAUSED]
"""What a client may set; NEEDS_REVIEW is the sync's to set, and only new credentials clear it."""


@dataclass(frozen=True)
class ConnectionChange:
    """What a PUT of a connection asks for, parsed and checked (``chalicelib/api/requests.py`` reads the body)."""

    provider: str
    status: SettableStatus = ConnectionStatus.ACTIVE
    reset_data: bool = False
    """Delete the connection's records even though the provider stays the same."""
    credentials: Mapping[str, Any] | Keep = KEEP
    settings: Mapping[str, Any] | Keep = KEEP
    provider_user_id: str | Keep | None = KEEP
    """The account's id at the provider (webhooks name it); ``None`` clears it."""


class ConnectionService:
    def __init__(
        self,
        store: ConnectionsStore,
        registry: ProviderRegistry,
        policies: PolicyResolver,
        clock: Clock,
        vault: CredentialVault,
        settings: Settings | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._policies = policies
        self._clock = clock
        self._vault = vault
        self._settings = settings or Settings()

    def put(self, user_id: str, connection_id: str, change: ConnectionChange) -> ApiResponse:
        """Create (201) or update (200) a connection. Credentials are sealed (KMS envelope) before they are stored.

        Omitted credentials, settings or ``provider_user_id`` keep the stored ones while the
        provider stays the same, so a connection can be paused without its secrets; credentials
        sent again unchanged are kept as stored too (no new version, no reschedule). The write
        is fenced on the credentials version read: if a token refresh (or another PUT) stored
        credentials meanwhile, the PUT reads again and decides again.
        """
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        provider_name = change.provider
        provider = self._registry.get(provider_name)
        sent_credentials = None if change.credentials is KEEP else change.credentials
        sent_settings = None if change.settings is KEEP else change.settings

        sealed_sent: str | None = None
        room_checked = False
        for _ in range(_PUT_ATTEMPTS):
            existing = self._store.get_connection(user_id, connection_id, consistent=True)
            if existing is None and not room_checked:
                self._check_room(user_id)
                room_checked = True
            same_provider = existing is not None and existing.provider == provider_name
            kept = existing if existing is not None and same_provider else None
            settings = sent_settings if sent_settings is not None else (kept.settings if kept else {})
            stored: dict[str, Any] | None = None
            if kept is not None:
                try:
                    stored = self._vault.open(kept.sealed_credentials, user_id, connection_id)
                except CredentialsUnreadableError:
                    if sent_credentials is None:
                        raise  # nothing usable to keep: the user must send credentials
            if sent_credentials is not None and dict(sent_credentials) != stored:
                provider.validate_connection(sent_credentials, settings)
                if sealed_sent is None:
                    sealed_sent = self._vault.seal(sent_credentials, user_id, connection_id)
                sealed, credentials_written = sealed_sent, True
            elif kept is not None and stored is not None:
                # The stored credentials stay (sent again unchanged, or omitted): not rewritten, so a token
                # refresh storing newer ones meanwhile is not undone; checked against the new settings.
                provider.validate_connection(stored, settings)
                sealed, credentials_written = kept.sealed_credentials, False
            else:
                provider.validate_connection({}, settings)
                sealed, credentials_written = "", True
            if change.provider_user_id is not KEEP:
                provider_user_id = change.provider_user_id
            else:
                provider_user_id = kept.provider_user_id if kept else None

            now = self._clock.now()
            if existing is not None and (not same_provider or change.reset_data):
                # Another provider's (or account's) records do not belong to this connection any more.
                self._store.delete_connection_datasets(
                    user_id, connection_id, self._registry_data_types(existing.provider)
                )
            previous_version = existing.credentials_version if existing is not None else 0
            # A connection the sync found broken stays so until the user sends credentials that are new.
            review = existing is not None and existing.status is ConnectionStatus.NEEDS_REVIEW
            still_review = review and not credentials_written
            connection = Connection(
                user_id=user_id,
                connection_id=connection_id,
                provider=provider_name,
                sealed_credentials=sealed,
                credentials_version=previous_version + 1 if credentials_written else previous_version,
                provider_user_id=provider_user_id,
                settings=settings,
                status=ConnectionStatus.NEEDS_REVIEW if still_review else change.status,
                status_reason=existing.status_reason if still_review and existing is not None else None,
                auth_failures=existing.auth_failures if still_review and existing is not None else 0,
                created_at=existing.created_at if existing else now,
                updated_at=now,
            )
            try:
                self._store.save_connection(connection, previous=existing, credentials_written=credentials_written)
            except CredentialsChangedError:
                continue
            break
        else:
            raise StoreBusyError("the connection kept changing while it was being saved; try again")
        if existing is not None and (not same_provider or change.reset_data):
            # Again, now that the new connection is saved: a sync of the old one that started after the first
            # purge (it made the dataset again) is fenced out and its records go (``DatasetPurge.delete_dataset``).
            self._store.delete_connection_datasets(user_id, connection_id, self._registry_data_types(existing.provider))
        data_types = self._policies.data_types(provider_name)
        # New credentials, or a paused or broken connection coming back, are worth a sync at once
        # (credentials sent again unchanged are not new: each dataset keeps its place).
        renewed = credentials_written or (existing is not None and existing.status is not ConnectionStatus.ACTIVE)
        starts_over = existing is None or existing.provider != provider_name or change.reset_data
        due = (
            self._due_after_start_over(user_id, now)
            if starts_over and connection.status is ConnectionStatus.ACTIVE
            else now
        )
        self._schedule(connection, data_types, existing, due, renewed=renewed)
        body_out = connection.public()
        body_out["data_types"] = data_types
        return ApiResponse(200 if existing else 201, body_out)

    def _check_room(self, user_id: str) -> None:
        """A new connection must fit the user's cap (concurrent creations may pass it by the few racing)."""
        cap = self._settings.max_connections_per_user
        if self._store.count_connections(user_id, up_to=cap) >= cap:
            raise ConnectionLimitError(
                f"user {user_id!r} already has {cap} connections, the most one user may have; delete one first"
            )

    def _due_after_start_over(self, user_id: str, now: float) -> float:
        """When a connection whose data starts over is first synced: at once while the user's manual-refresh
        budget has room (taking one), else when it has room again (the PUT itself is not refused)."""
        wait = manual_refresh_wait(self._store.shared, user_id, now, self._settings)
        return now if wait is None else now + wait

    def _schedule(
        self, connection: Connection, data_types: list[str], previous: Connection | None, now: float, *, renewed: bool
    ) -> None:
        """Create the datasets up front (so reads never race to), and put them on or off the schedule.

        A new, reactivated or re-credentialed connection is due at ``now`` (at once, or when the user's
        refresh budget has room); a paused one leaves the schedule; otherwise each dataset keeps its place.
        """
        keys = {
            data_type: DatasetKey(connection.user_id, connection.connection_id, data_type) for data_type in data_types
        }
        scheduled = [
            key
            for data_type, key in keys.items()
            if self._policies.policy(connection.provider, data_type).schedule_every_seconds is not None
        ]
        active = connection.status is ConnectionStatus.ACTIVE
        for key in keys.values():
            self._store.ensure_dataset(key, connection.provider, now if active and key in scheduled else None)
        if previous is None:
            return
        if not active:
            self._store.set_schedule(keys.values(), None)
            return
        if renewed:
            self._store.set_schedule(scheduled, now)
        self._store.set_schedule([key for key in keys.values() if key not in scheduled], None)

    def _registry_data_types(self, provider: str) -> list[str]:
        """The provider's data types, or none if it was removed from the providers file."""
        try:
            return self._policies.data_types(provider)
        except ValidationError:
            return []

    def list(self, user_id: str) -> dict[str, Any]:
        validate_id("user_id", user_id)
        return {"connections": [c.public() for c in self._store.list_connections(user_id)]}

    def delete(self, user_id: str, connection_id: str) -> None:
        """Connection first: from then on no sync can create or renew its datasets (see ``ensure_dataset``)."""
        validate_id("user_id", user_id)
        validate_id("connection_id", connection_id)
        existing = self._store.get_connection(user_id, connection_id)
        existed = existing is not None
        self._store.delete_connection(user_id, connection_id)
        # Also when the connection is already gone: finishes a delete that timed out half way.
        data_types = self._registry_data_types(existing.provider) if existing is not None else []
        removed = self._store.delete_connection_datasets(user_id, connection_id, data_types)
        if not existed and removed == 0:
            raise NotFoundError(f"connection {connection_id!r} not found")
