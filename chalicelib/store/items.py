"""PynamoDB models. Table names, region and endpoint are bound at run time by ``bind_models``.

Datasets use one table for a dataset's sync state and its cached records, so a
cached read is a single Query on the dataset's partition: the state item
(sort key ``#state``) sorts before every record (``r#<upstream id>``).
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    DiscriminatorAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.domain.config import Settings

STATE_SORT_KEY = "#state"
RECORD_SORT_PREFIX = "r#"


class ConnectionsByProviderUserIndex(GlobalSecondaryIndex["ConnectionItem"]):  # type: ignore[no-untyped-call]
    """Inbound webhooks name the provider's user, not ours: ``provider#provider_user_id`` -> connection keys.

    Sparse: only connections with a provider user id carry ``provider_user_key``. Keys only, so
    the sealed credentials are not copied into the index; callers read the items themselves.
    """

    class Meta:
        index_name = "by_provider_user"
        projection = KeysOnlyProjection()

    provider_user_key = UnicodeAttribute(hash_key=True)


class ConnectionItem(Model):
    class Meta:
        table_name = "smart-sync-connections"
        region = "us-east-1"

    user_id = UnicodeAttribute(hash_key=True)
    connection_id = UnicodeAttribute(range_key=True)
    provider = UnicodeAttribute()
    credentials_sealed = UnicodeAttribute(null=True)
    """A KMS envelope (``chalicelib.store.vault``); never the plaintext."""
    credentials_version = NumberAttribute(default=0)
    """Bumped by every credentials write: a PUT carrying credentials or a token refresh (the refresh's fence)."""
    refresh_owner = UnicodeAttribute(null=True)
    refresh_expires_at = NumberAttribute(null=True)
    """The token refresh lease: one instance at a time spends the refresh token."""
    provider_user_id = UnicodeAttribute(null=True)
    provider_user_key = UnicodeAttribute(null=True)
    """``provider#provider_user_id``, set only with a provider user id (keeps ``by_provider_user`` sparse)."""
    settings_json = UnicodeAttribute(default="{}")
    status = UnicodeAttribute(default="ACTIVE")
    status_reason = UnicodeAttribute(null=True)
    auth_failures = NumberAttribute(default=0)
    """Provider 401/403 answers in a row; at the threshold the connection becomes NEEDS_REVIEW."""
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    """When the user last PUT the connection; a token refresh leaves it alone."""
    by_provider_user = ConnectionsByProviderUserIndex()


class DatasetsByUserIndex(GlobalSecondaryIndex["StateItem"]):  # type: ignore[no-untyped-call]
    """Sparse: only state items carry ``user_id``, so records never land here."""

    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    dataset_key = UnicodeAttribute(range_key=True)


class DueDatasetsIndex(GlobalSecondaryIndex["StateItem"]):  # type: ignore[no-untyped-call]
    """The schedule's view: state items with a ``next_sync_at``, spread over ``schedule_shard`` partitions.

    Sparse twice over: records never have these attributes, and a dataset leaves the index
    when its ``next_sync_at`` is removed (on-demand data types, paused or broken connections).
    Only what the planner needs is projected, so one Query page holds thousands of datasets.
    """

    class Meta:
        index_name = "by_next_sync"
        projection = IncludeProjection(
            [
                "kind",
                "user_id",
                "connection_id",
                "data_type",
                "provider",
                "lease_expires_at",
                "queued_job_id",
                "queued_at",
            ]
        )

    schedule_shard = UnicodeAttribute(hash_key=True)
    next_sync_at = NumberAttribute(range_key=True)


class DatasetItem(Model):
    class Meta:
        table_name = "smart-sync-datasets"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = DiscriminatorAttribute()
    # Only state items set these, so both indexes stay sparse.
    user_id = UnicodeAttribute(null=True)
    dataset_key = UnicodeAttribute(null=True)
    schedule_shard = UnicodeAttribute(null=True)
    next_sync_at = NumberAttribute(null=True)
    by_user = DatasetsByUserIndex()
    by_next_sync = DueDatasetsIndex()


class StateItem(DatasetItem, discriminator="state"):
    connection_id = UnicodeAttribute()
    data_type = UnicodeAttribute()
    provider = UnicodeAttribute()
    status = UnicodeAttribute(default="IDLE")
    lease_owner = UnicodeAttribute(null=True)
    lease_expires_at = NumberAttribute(null=True)
    lease_run_id = UnicodeAttribute(null=True)
    """The run holding the lease; removed whenever a holder lets the lease go, so one still here when
    the next holder takes an expired lease names a run whose process died."""
    prior_run_id = UnicodeAttribute(null=True)
    """What ``lease_run_id`` was when the current holder took the lease (``""``: let go properly)."""
    job_attempts = NumberAttribute(null=True)
    """Times a worker took the lease for the queued job; a new claim starts it again."""
    incarnation = UnicodeAttribute(null=True)
    """Set once when the state item is made: a dataset purged and made again (a PUT with ``reset_data``
    or another provider) is another incarnation, so a sync of the old one knows its run is not this one's."""
    run_tally_json = UnicodeAttribute(null=True)
    """The running sync's counts (``RunTally``), written with its pages: a redelivered attempt goes on from them."""
    queued_job_id = UnicodeAttribute(null=True)
    queued_at = NumberAttribute(null=True)
    last_attempted_at = NumberAttribute(null=True)
    last_successful_at = NumberAttribute(null=True)
    last_full_sync_at = NumberAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    consecutive_failures = NumberAttribute(default=0)
    record_count = NumberAttribute(default=0)
    last_run_id = UnicodeAttribute(null=True)
    last_run_status = UnicodeAttribute(null=True)
    last_counts_json = UnicodeAttribute(null=True)
    checkpoint_json = UnicodeAttribute(null=True)
    watermark = UnicodeAttribute(null=True)


class RecordItem(DatasetItem, discriminator="record"):
    record_id = UnicodeAttribute()
    data_json = UnicodeAttribute()
    content_hash = UnicodeAttribute()
    upstream_updated_at = UnicodeAttribute(null=True)
    seen_generation = UnicodeAttribute(null=True)
    synced_at = NumberAttribute()


class RunItem(Model):
    class Meta:
        table_name = "smart-sync-runs"
        region = "us-east-1"

    dataset_id = UnicodeAttribute(hash_key=True)
    run_id = UnicodeAttribute(range_key=True)
    """Time-ordered, so a Query newest-first is a reverse range scan."""
    trigger = UnicodeAttribute()
    status = UnicodeAttribute()
    created_at = NumberAttribute()
    started_at = NumberAttribute(null=True)
    ended_at = NumberAttribute(null=True)
    inserted = NumberAttribute(default=0)
    updated = NumberAttribute(default=0)
    unchanged = NumberAttribute(default=0)
    deleted = NumberAttribute(default=0)
    pages = NumberAttribute(default=0)
    upstream_calls = NumberAttribute(default=0)
    skipped = NumberAttribute(default=0)
    skipped_json = UnicodeAttribute(null=True)
    """The first few skipped records as a JSON list of ``"<reason>: <id>"``."""
    error = UnicodeAttribute(null=True)
    resumed = UnicodeAttribute(null=True)
    attempt = NumberAttribute(null=True)
    expires_at = NumberAttribute()
    """DynamoDB TTL attribute; reads also filter on it (TTL deletion is lazy, and moto never does it)."""


class LimitItem(Model):
    """State every Lambda shares, one item each: token buckets (per-user manual refreshes, per
    provider calls), provider breakers and concurrency slots, the scheduler, sync statistics."""

    class Meta:
        table_name = "smart-sync-limits"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True)
    tokens = NumberAttribute(null=True)
    updated_at = NumberAttribute(null=True)
    version = NumberAttribute(null=True)
    """Bumped by every write: the optimistic-concurrency guard (timestamps can repeat)."""
    data_json = UnicodeAttribute(null=True)
    """A JSON document: a gate's breaker and rate windows, a scheduler's state (``version`` guards it)."""
    holders: MapAttribute[str, float] = MapAttribute(null=True)  # type: ignore[no-untyped-call]
    """A provider gate's running syncs, owner -> slot expiry: a sync removes only its own path when it ends."""
    # Statistics: counters updated with ADD by every finished sync, so no read is needed.
    total_syncs = NumberAttribute(null=True)
    succeeded_syncs = NumberAttribute(null=True)
    failed_syncs = NumberAttribute(null=True)
    duration_sum = NumberAttribute(null=True)
    last_duration = NumberAttribute(null=True)
    last_finished_at = NumberAttribute(null=True)
    consecutive_failures = NumberAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    last_error_at = NumberAttribute(null=True)


