"""Functional fixtures: moto for DynamoDB and SQS, chalice.test.Client for routes and handlers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from app import JOB_QUEUE_NAME, app
from chalicelib.api.auth import issue_token
from chalicelib.container import Container, build_container, set_container
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import Settings
from chalicelib.domain.upstream import FetchRequest
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.demo import DemoProvider
from chalicelib.store.items import create_tables
from local.counting_provider import CountingProvider
from local.moto_atomic import make_moto_dynamodb_atomic

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256"
TEST_KMS_ALIAS = "alias/smart-sync-test"


@dataclass
class Harness:
    container: Container
    clock: Any
    client: Client
    sqs: Any
    queue_url: str
    kms: Any = None
    """The moto KMS client the harness made its credentials key with (count or inspect calls through it)."""

    @property
    def settings(self) -> Settings:
        return self.container.settings

    def headers(self, user_id: str = "u1", *, operator: bool = False) -> dict[str, str]:
        token = issue_token(self.settings, user_id, self.clock.now(), operator=operator)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def put_connection(
        self, user_id: str = "u1", connection_id: str = "c1", provider: str = "demo", **body: Any
    ) -> Any:
        payload = {"provider": provider, "credentials": {"token": "secret-demo-token"}, **body}
        return self.client.http.put(
            f"/users/{user_id}/connections/{connection_id}", headers=self.headers(user_id), body=json.dumps(payload)
        )

    def read(self, path: str, user_id: str = "u1") -> Any:
        return self.client.http.get(path, headers=self.headers(user_id))

    def queued_bodies(self) -> list[str]:
        """Take every message off the (moto) queue."""
        bodies: list[str] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def deliver(self, bodies: list[str]) -> Any:
        """Invoke the worker Lambda the way SQS would.

        chalice.test gives every record the same messageId; SQS never does, and partial batch
        failures are reported by messageId, so each record gets its own (``msg-0``, ``msg-1``...).
        """
        event = self.client.events.generate_sqs_event(message_bodies=bodies, queue_name=JOB_QUEUE_NAME)
        for index, record in enumerate(event["Records"]):
            record["messageId"] = f"msg-{index}"
        return self.client.lambda_.invoke("sync_worker", event)

    def tick(self) -> dict[str, Any]:
        """Fire the EventBridge schedule's Lambda once; returns its summary."""
        event = self.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        result: dict[str, Any] = self.client.lambda_.invoke("sync_schedule", event).payload
        return result

    def operator(self, method: str, path: str) -> Any:
        call = getattr(self.client.http, method.lower())
        return call(path, headers=self.headers("ops", operator=True))

    def sync_everything_due(self) -> dict[str, Any]:
        """One tick, then the worker runs every job it queued."""
        summary = self.tick()
        bodies = self.queued_bodies()
        if bodies:
            payload = self.deliver(bodies).payload
            assert payload == {"batchItemFailures": []}, payload
        return summary


def counting_demo(
    before_fetch: Callable[[FetchRequest], None] | None = None,
) -> tuple[ProviderRegistry, CountingProvider]:
    provider = CountingProvider(DemoProvider(), before_fetch)
    return ProviderRegistry({"demo": provider}), provider


@pytest.fixture(autouse=True, scope="session")
def _atomic_moto() -> None:
    make_moto_dynamodb_atomic()


@pytest.fixture
def settings() -> Settings:
    # The demo provider is off unless enabled (the prod stage leaves it out); the tests use it throughout.
    return Settings(jwt_secret=TEST_SECRET, join_poll_interval_seconds=0.01, demo_provider=True)


@pytest.fixture
def make_harness(settings: Settings) -> Iterator[Callable[..., Harness]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName=JOB_QUEUE_NAME)["QueueUrl"]
        # Credentials are sealed with a KMS key, as in the deployed stack (found through its alias).
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key(Description="smart-sync test credentials key")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=TEST_KMS_ALIAS, TargetKeyId=key_id)
        tables_made = False
        clients: list[Client] = []

        def build(registry: ProviderRegistry | None = None, clock: Any = None, **overrides: Any) -> Harness:
            nonlocal tables_made
            clock = clock or FakeClock()
            container = build_container(
                replace(settings, **{"kms_key_id": TEST_KMS_ALIAS, **overrides}), clock=clock, registry=registry
            )
            if not tables_made:
                create_tables()
                tables_made = True
            set_container(container)
            client = Client(app)
            clients.append(client)
            return Harness(container, clock, client.__enter__(), sqs, queue_url, kms)

        yield build
        for client in clients:
            client.__exit__(None, None, None)
        set_container(None)


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
