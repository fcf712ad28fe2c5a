"""Wiring: build every service once, lazily, from settings (cold start does no I/O at import)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.clock import Clock, SystemClock
from chalicelib.domain.config import Settings, get_settings
from chalicelib.providers import ProviderRegistry, load_registry
from chalicelib.providers.policies import PolicyResolver
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import bind_models
from chalicelib.store.token_keys import TokenKeys
from chalicelib.store.vault import CredentialVault
from chalicelib.sync.coordinator import SyncCoordinator
from chalicelib.sync.engine import SyncEngine
from chalicelib.sync.jobs import JobQueue, SqsJobQueue
from chalicelib.sync.pacing import ProviderGuard
from chalicelib.sync.token_refresh import CredentialKeeper
from chalicelib.usecases.connections import ConnectionService
from chalicelib.usecases.fanout import FanOut
from chalicelib.usecases.manual_sync import ManualSyncService
from chalicelib.usecases.operator import OperatorService
from chalicelib.usecases.reads import DatasetReader
from chalicelib.usecases.status import StatusService
from chalicelib.usecases.webhooks import WebhookReceiver
from chalicelib.usecases.worker_jobs import WorkerService


@dataclass
class Container:
    settings: Settings
    clock: Clock
    store: DynamoStore
    registry: ProviderRegistry
    queue: JobQueue
    policies: PolicyResolver
    coordinator: SyncCoordinator
    reader: DatasetReader
    connections: ConnectionService
    manual_sync: ManualSyncService
    status: StatusService
    worker: WorkerService
    guard: ProviderGuard
    fanout: FanOut
    operator: OperatorService
    vault: CredentialVault
    credentials: CredentialKeeper
    """The engine's credentials port: opens sealed credentials, refreshes OAuth2 tokens once across instances."""
    webhooks: WebhookReceiver
    """Inbound provider webhooks; each provider's webhook configuration is validated on its first use."""
    token_keys: TokenKeys
    """Bearer-token keys: the HS256 secret (SSM or Secrets Manager on AWS) and the JWKS, read on first use, cached."""


def build_container(
    settings: Settings,
    *,
    clock: Clock | None = None,
    queue: JobQueue | None = None,
    registry: ProviderRegistry | None = None,
    kms_client: Any = None,
    token_keys: TokenKeys | None = None,
) -> Container:
    bind_models(settings)
    clock = clock or SystemClock()
    store = DynamoStore()
    vault = CredentialVault(
        (lambda: kms_client) if kms_client is not None else (lambda: _kms_client(settings)), settings.kms_key_id
    )
    credentials = CredentialKeeper(store, vault, clock, settings)
    registry = registry or load_registry(settings)
    queue = queue or SqsJobQueue(settings)
    policies = PolicyResolver(registry, settings)
    guard = ProviderGuard(store.shared, registry, settings)
    engine = SyncEngine(store, registry, queue, clock, settings, guard, credentials=credentials)
    coordinator = SyncCoordinator(store, engine, queue, clock, settings)
    fanout = FanOut(store, registry, policies, guard, queue, clock, settings)
    return Container(
        settings=settings,
        clock=clock,
        store=store,
        registry=registry,
        queue=queue,
        policies=policies,
        coordinator=coordinator,
        reader=DatasetReader(store, policies, coordinator, guard, clock, settings),
        connections=ConnectionService(store, registry, policies, clock, vault, settings),
        manual_sync=ManualSyncService(store, policies, coordinator, clock, settings),
        status=StatusService(store, policies, clock, settings),
        worker=WorkerService(store, policies, coordinator, fanout, queue, clock),
        guard=guard,
        fanout=fanout,
        operator=OperatorService(fanout, guard, store, registry, clock, settings),
        vault=vault,
        credentials=credentials,
        webhooks=WebhookReceiver(registry, store, policies, coordinator, clock),
        token_keys=token_keys or TokenKeys(settings),
    )


def _kms_client(settings: Settings) -> Any:
    """Made on the first seal or open, not at build time: a cold start that never touches credentials pays nothing."""
    import boto3

    # Its own session: boto3's default one is not safe to build clients from in parallel (the SQS client may be).
    session = boto3.session.Session()
    return session.client("kms", region_name=settings.region, endpoint_url=settings.kms_endpoint)


_container: Container | None = None
_building = threading.Lock()


def get_container() -> Container:
    global _container
    if _container is None:
        with _building:  # the local runner's API, worker and schedule threads may all ask first
            if _container is None:
                _container = build_container(get_settings())
    return _container


def set_container(container: Container | None) -> None:
    """Tests and the local runner swap in their own wiring (fake clock, local endpoints)."""
    global _container
    _container = container
