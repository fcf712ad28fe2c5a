"""Integration fixtures: the real DynamoStore against moto's DynamoDB, one behaviour per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from chalicelib.domain.config import Settings
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import bind_models, create_tables
from local.moto_atomic import make_moto_dynamodb_atomic


@pytest.fixture(autouse=True, scope="session")
def _atomic_moto() -> None:
    make_moto_dynamodb_atomic()


@pytest.fixture
def store() -> Iterator[DynamoStore]:
    with mock_aws():
        bind_models(Settings())
        create_tables()
        yield DynamoStore()


def saved_connection(store: DynamoStore, key: DatasetKey, provider: str, now: float) -> Connection:
    """An active connection for ``key``'s user and connection id, stored as a PUT would (sealed credentials v1)."""
    connection = Connection(
        user_id=key.user_id,
        connection_id=key.connection_id,
        provider=provider,
        settings={},
        status=ConnectionStatus.ACTIVE,
        status_reason=None,
        created_at=now,
        updated_at=now,
        sealed_credentials="sealed",
        credentials_version=1,
    )
    store.save_connection(connection, previous=None, credentials_written=True)
    return connection
