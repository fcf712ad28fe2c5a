"""Connections: their settings and status, their sealed credentials and the token refresh lease,
the provider-user index for webhooks, and the count of rejected credentials."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pynamodb.exceptions import DeleteError

from chalicelib.domain.model import (
    Connection,
    ConnectionStatus,
)
from chalicelib.store.conditions import (
    chunks,
    connection_absent,
    connection_exists,
    credentials_actions,
    credentials_version_is,
    refresh_lease_cleared,
    refresh_lease_free,
    refresh_lease_owned_by,
    update_if,
)
from chalicelib.store.convert import (
    CREDENTIAL_ATTRIBUTES,
    connection_from_item,
    provider_user_key,
    stored_credentials_from_item,
)
from chalicelib.store.items import (
    ConnectionItem,
)
from chalicelib.store.vault import CredentialsChangedError, RefreshNotWonError, StoredCredentials


class ConnectionStore:
    """Connections, their sealed credentials and the token refresh lease, their health."""

    def put_connection(self, connection: Connection) -> None:
        """Write the whole item, unconditionally (tools and tests). The API's PUT uses ``save_connection``."""
        ConnectionItem(
            connection.user_id,
            connection.connection_id,
            provider=connection.provider,
            credentials_sealed=connection.sealed_credentials or None,
            credentials_version=connection.credentials_version,
            provider_user_id=connection.provider_user_id,
            provider_user_key=(
                provider_user_key(connection.provider, connection.provider_user_id)
                if connection.provider_user_id
                else None
            ),
            settings_json=json.dumps(dict(connection.settings)),
            status=connection.status.value,
            status_reason=connection.status_reason,
            auth_failures=connection.auth_failures,
            created_at=connection.created_at,
            updated_at=connection.updated_at,
        ).save()

    def save_connection(
        self, connection: Connection, *, previous: Connection | None, credentials_written: bool
    ) -> None:
        """A user's PUT, as one conditional update of what they may set.

        ``previous`` is the connection as the caller read it (``None``: it must not exist yet).
        With ``credentials_written`` the sealed blob and ``credentials_version`` (already
        bumped by the caller) are written too, fenced on the version read, and any refresh
        lease is dropped, so a refresh that began before this PUT cannot store over it.
        Without, the blob, its version and a running refresh are left alone. Raises
        ``CredentialsChangedError`` when the item changed in a way that matters: read again.
        """
        if previous is None and not credentials_written:
            raise ValueError("a new connection writes its credentials (none is a value too)")
        actions: list[Any] = [
            ConnectionItem.provider.set(connection.provider),
            ConnectionItem.settings_json.set(json.dumps(dict(connection.settings))),
            ConnectionItem.status.set(connection.status.value),
            ConnectionItem.status_reason.set(connection.status_reason)
            if connection.status_reason
            else ConnectionItem.status_reason.remove(),
            ConnectionItem.auth_failures.set(connection.auth_failures),
            ConnectionItem.created_at.set(connection.created_at),
            ConnectionItem.updated_at.set(connection.updated_at),
        ]
        if connection.provider_user_id:
            actions += [
                ConnectionItem.provider_user_id.set(connection.provider_user_id),
                ConnectionItem.provider_user_key.set(
                    provider_user_key(connection.provider, connection.provider_user_id)
                ),
            ]
        else:
            actions += [ConnectionItem.provider_user_id.remove(), ConnectionItem.provider_user_key.remove()]
        if previous is None:
            condition = connection_absent()
        elif credentials_written:
            condition = credentials_version_is(previous.credentials_version)
        else:
            condition = connection_exists()
        if credentials_written:
            actions += credentials_actions(connection.sealed_credentials, connection.credentials_version)
        handle = ConnectionItem(connection.user_id, connection.connection_id)
        if not update_if(handle, actions, condition):
            raise CredentialsChangedError(
                f"connection {connection.connection_id!r} changed while it was being saved; try again"
            )

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None:
        try:
            return connection_from_item(ConnectionItem.get(user_id, connection_id, consistent_read=consistent))
        except ConnectionItem.DoesNotExist:
            return None

    def list_connections(self, user_id: str) -> list[Connection]:
        return [connection_from_item(item) for item in ConnectionItem.query(user_id)]

    def count_connections(self, user_id: str, *, up_to: int) -> int:
        """How many connections the user has, counted up to ``up_to`` (one Query that returns no items)."""
        return ConnectionItem.count(user_id, consistent_read=True, limit=up_to)

    def delete_connection(self, user_id: str, connection_id: str) -> None:
        with contextlib.suppress(DeleteError):
            ConnectionItem(user_id, connection_id).delete()

    def find_connections_by_provider_user(self, provider: str, provider_user_id: str) -> list[Connection]:
        """The connections whose account at ``provider`` is ``provider_user_id`` (an inbound webhook's target).

        The index holds keys only and lags writes, so each item is read again (consistently)
        and kept only if it still names this provider user.
        """
        wanted = provider_user_key(provider, provider_user_id)
        keys = {(item.user_id, item.connection_id) for item in ConnectionItem.by_provider_user.query(wanted)}
        found: list[Connection] = []
        for chunk in chunks(sorted(keys), 100):
            for item in ConnectionItem.batch_get(chunk, consistent_read=True):
                if item.provider_user_key == wanted:
                    found.append(connection_from_item(item))
        return sorted(found, key=lambda c: (c.user_id, c.connection_id))

    def stored_credentials(self, user_id: str, connection_id: str) -> StoredCredentials | None:
        """The credential fields as they are now (a consistent read); ``None`` once the connection is deleted."""
        try:
            item = ConnectionItem.get(
                user_id, connection_id, consistent_read=True, attributes_to_get=CREDENTIAL_ATTRIBUTES
            )
        except ConnectionItem.DoesNotExist:
            return None
        return stored_credentials_from_item(item)

    def take_refresh_lease(
        self, user_id: str, connection_id: str, owner: str, *, seen_version: int, now: float, ttl_seconds: float
    ) -> None:
        """Become the one instance that spends the refresh token of credentials version ``seen_version``.

        ``RefreshNotWonError`` when another instance holds a live lease, or the credentials
        moved on since they were read (a refresh or a PUT stored newer ones).
        """
        handle = ConnectionItem(user_id, connection_id)
        actions = [ConnectionItem.refresh_owner.set(owner), ConnectionItem.refresh_expires_at.set(now + ttl_seconds)]
        if not update_if(handle, actions, credentials_version_is(seen_version) & refresh_lease_free(now)):
            raise RefreshNotWonError(f"the token refresh of connection {connection_id!r} is not ours to do now")

    def finish_refresh(self, user_id: str, connection_id: str, owner: str, *, seen_version: int, sealed: str) -> int:
        """Store the refreshed credentials as version ``seen_version + 1`` and drop the lease; returns the version.

        Only while ``owner`` still holds the lease and nobody stored other credentials
        (``CredentialsChangedError`` otherwise: the caller must not use what it got).
        ``updated_at`` stays: it is when the user last PUT the connection.
        """
        version = seen_version + 1
        condition = credentials_version_is(seen_version) & refresh_lease_owned_by(owner)
        if not update_if(ConnectionItem(user_id, connection_id), credentials_actions(sealed, version), condition):
            raise CredentialsChangedError(
                f"the credentials of connection {connection_id!r} changed during the token refresh"
            )
        return version

    def release_refresh_lease(self, user_id: str, connection_id: str, owner: str) -> None:
        """Give the lease back without storing anything (the token endpoint failed); a lost lease is not an error."""
        update_if(ConnectionItem(user_id, connection_id), refresh_lease_cleared(), refresh_lease_owned_by(owner))

    def refuse_refresh(self, user_id: str, connection_id: str, *, seen_version: int, reason: str) -> bool:
        """The provider refused the refresh token of ``seen_version``: NEEDS_REVIEW now, lease dropped.

        ``False`` when the credentials changed meanwhile (the user connected again): nothing is written.
        """
        return update_if(
            ConnectionItem(user_id, connection_id),
            [
                ConnectionItem.status.set(ConnectionStatus.NEEDS_REVIEW.value),
                ConnectionItem.status_reason.set(reason[:500]),
                *refresh_lease_cleared(),
            ],
            credentials_version_is(seen_version),
        )

    def record_auth_failure(self, connection: Connection, *, threshold: int, reason: str, now: float) -> bool:
        """Count a provider 401/403 against the connection; ``True`` when this one made it NEEDS_REVIEW.

        Conditioned on the connection being the one the sync used (same ``updated_at``):
        a failure with credentials the user has since replaced does not count.
        """
        handle = ConnectionItem(connection.user_id, connection.connection_id)
        same_version = (ConnectionItem.updated_at == connection.updated_at) & (
            ConnectionItem.status == ConnectionStatus.ACTIVE.value
        )
        if not update_if(handle, [ConnectionItem.auth_failures.add(1)], same_version):
            return False
        if int(handle.auth_failures or 0) < threshold:
            return False
        return update_if(
            handle,
            [
                ConnectionItem.status.set(ConnectionStatus.NEEDS_REVIEW.value),
                ConnectionItem.status_reason.set(reason[:500]),
                ConnectionItem.updated_at.set(now),
            ],
            same_version,
        )

    def reset_auth_failures(self, connection: Connection) -> None:
        update_if(
            ConnectionItem(connection.user_id, connection.connection_id),
            [ConnectionItem.auth_failures.set(0)],
            ConnectionItem.updated_at == connection.updated_at,
        )
