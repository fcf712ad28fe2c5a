"""Integration fixtures: the real DynamoStore against moto's DynamoDB, one behaviour per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from chalicelib.domain.config import Settings
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
