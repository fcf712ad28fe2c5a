"""The connection item's credential conditions against moto: the refresh lease, the version fence, the PUT."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.domain.model import Connection, ConnectionStatus
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import ConnectionItem
from chalicelib.store.vault import CredentialsChangedError, RefreshNotWonError

T0 = 1_767_225_600.0
TTL = 30.0
USER, CONN = "u1", "c1"


def _connection(**changes: object) -> Connection:
    base = Connection(
        user_id=USER,
        connection_id=CONN,
        provider="whoop",
        settings={},
        status=ConnectionStatus.ACTIVE,
        status_reason=None,
        created_at=T0,
        updated_at=T0,
        sealed_credentials="sealed-v1",
        credentials_version=1,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _created(store: DynamoStore, **changes: object) -> Connection:
    connection = _connection(**changes)
    store.save_connection(connection, previous=None, credentials_written=True)
    return connection


def test_a_free_refresh_lease_is_taken(store: DynamoStore) -> None:
    # Given a connection at credentials version 1 with no refresh running
    _created(store)
    # When instance A takes the refresh lease for version 1
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # Then A holds it until now + TTL
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None
    assert (stored.refresh_owner, stored.refresh_expires_at) == ("A", T0 + TTL)


def test_a_second_taker_is_refused_while_the_lease_is_live(store: DynamoStore) -> None:
    # Given A holds the refresh lease
    _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # When B tries to take it one second before it expires
    with pytest.raises(RefreshNotWonError):
        store.take_refresh_lease(USER, CONN, "B", seen_version=1, now=T0 + TTL - 1, ttl_seconds=TTL)
    # Then A still holds it
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and stored.refresh_owner == "A"


def test_an_expired_lease_is_taken_over(store: DynamoStore) -> None:
    # Given A took the lease and never finished
    _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # When B tries at the instant it expires
    store.take_refresh_lease(USER, CONN, "B", seen_version=1, now=T0 + TTL, ttl_seconds=TTL)
    # Then B holds it now
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None
    assert (stored.refresh_owner, stored.refresh_expires_at) == ("B", T0 + 2 * TTL)


def test_a_lease_for_credentials_that_moved_on_is_refused(store: DynamoStore) -> None:
    # Given the stored credentials are at version 2 (someone refreshed after we read version 1)
    _created(store, credentials_version=2)
    # When we try to take the lease for version 1
    with pytest.raises(RefreshNotWonError):
        store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # Then nothing was taken
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and stored.refresh_owner is None


def test_a_lease_on_a_deleted_connection_is_refused(store: DynamoStore) -> None:
    # Given a connection that was deleted after we read it
    _created(store)
    store.delete_connection(USER, CONN)
    # When we try to take its refresh lease
    with pytest.raises(RefreshNotWonError):
        store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # Then the update did not bring the item back
    assert store.stored_credentials(USER, CONN) is None


def test_the_holder_stores_the_next_version_and_frees_the_lease(store: DynamoStore) -> None:
    # Given A holds the lease for version 1
    _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # When A stores the refreshed credentials
    version = store.finish_refresh(USER, CONN, "A", seen_version=1, sealed="sealed-v2")
    # Then they are version 2, the lease is gone, and updated_at still says when the user last PUT it
    stored = store.stored_credentials(USER, CONN)
    connection = store.get_connection(USER, CONN)
    assert version == 2
    assert stored is not None and (stored.sealed, stored.version, stored.refresh_owner) == ("sealed-v2", 2, None)
    assert connection is not None and connection.updated_at == T0


def test_a_put_with_credentials_fences_out_a_refresh_that_began_before_it(store: DynamoStore) -> None:
    # Given A took the lease for version 1, then the user PUT new credentials (version 2)
    previous = _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    put = _connection(sealed_credentials="sealed-by-user", credentials_version=2, updated_at=T0 + 5)
    store.save_connection(put, previous=previous, credentials_written=True)
    # When A tries to store what its token call returned
    with pytest.raises(CredentialsChangedError):
        store.finish_refresh(USER, CONN, "A", seen_version=1, sealed="sealed-by-refresh")
    # Then the user's credentials stay, with no lease left behind
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and (stored.sealed, stored.version, stored.refresh_owner) == ("sealed-by-user", 2, None)


def test_a_put_without_credentials_leaves_a_running_refresh_alone(store: DynamoStore) -> None:
    # Given A took the lease for version 1, then the user paused the connection without sending credentials
    previous = _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    paused = _connection(status=ConnectionStatus.PAUSED, updated_at=T0 + 5)
    store.save_connection(paused, previous=previous, credentials_written=False)
    # When A stores what its token call returned
    store.finish_refresh(USER, CONN, "A", seen_version=1, sealed="sealed-by-refresh")
    # Then the rotated credentials are kept, and so is the pause
    connection = store.get_connection(USER, CONN)
    assert connection is not None
    assert (connection.sealed_credentials, connection.credentials_version) == ("sealed-by-refresh", 2)
    assert connection.status is ConnectionStatus.PAUSED


def test_a_put_with_credentials_read_before_a_refresh_stored_is_refused(store: DynamoStore) -> None:
    # Given a PUT read version 1, and a refresh stored version 2 before the PUT wrote
    previous = _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    store.finish_refresh(USER, CONN, "A", seen_version=1, sealed="sealed-by-refresh")
    # When the PUT writes its credentials as version 2
    put = _connection(sealed_credentials="sealed-by-user", credentials_version=2)
    with pytest.raises(CredentialsChangedError):
        store.save_connection(put, previous=previous, credentials_written=True)
    # Then nothing was overwritten (the PUT reads again and retries)
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and (stored.sealed, stored.version) == ("sealed-by-refresh", 2)


def test_a_holder_whose_lease_was_taken_over_cannot_store(store: DynamoStore) -> None:
    # Given A's lease expired and B took it over
    _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    store.take_refresh_lease(USER, CONN, "B", seen_version=1, now=T0 + TTL + 1, ttl_seconds=TTL)
    # When A, late, tries to store
    with pytest.raises(CredentialsChangedError):
        store.finish_refresh(USER, CONN, "A", seen_version=1, sealed="sealed-by-A")
    # Then B's lease and the stored credentials are untouched
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and (stored.sealed, stored.version, stored.refresh_owner) == ("sealed-v1", 1, "B")


def test_creating_a_connection_that_already_exists_is_refused(store: DynamoStore) -> None:
    # Given a connection another PUT created a moment ago
    _created(store)
    # When a second PUT that read "no connection" creates it too
    with pytest.raises(CredentialsChangedError):
        store.save_connection(_connection(sealed_credentials="other"), previous=None, credentials_written=True)
    # Then the first one stays
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and stored.sealed == "sealed-v1"


def test_a_refused_refresh_token_marks_the_connection_needs_review(store: DynamoStore) -> None:
    # Given A holds the lease for version 1
    _created(store)
    store.take_refresh_lease(USER, CONN, "A", seen_version=1, now=T0, ttl_seconds=TTL)
    # When the provider refuses the refresh token
    marked = store.refuse_refresh(USER, CONN, seen_version=1, reason="refused")
    # Then the connection needs review at once, the lease is gone and the credentials are as they were
    stored = store.stored_credentials(USER, CONN)
    assert marked is True
    assert stored is not None
    assert (stored.status, stored.status_reason) == (ConnectionStatus.NEEDS_REVIEW, "refused")
    assert (stored.refresh_owner, stored.version, stored.sealed) == (None, 1, "sealed-v1")


def test_a_refusal_for_credentials_replaced_meanwhile_changes_nothing(store: DynamoStore) -> None:
    # Given the user PUT new credentials (version 2) while the refresh of version 1 was refused
    _created(store, credentials_version=2)
    # When the refusal is recorded for version 1
    marked = store.refuse_refresh(USER, CONN, seen_version=1, reason="refused")
    # Then the connection stays ACTIVE with the user's credentials
    stored = store.stored_credentials(USER, CONN)
    assert marked is False
    assert stored is not None and stored.status is ConnectionStatus.ACTIVE


def test_releasing_a_lease_someone_else_holds_changes_nothing(store: DynamoStore) -> None:
    # Given B holds the lease
    _created(store)
    store.take_refresh_lease(USER, CONN, "B", seen_version=1, now=T0, ttl_seconds=TTL)
    # When A releases "its" lease
    store.release_refresh_lease(USER, CONN, "A")
    # Then B still holds it
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and stored.refresh_owner == "B"


def test_an_item_from_before_credential_versions_can_be_refreshed(store: DynamoStore) -> None:
    # Given a connection item written before credentials had versions (no credentials_version attribute)
    _created(store, credentials_version=0)
    ConnectionItem(USER, CONN).update(actions=[ConnectionItem.credentials_version.remove()])
    # When the lease is taken for version 0
    store.take_refresh_lease(USER, CONN, "A", seen_version=0, now=T0, ttl_seconds=TTL)
    # Then it is held
    stored = store.stored_credentials(USER, CONN)
    assert stored is not None and (stored.version, stored.refresh_owner) == (0, "A")


def test_connections_are_found_by_their_provider_user(store: DynamoStore) -> None:
    # Given two users connected to the same WHOOP account, one Binance account with the same id, and one without
    _created(store, provider_user_id="10129")
    store.save_connection(
        _connection(user_id="u2", connection_id="w", provider_user_id="10129"), previous=None, credentials_written=True
    )
    store.save_connection(
        _connection(connection_id="b", provider="binance", provider_user_id="10129"),
        previous=None,
        credentials_written=True,
    )
    store.save_connection(_connection(connection_id="none"), previous=None, credentials_written=True)
    # When a WHOOP webhook names user 10129
    found = store.find_connections_by_provider_user("whoop", "10129")
    # Then both WHOOP connections are found, and only they
    assert [(c.user_id, c.connection_id, c.provider_user_id) for c in found] == [
        ("u1", "c1", "10129"),
        ("u2", "w", "10129"),
    ]


def test_a_connection_whose_provider_user_was_cleared_is_no_longer_found(store: DynamoStore) -> None:
    # Given a connection that named its provider user, then was PUT without one
    previous = _created(store, provider_user_id="10129")
    store.save_connection(_connection(provider_user_id=None), previous=previous, credentials_written=False)
    # When the provider user is looked up
    found = store.find_connections_by_provider_user("whoop", "10129")
    # Then it is not found
    assert found == []