ALL_MODELS: tuple[type[Model], ...] = (ConnectionItem, DatasetItem, StateItem, RecordItem, RunItem, LimitItem)


def bind_models(settings: Settings) -> None:
    """Point every model at the configured tables and endpoint (idempotent)."""
    tables: dict[type[Model], str] = {
        ConnectionItem: settings.connections_table,
        DatasetItem: settings.datasets_table,
        RunItem: settings.runs_table,
        LimitItem: settings.limits_table,
    }
    for model, table in tables.items():
        meta: Any = model.Meta
        meta.table_name = table
        meta.region = settings.region
        meta.host = settings.dynamodb_host
    for model in ALL_MODELS:
        model._connection = None
    _share_one_connection(settings)


_shared: dict[str, Connection] = {}


def _share_one_connection(settings: Settings) -> None:
    """Give every model the same low-level connection, so a cold Lambda builds one botocore client, not five.

    PynamoDB gives each model class its own connection and client; they all talk to
    the same endpoint, and a botocore client is safe to share.
    """
    shared = Connection(region=settings.region, host=settings.dynamodb_host)
    for model in ALL_MODELS:
        table = model._get_connection()
        meta_table = table.get_meta_table()
        if meta_table.table_name not in shared._tables:
            shared.add_meta_table(meta_table)
        table.connection = shared
    _shared["connection"] = shared


def shared_connection() -> Connection:
    """The connection ``bind_models`` installed (used for transactions)."""
    return _shared["connection"]


def create_tables(wait: bool = False) -> None:
    """Create every table (local runs and tests; production uses the CloudFormation template)."""
    for model in (ConnectionItem, DatasetItem, RunItem, LimitItem):
        if not model.exists():
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=wait)
