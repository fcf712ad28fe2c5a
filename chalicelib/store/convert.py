"""Items to domain values and back (state, records, connections, runs), page tokens, content hashes."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

from chalicelib.domain.errors import (
    ValidationError,
)
from chalicelib.domain.model import (
    Checkpoint,
    Connection,
    ConnectionStatus,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    RunTally,
    StoredRecord,
    SyncCounts,
    SyncRun,
    Trigger,
)
from chalicelib.domain.planner import schedule_shard
from chalicelib.store.items import (
    RECORD_SORT_PREFIX,
    STATE_SORT_KEY,
    ConnectionItem,
    RecordItem,
    RunItem,
    StateItem,
)
from chalicelib.store.vault import StoredCredentials


def content_hash(data: Any) -> str:
    """Stable hash of a record's content, for inserted / updated / unchanged detection."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def encode_next_token(sort_key: str) -> str:
    raw = json.dumps({"after": sort_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_next_token(token: str) -> str:
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError("next_token is not valid") from exc
    # DynamoDB sort keys are at most 1024 bytes; a forged token must be a 400, not a 500.
    if not isinstance(value, str) or not value.startswith(RECORD_SORT_PREFIX):
        raise ValidationError("next_token is not valid")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("next_token is not valid") from None
    if len(encoded) > 1024:
        raise ValidationError("next_token is not valid")
    return value


def state_from_item(item: StateItem) -> DatasetState:
    counts = None
    if item.last_counts_json:
        counts = SyncCounts(**json.loads(item.last_counts_json))
    return DatasetState(
        key=DatasetKey(item.user_id or "", item.connection_id, item.data_type),
        provider=item.provider,
        status=DatasetStatus(item.status or DatasetStatus.IDLE),
        lease_owner=item.lease_owner,
        lease_expires_at=item.lease_expires_at,
        queued_job_id=item.queued_job_id,
        queued_at=item.queued_at,
        last_attempted_at=item.last_attempted_at,
        last_successful_at=item.last_successful_at,
        last_full_sync_at=item.last_full_sync_at,
        last_error=item.last_error,
        consecutive_failures=int(item.consecutive_failures or 0),
        next_sync_at=item.next_sync_at,
        record_count=int(item.record_count or 0),
        last_run_id=item.last_run_id,
        last_run_status=RunStatus(item.last_run_status) if item.last_run_status else None,
        last_counts=counts,
        checkpoint=Checkpoint.from_json(item.checkpoint_json),
        watermark=item.watermark,
        prior_run_id=item.prior_run_id or None,
        job_attempts=int(item.job_attempts or 0),
        run_tally=RunTally.from_json(item.run_tally_json),
        incarnation=item.incarnation,
    )


def record_from_item(item: RecordItem) -> StoredRecord:
    return StoredRecord(
        record_id=item.record_id,
        data=json.loads(item.data_json),
        upstream_updated_at=item.upstream_updated_at,
        synced_at=float(item.synced_at),
    )


def connection_from_item(item: ConnectionItem) -> Connection:
    return Connection(
        user_id=item.user_id,
        connection_id=item.connection_id,
        provider=item.provider,
        sealed_credentials=item.credentials_sealed or "",
        credentials_version=int(item.credentials_version or 0),
        provider_user_id=item.provider_user_id,
        settings=json.loads(item.settings_json or "{}"),
        status=ConnectionStatus(item.status),
        status_reason=item.status_reason,
        auth_failures=int(item.auth_failures or 0),
        created_at=float(item.created_at),
        updated_at=float(item.updated_at),
    )


def provider_user_key(provider: str, provider_user_id: str) -> str:
    """The ``by_provider_user`` index key: the provider's user id is only unique within its provider."""
    return f"{provider}#{provider_user_id}"


def stored_credentials_from_item(item: ConnectionItem) -> StoredCredentials:
    return StoredCredentials(
        sealed=item.credentials_sealed or "",
        version=int(item.credentials_version or 0),
        refresh_owner=item.refresh_owner,
        refresh_expires_at=item.refresh_expires_at,
        status=ConnectionStatus(item.status),
        status_reason=item.status_reason,
    )


CREDENTIAL_ATTRIBUTES = [
    "user_id",
    "connection_id",
    "credentials_sealed",
    "credentials_version",
    "refresh_owner",
    "refresh_expires_at",
    "status",
    "status_reason",
]


def run_from_item(item: RunItem, key: DatasetKey) -> SyncRun:
    return SyncRun(
        key=key,
        run_id=item.run_id,
        trigger=Trigger(item.trigger),
        status=RunStatus(item.status),
        created_at=float(item.created_at),
        started_at=item.started_at,
        ended_at=item.ended_at,
        counts=SyncCounts(
            inserted=int(item.inserted or 0),
            updated=int(item.updated or 0),
            unchanged=int(item.unchanged or 0),
            deleted=int(item.deleted or 0),
            pages=int(item.pages or 0),
            upstream_calls=int(item.upstream_calls or 0),
            skipped=int(item.skipped or 0),
        ),
        error=item.error,
        resumed=item.resumed,
        skipped_records=tuple(json.loads(item.skipped_json)) if item.skipped_json else (),
        attempt=int(item.attempt or 1),
    )


def run_item(run: SyncRun, retention_seconds: float) -> RunItem:
    return RunItem(
        run.key.dataset_id,
        run.run_id,
        trigger=run.trigger.value,
        status=run.status.value,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        inserted=run.counts.inserted,
        updated=run.counts.updated,
        unchanged=run.counts.unchanged,
        deleted=run.counts.deleted,
        pages=run.counts.pages,
        upstream_calls=run.counts.upstream_calls,
        skipped=run.counts.skipped,
        skipped_json=json.dumps(list(run.skipped_records)) if run.skipped_records else None,
        error=run.error,
        resumed=run.resumed,
        attempt=run.attempt,
        expires_at=int(run.created_at + retention_seconds),
    )


def get_state_item(key: DatasetKey, consistent: bool) -> StateItem | None:
    """A dataset's state item as stored (``None`` when the dataset was never used or was deleted)."""
    try:
        item = StateItem.get(key.dataset_id, STATE_SORT_KEY, consistent_read=consistent)
    except StateItem.DoesNotExist:
        return None
    return item


def new_state_item(key: DatasetKey, provider: str, next_sync_at: float | None) -> StateItem:
    """A dataset's first state item: its identity, its schedule shard and (if scheduled) when it is due."""
    return StateItem(
        key.dataset_id,
        STATE_SORT_KEY,
        user_id=key.user_id,
        dataset_key=key.dataset_key,
        connection_id=key.connection_id,
        data_type=key.data_type,
        provider=provider,
        schedule_shard=schedule_shard(key.dataset_id),
        next_sync_at=next_sync_at,
        incarnation=uuid.uuid4().hex,
    )
