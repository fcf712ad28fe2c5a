"""The storage port and its DynamoDB (PynamoDB) implementation.

Everything that must be shared between Lambdas lives here as conditional
writes: the sync lease, the queue claim (cooldown), checkpoints and the
manual-refresh window. A failed condition becomes a domain error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pynamodb.exceptions import DeleteError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.domain.errors import (
    ClaimNotWonError,
    DatasetNotFoundError,
    JobNotClaimableError,
    LeaseLostError,
    StoreBusyError,
    SyncInProgressError,
    ValidationError,
)
from chalicelib.domain.limits import Bucket, take
from chalicelib.domain.model import (
    Checkpoint,
    Connection,
    ConnectionStatus,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    StoredRecord,
    SyncCounts,
    SyncRun,
    Trigger,
)
from chalicelib.domain.planner import DueDataset, schedule_shard
from chalicelib.domain.upstream import UpstreamRecord
from chalicelib.store.items import (
    RECORD_SORT_PREFIX,
    STATE_SORT_KEY,
    ConnectionItem,
    DatasetItem,
    LimitItem,
    RecordItem,
    RunItem,
    StateItem,
    shared_connection,
)
from chalicelib.store.shared import SharedStore, SharedUpdate, shared_json, shared_json_write
from chalicelib.store.vault import CredentialsChangedError, RefreshNotWonError, StoredCredentials

logger = logging.getLogger(__name__)
_CONDITION_FAILED = "ConditionalCheckFailedException"
_ENSURE_ATTEMPTS = 3
_SHARED_STATE_ATTEMPTS = 8
_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems
_CLAIM_ATTEMPTS = 3
_FINISH_ATTEMPTS = 3
T = TypeVar("T")


def content_hash(data: Any) -> str:
    """Stable hash of a record's content, for inserted / updated / unchanged detection."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _condition_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == _CONDITION_FAILED


def _update_if(handle: Model, actions: list[Any], condition: Condition) -> bool:
    """One conditional UpdateItem; ``False`` when its condition failed (any other error raises)."""
    try:
        handle.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if _condition_failed(exc):
            return False
        raise
    return True


# --- Lease condition fragments -------------------------------------------------
# Timeline of one dataset (t = now):
#   first read of a dataset: ensure_dataset (connection exists, state absent) -> state item
#   reader A: acquire  (lease free)              -> owner=A, expires=t+ttl, RUNNING
#   A before storing each page: renew (owner=A)  -> a holder that lost the lease writes nothing
#   reader B: acquire  (lease held by A)         -> SyncInProgressError, B joins A's result
#   A after each stored page: checkpoint (owner=A) -> expires pushed to t'+ttl
#   connection deleted: state item removed       -> every later acquire/claim/renew fails
#   A crashes; at t > expires anyone may acquire -> resumes from A's checkpoint
#   A wakes up, tries to checkpoint (owner!=A)   -> LeaseLostError, A stops writing
#   reader C decided on run R0, but run R1 finished meanwhile: acquire fails
#                      (last_run_id != R0), C answers with R1's result instead
#   stale read: claim queue (lease free, no live claim, past cooldown) -> one job queued
#   worker: acquire with job id (queued_job_id = job) -> runs it; redelivery finds no claim


def _dataset_exists() -> Condition:
    """Only ``ensure_dataset`` creates a state item, so a deleted dataset stays deleted."""
    return cast(Condition, StateItem.pk.exists())


def _lease_free(now: float) -> Condition:
    # Free at the instant it expires: the same boundary as ``policy.lease_is_held``.
    return cast(Condition, StateItem.lease_owner.does_not_exist() | (StateItem.lease_expires_at <= now))


def _lease_owned_by(owner: str) -> Condition:
    return cast(Condition, StateItem.lease_owner == owner)


def _job_is_queued(job_id: str) -> Condition:
    return cast(Condition, StateItem.queued_job_id == job_id)


def _no_run_finished_since(expected_last_run_id: str | None) -> Condition:
    if expected_last_run_id is None:
        return StateItem.last_run_id.does_not_exist()
    return cast(Condition, StateItem.last_run_id == expected_last_run_id)


def _no_live_queue_claim(now: float, claim_ttl_seconds: float) -> Condition:
    return cast(Condition, StateItem.queued_job_id.does_not_exist() | (StateItem.queued_at < now - claim_ttl_seconds))


def _still_due_at(next_sync_at: float) -> Condition:
    """The schedule decided on this due time; a sync since then moved it, and the claim is moot."""
    return cast(Condition, StateItem.next_sync_at == next_sync_at)


def _past_cooldown(now: float, cooldown_seconds: float) -> Condition:
    """Guards against a claim made from a stale read of a dataset someone just synced."""
    condition = StateItem.last_successful_at.does_not_exist() | (StateItem.last_successful_at <= now - cooldown_seconds)
    return cast(Condition, condition)


# --- Pagination tokens ---------------------------------------------------------


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


@dataclass(frozen=True)
class FinishedRun:
    """A run's final record, written with the dataset's state when a sync ends; ``gate`` is the
    provider gate's unguarded update (the sync's slot back, its statistics) that rides along."""

    run: SyncRun
    retention_seconds: float
    gate: SharedUpdate | None = None


@dataclass(frozen=True)
class DatasetPage:
    state: DatasetState | None
    records: list[StoredRecord]
    next_token: str | None


def _state_from_item(item: StateItem) -> DatasetState:
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
    )


def _record_from_item(item: RecordItem) -> StoredRecord:
    return StoredRecord(
        record_id=item.record_id,
        data=json.loads(item.data_json),
        upstream_updated_at=item.upstream_updated_at,
        synced_at=float(item.synced_at),
    )


def _connection_from_item(item: ConnectionItem) -> Connection:
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


# --- Connection credential condition fragments ----------------------------------
# Timeline of one connection's credentials (t = now, v = credentials_version):
#   PUT with credentials: sealed blob written, v -> v+1, any refresh lease dropped (fenced on v as read)
#   PUT without credentials: settings and status only; blob, v and lease untouched
#   sync A, token expired: take refresh lease (v as seen, lease free) -> owner=A, expires=t+ttl
#   sync B, token expired: take refresh lease                          -> RefreshNotWonError, B polls
#   A, token endpoint answered: store new blob (owner=A, v as seen)     -> v+1, lease cleared
#   B sees v+1: opens A's credentials; the refresh token was spent once
#   user PUTs while A refreshes: v moved, lease dropped -> A's store fails, A uses the user's credentials
#   A crashes: at t > expires anyone may take the lease (v unchanged) and refresh
#   token endpoint says invalid_grant: NEEDS_REVIEW (v as seen), lease cleared


def _connection_exists() -> Condition:
    return cast(Condition, ConnectionItem.user_id.exists())


def _connection_absent() -> Condition:
    return cast(Condition, ConnectionItem.user_id.does_not_exist())


def _credentials_version_is(version: int) -> Condition:
    same = ConnectionItem.credentials_version == version
    if version == 0:  # items written before versions existed have none
        same = same | ConnectionItem.credentials_version.does_not_exist()
    return cast(Condition, _connection_exists() & same)


def _refresh_lease_free(now: float) -> Condition:
    # Free at the instant it expires, like a dataset's sync lease.
    return cast(Condition, ConnectionItem.refresh_owner.does_not_exist() | (ConnectionItem.refresh_expires_at <= now))


def _refresh_lease_owned_by(owner: str) -> Condition:
    return cast(Condition, ConnectionItem.refresh_owner == owner)


def _refresh_lease_cleared() -> list[Any]:
    return [ConnectionItem.refresh_owner.remove(), ConnectionItem.refresh_expires_at.remove()]


def _credentials_actions(sealed: str, version: int) -> list[Any]:
    """A credentials write: the blob (or none), the next version, and no refresh lease left behind."""
    return [
        ConnectionItem.credentials_sealed.set(sealed) if sealed else ConnectionItem.credentials_sealed.remove(),
        ConnectionItem.credentials_version.set(version),
        *_refresh_lease_cleared(),
    ]


def _stored_credentials_from_item(item: ConnectionItem) -> StoredCredentials:
    return StoredCredentials(
        sealed=item.credentials_sealed or "",
        version=int(item.credentials_version or 0),
        refresh_owner=item.refresh_owner,
        refresh_expires_at=item.refresh_expires_at,
        status=ConnectionStatus(item.status),
        status_reason=item.status_reason,
    )


_CREDENTIAL_ATTRIBUTES = [
    "user_id",
    "connection_id",
    "credentials_sealed",
    "credentials_version",
    "refresh_owner",
    "refresh_expires_at",
    "status",
    "status_reason",
]


def _run_from_item(item: RunItem, key: DatasetKey) -> SyncRun:
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
    )


def _state_handle(key: DatasetKey) -> StateItem:
    return StateItem(key.dataset_id, STATE_SORT_KEY)


def _identity_actions(key: DatasetKey, provider: str) -> list[Any]:
    """Written on every lease/claim write so the first one also creates a well-formed item."""
    return [
        StateItem.kind.set(StateItem),
        StateItem.user_id.set(key.user_id),
        StateItem.dataset_key.set(key.dataset_key),
        StateItem.connection_id.set(key.connection_id),
        StateItem.data_type.set(key.data_type),
        StateItem.provider.set(provider),
    ]


def _schedule_actions(key: DatasetKey, next_sync_at: float | None) -> list[Any]:
    """Due at ``next_sync_at`` on the schedule index (the shard is written too: items from before the
    index existed join it at their next sync), or off it."""
    if next_sync_at is None:
        return [StateItem.next_sync_at.remove()]
    return [StateItem.next_sync_at.set(next_sync_at), StateItem.schedule_shard.set(schedule_shard(key.dataset_id))]


def _run_item(run: SyncRun, retention_seconds: float) -> RunItem:
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
        expires_at=int(run.created_at + retention_seconds),
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DynamoStore:
    """The one storage implementation; tests run it against moto."""

    def __init__(self) -> None:
        self.shared = SharedStore()

    # --- connections -------------------------------------------------------

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
            condition = _connection_absent()
        elif credentials_written:
            condition = _credentials_version_is(previous.credentials_version)
        else:
            condition = _connection_exists()
        if credentials_written:
            actions += _credentials_actions(connection.sealed_credentials, connection.credentials_version)
        handle = ConnectionItem(connection.user_id, connection.connection_id)
        if not _update_if(handle, actions, condition):
            raise CredentialsChangedError(
                f"connection {connection.connection_id!r} changed while it was being saved; try again"
            )

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None:
        try:
            return _connection_from_item(ConnectionItem.get(user_id, connection_id, consistent_read=consistent))
        except ConnectionItem.DoesNotExist:
            return None

    def list_connections(self, user_id: str) -> list[Connection]:
        return [_connection_from_item(item) for item in ConnectionItem.query(user_id)]

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
        for chunk in _chunks(sorted(keys), 100):
            for item in ConnectionItem.batch_get(chunk, consistent_read=True):
                if item.provider_user_key == wanted:
                    found.append(_connection_from_item(item))
        return sorted(found, key=lambda c: (c.user_id, c.connection_id))

    # --- connection credentials: the token refresh lease ---------------------------

    def stored_credentials(self, user_id: str, connection_id: str) -> StoredCredentials | None:
        """The credential fields as they are now (a consistent read); ``None`` once the connection is deleted."""
        try:
            item = ConnectionItem.get(
                user_id, connection_id, consistent_read=True, attributes_to_get=_CREDENTIAL_ATTRIBUTES
            )
        except ConnectionItem.DoesNotExist:
            return None
        return _stored_credentials_from_item(item)

    def take_refresh_lease(
        self, user_id: str, connection_id: str, owner: str, *, seen_version: int, now: float, ttl_seconds: float
    ) -> None:
        """Become the one instance that spends the refresh token of credentials version ``seen_version``.

        ``RefreshNotWonError`` when another instance holds a live lease, or the credentials
        moved on since they were read (a refresh or a PUT stored newer ones).
        """
        handle = ConnectionItem(user_id, connection_id)
        actions = [ConnectionItem.refresh_owner.set(owner), ConnectionItem.refresh_expires_at.set(now + ttl_seconds)]
        if not _update_if(handle, actions, _credentials_version_is(seen_version) & _refresh_lease_free(now)):
            raise RefreshNotWonError(f"the token refresh of connection {connection_id!r} is not ours to do now")

    def finish_refresh(self, user_id: str, connection_id: str, owner: str, *, seen_version: int, sealed: str) -> int:
        """Store the refreshed credentials as version ``seen_version + 1`` and drop the lease; returns the version.

        Only while ``owner`` still holds the lease and nobody stored other credentials
        (``CredentialsChangedError`` otherwise: the caller must not use what it got).
        ``updated_at`` stays: it is when the user last PUT the connection.
        """
        version = seen_version + 1
        condition = _credentials_version_is(seen_version) & _refresh_lease_owned_by(owner)
        if not _update_if(ConnectionItem(user_id, connection_id), _credentials_actions(sealed, version), condition):
            raise CredentialsChangedError(
                f"the credentials of connection {connection_id!r} changed during the token refresh"
            )
        return version

    def release_refresh_lease(self, user_id: str, connection_id: str, owner: str) -> None:
        """Give the lease back without storing anything (the token endpoint failed); a lost lease is not an error."""
        _update_if(ConnectionItem(user_id, connection_id), _refresh_lease_cleared(), _refresh_lease_owned_by(owner))

    def refuse_refresh(self, user_id: str, connection_id: str, *, seen_version: int, reason: str) -> bool:
        """The provider refused the refresh token of ``seen_version``: NEEDS_REVIEW now, lease dropped.

        ``False`` when the credentials changed meanwhile (the user connected again): nothing is written.
        """
        return _update_if(
            ConnectionItem(user_id, connection_id),
            [
                ConnectionItem.status.set(ConnectionStatus.NEEDS_REVIEW.value),
                ConnectionItem.status_reason.set(reason[:500]),
                *_refresh_lease_cleared(),
            ],
            _credentials_version_is(seen_version),
        )

    # --- dataset reads -------------------------------------------------------

    def read_dataset_page(
        self, key: DatasetKey, limit: int, after_sort_key: str | None, *, consistent: bool = False
    ) -> DatasetPage:
        """First page: one Query returns the state item and the records after it.

        ``consistent`` is for the read right after a sync, which must see what it wrote.
        """
        if after_sort_key is None:
            items = list(
                DatasetItem.query(key.dataset_id, limit=limit + 2, page_size=limit + 2, consistent_read=consistent)
            )
            state_item = next((i for i in items if isinstance(i, StateItem)), None)
            record_items = [i for i in items if isinstance(i, RecordItem)]
        else:
            state_item = self._get_state_item(key, consistent=consistent)
            record_items = [
                i
                for i in DatasetItem.query(
                    key.dataset_id,
                    DatasetItem.sk > after_sort_key,
                    limit=limit + 1,
                    page_size=limit + 1,
                    consistent_read=consistent,
                )
                if isinstance(i, RecordItem)
            ]
        has_more = len(record_items) > limit
        record_items = record_items[:limit]
        next_token = encode_next_token(record_items[-1].sk) if has_more and record_items else None
        return DatasetPage(
            state=_state_from_item(state_item) if state_item is not None else None,
            records=[_record_from_item(i) for i in record_items],
            next_token=next_token,
        )

    def _get_state_item(self, key: DatasetKey, consistent: bool) -> StateItem | None:
        try:
            item = StateItem.get(key.dataset_id, STATE_SORT_KEY, consistent_read=consistent)
        except StateItem.DoesNotExist:
            return None
        return item

    def get_state(self, key: DatasetKey, consistent: bool = True) -> DatasetState | None:
        item = self._get_state_item(key, consistent)
        return _state_from_item(item) if item is not None else None

    def list_states(self, user_id: str) -> list[DatasetState]:
        return [_state_from_item(item) for item in DatasetItem.by_user.query(user_id) if isinstance(item, StateItem)]

    # --- lease and claims ----------------------------------------------------

    def acquire_lease(
        self,
        key: DatasetKey,
        provider: str,
        owner: str,
        now: float,
        ttl_seconds: float,
        *,
        job_id: str | None = None,
        expected_last_run_id: str | None = None,
    ) -> DatasetState:
        """Win the dataset's single-flight lease, or raise.

        A direct caller (a read) may take a free lease only if no run has finished since
        it looked (``expected_last_run_id``): otherwise that run's result is what it
        wanted. Its sync satisfies any queued job, so it clears the claim. A worker must
        also present the queued job id, so a redelivered or superseded job never runs a
        second sync.
        """
        actions = [
            *_identity_actions(key, provider),
            StateItem.lease_owner.set(owner),
            StateItem.lease_expires_at.set(now + ttl_seconds),
            StateItem.status.set(DatasetStatus.RUNNING.value),
            StateItem.last_attempted_at.set(now),
        ]
        condition = _dataset_exists() & _lease_free(now)
        if job_id is not None:
            # The claim stays until the job finishes, so a redelivery after a crash can resume it.
            condition = condition & _job_is_queued(job_id)
        else:
            condition = condition & _no_run_finished_since(expected_last_run_id)
            actions += [StateItem.queued_job_id.remove(), StateItem.queued_at.remove()]
        handle = _state_handle(key)
        try:
            handle.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise
            current = self._existing_state(key, exc)
            if job_id is not None and current.queued_job_id != job_id:
                raise JobNotClaimableError(f"job {job_id} is no longer queued for {key.describe()}") from exc
            raise SyncInProgressError() from exc
        return _state_from_item(handle)

    def claim_queue(
        self,
        key: DatasetKey,
        provider: str,
        job_id: str,
        now: float,
        *,
        cooldown_seconds: float,
        claim_ttl_seconds: float,
        require_past_cooldown: bool = True,
    ) -> None:
        """Win the right to queue the one background sync of this dataset (invariant 2)."""
        condition = _dataset_exists() & _lease_free(now) & _no_live_queue_claim(now, claim_ttl_seconds)
        if require_past_cooldown:
            condition = condition & _past_cooldown(now, cooldown_seconds)
        try:
            _state_handle(key).update(
                actions=[
                    *_identity_actions(key, provider),
                    StateItem.queued_job_id.set(job_id),
                    StateItem.queued_at.set(now),
                ],
                condition=condition,
            )
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise
            self._existing_state(key, exc)
            raise ClaimNotWonError() from exc

    def _existing_state(self, key: DatasetKey, failed: Exception) -> DatasetState:
        """After a failed condition: the state as it is now, or ``DatasetNotFoundError`` if it was deleted."""
        current = self.get_state(key)
        if current is None:
            raise DatasetNotFoundError(f"dataset {key.describe()} was deleted") from failed
        return current

    def release_queue_claim(self, key: DatasetKey, job_id: str, *, unschedule: bool = False) -> None:
        """Drop a job's claim (its message could not be sent, or the job is not run), so the next
        reader or tick may queue again. ``unschedule`` also takes the dataset off the schedule
        (a job for a paused or broken connection).

        Conditioned on the claim, so a PUT that revived the connection meanwhile (and dropped the
        claim while rescheduling) wins: the dataset stays on the schedule.
        """
        actions = [StateItem.queued_job_id.remove(), StateItem.queued_at.remove()]
        if unschedule:
            actions.append(StateItem.next_sync_at.remove())
        _update_if(_state_handle(key), actions, _job_is_queued(job_id))

    def ensure_dataset(self, key: DatasetKey, provider: str, next_sync_at: float | None = None) -> None:
        """Create the dataset's state item, but only while its connection exists.

        One transaction: a ConditionCheck on the connection item and a put that
        never overwrites. Everything else requires the state item to exist, so a
        sync racing a DELETE cannot bring the dataset back. ``next_sync_at`` puts a
        scheduled data type on the schedule (``None``: on demand only).
        """
        state = StateItem(
            key.dataset_id,
            STATE_SORT_KEY,
            user_id=key.user_id,
            dataset_key=key.dataset_key,
            connection_id=key.connection_id,
            data_type=key.data_type,
            provider=provider,
            schedule_shard=schedule_shard(key.dataset_id),
            next_sync_at=next_sync_at,
        )
        for _ in range(_ENSURE_ATTEMPTS):
            try:
                with TransactWrite(connection=shared_connection()) as transaction:
                    transaction.condition_check(
                        ConnectionItem, key.user_id, key.connection_id, condition=ConnectionItem.user_id.exists()
                    )
                    transaction.save(state, condition=StateItem.pk.does_not_exist())
                return
            except TransactWriteError as exc:
                codes = [reason.code if reason is not None else None for reason in exc.cancellation_reasons or []]
                if codes[:1] == ["ConditionalCheckFailed"]:
                    raise DatasetNotFoundError(f"connection {key.connection_id!r} not found") from exc
                if codes[1:2] == ["ConditionalCheckFailed"]:
                    return  # the state item already exists
                # A conflict with a concurrent writer (another reader creating it, or a PUT): look, then retry.
                if self._get_state_item(key, consistent=True) is not None:
                    return
        raise StoreBusyError(f"could not create the state of {key.describe()}; try again")

    def renew_lease(self, key: DatasetKey, owner: str, now: float, ttl_seconds: float) -> None:
        """Fence: called right before a holder writes records, so a holder that lost the lease writes nothing."""
        self._update_as_owner(key, owner, [StateItem.lease_expires_at.set(now + ttl_seconds)])

    def save_checkpoint(
        self, key: DatasetKey, owner: str, now: float, ttl_seconds: float, checkpoint: Checkpoint
    ) -> None:
        """Record progress and renew the lease in one write; only the owner may."""
        self._update_as_owner(
            key,
            owner,
            [StateItem.checkpoint_json.set(checkpoint.to_json()), StateItem.lease_expires_at.set(now + ttl_seconds)],
        )

    def finish_success(
        self,
        key: DatasetKey,
        owner: str,
        now: float,
        *,
        run: FinishedRun,
        counts: SyncCounts,
        record_count: int | None,
        record_count_delta: int,
        watermark: str | None,
        next_sync_at: float | None,
        full_pass: bool,
    ) -> None:
        actions: list[Any] = [
            StateItem.lease_owner.remove(),
            StateItem.lease_expires_at.remove(),
            StateItem.queued_job_id.remove(),
            StateItem.queued_at.remove(),
            StateItem.checkpoint_json.remove(),
            StateItem.status.set(DatasetStatus.IDLE.value),
            StateItem.last_successful_at.set(now),
            StateItem.last_error.remove(),
            StateItem.consecutive_failures.set(0),
            StateItem.record_count.set(record_count)
            if record_count is not None
            else StateItem.record_count.add(record_count_delta),
            StateItem.last_run_id.set(run.run.run_id),
            StateItem.last_run_status.set(RunStatus.SUCCEEDED.value),
            StateItem.last_counts_json.set(json.dumps(counts.as_dict())),
        ]
        actions.append(StateItem.watermark.set(watermark) if watermark else StateItem.watermark.remove())
        if full_pass:
            actions.append(StateItem.last_full_sync_at.set(now))
        actions += _schedule_actions(key, next_sync_at)
        self._finish_as_owner(key, owner, actions, run)

    def finish_failure(
        self, key: DatasetKey, owner: str, now: float, *, run: FinishedRun, error: str, next_sync_at: float | None
    ) -> None:
        """Keep the checkpoint: the next attempt resumes where this one stopped.

        ``next_sync_at`` is the schedule's retry time (backed off), or ``None`` for on-demand data.
        """
        self._finish_as_owner(
            key,
            owner,
            [
                *_schedule_actions(key, next_sync_at),
                StateItem.lease_owner.remove(),
                StateItem.lease_expires_at.remove(),
                StateItem.queued_job_id.remove(),
                StateItem.queued_at.remove(),
                StateItem.status.set(DatasetStatus.FAILED.value),
                StateItem.last_error.set(error[:1000]),
                StateItem.consecutive_failures.add(1),
                StateItem.last_run_id.set(run.run.run_id),
                StateItem.last_run_status.set(RunStatus.FAILED.value),
            ],
            run,
        )

    def hand_off(self, key: DatasetKey, owner: str, now: float, job_id: str) -> None:
        """Turn our lease into a queued job atomically, so nobody else starts in between."""
        self._update_as_owner(
            key,
            owner,
            [
                StateItem.lease_owner.remove(),
                StateItem.lease_expires_at.remove(),
                StateItem.status.set(DatasetStatus.IDLE.value),
                StateItem.queued_job_id.set(job_id),
                StateItem.queued_at.set(now),
            ],
        )

    def release_lease(self, key: DatasetKey, owner: str, *, drop_claim: bool, status: DatasetStatus) -> None:
        """Give the lease back without a run (a deferred start), restoring the dataset's ``status``.

        The job's claim stays (the job comes back later) unless ``drop_claim``.
        """
        actions: list[Any] = [
            StateItem.lease_owner.remove(),
            StateItem.lease_expires_at.remove(),
            StateItem.status.set(status.value),
        ]
        if drop_claim:
            actions += [StateItem.queued_job_id.remove(), StateItem.queued_at.remove()]
        self._update_as_owner(key, owner, actions)

    def _finish_as_owner(self, key: DatasetKey, owner: str, actions: list[Any], run: FinishedRun) -> None:
        """The end of a sync: the dataset's state (only its lease holder may) and the run's record, in
        one transaction, so a run is never recorded finished by a holder that had lost the lease."""
        gate = run.gate
        for attempt in range(_FINISH_ATTEMPTS):
            try:
                with TransactWrite(connection=shared_connection()) as transaction:
                    transaction.update(_state_handle(key), actions=actions, condition=_lease_owned_by(owner))
                    transaction.save(_run_item(run.run, run.retention_seconds))
                    if gate is not None:
                        transaction.update(LimitItem(gate.pk), actions=list(gate.actions))
                return
            except TransactWriteError as exc:
                codes = [reason.code if reason is not None else None for reason in exc.cancellation_reasons or []]
                if codes[:1] == ["ConditionalCheckFailed"]:
                    raise LeaseLostError(
                        f"lost the lease on {key.describe()} (taken over, or the dataset was deleted)"
                    ) from exc
                if gate is not None and codes[2:3] == ["ValidationError"]:
                    # The gate's holders map is gone (an operator reset the gate): the dataset's end must not
                    # depend on it. Its slot was reset with it; this one sync goes uncounted.
                    logger.warning("finishing %s without its provider gate update: %s", key.describe(), exc)
                    gate = None
                    continue
                if "TransactionConflict" not in codes or attempt + 1 == _FINISH_ATTEMPTS:
                    raise
        raise StoreBusyError(f"could not finish the sync of {key.describe()}; try again")

    def _update_as_owner(self, key: DatasetKey, owner: str, actions: list[Any]) -> None:
        """Every write a lease holder makes (renew, checkpoint, release) goes through here."""
        try:
            _state_handle(key).update(actions=actions, condition=_lease_owned_by(owner))
        except UpdateError as exc:
            if _condition_failed(exc):
                raise LeaseLostError(
                    f"lost the lease on {key.describe()} (taken over, or the dataset was deleted)"
                ) from exc
            raise

    def delete_connection_datasets(self, user_id: str, connection_id: str, data_types: Iterable[str]) -> int:
        """Every dataset the connection has or ever had; returns how many had anything stored.

        ``data_types`` (the provider's) are deleted by key, since the index lags writes;
        the index finds data types the provider config no longer lists.
        """
        prefix = f"{connection_id}#"
        indexed = {
            item.data_type
            for item in DatasetItem.by_user.query(user_id, DatasetItem.dataset_key.startswith(prefix))
            if isinstance(item, StateItem)
        }
        return sum(
            self.delete_dataset(DatasetKey(user_id, connection_id, data_type))
            for data_type in sorted(indexed | set(data_types))
        )

    def delete_dataset(self, key: DatasetKey) -> bool:
        """Remove records, run history and, last, the state item of one dataset; ``True`` if it had any.

        The state item goes last so that a delete cut short (a Lambda timeout) can
        still be found through the index and finished by calling it again.
        """
        items = list(DatasetItem.query(key.dataset_id, attributes_to_get=["pk", "sk"]))
        with DatasetItem.batch_write() as batch:
            for item in items:
                if item.sk != STATE_SORT_KEY:
                    batch.delete(item)
        runs = list(RunItem.query(key.dataset_id, attributes_to_get=["dataset_id", "run_id"]))
        with RunItem.batch_write() as run_batch:
            for run in runs:
                run_batch.delete(run)
        with contextlib.suppress(DeleteError):
            StateItem(key.dataset_id, STATE_SORT_KEY).delete()
        return bool(items or runs)

    # --- records -------------------------------------------------------------

    def get_record_hashes(self, key: DatasetKey, record_ids: Iterable[str]) -> dict[str, str]:
        keys = [(key.dataset_id, RECORD_SORT_PREFIX + rid) for rid in set(record_ids)]
        hashes: dict[str, str] = {}
        for chunk in _chunks(keys, 100):
            for item in DatasetItem.batch_get(chunk, attributes_to_get=["pk", "sk", "kind", "content_hash"]):
                if isinstance(item, RecordItem):
                    hashes[item.sk[len(RECORD_SORT_PREFIX) :]] = item.content_hash
        return hashes

    def write_records(
        self,
        key: DatasetKey,
        records: Sequence[tuple[UpstreamRecord, str]],
        *,
        generation: str | None,
        now: float,
    ) -> None:
        with DatasetItem.batch_write() as batch:
            for record, digest in records:
                batch.save(
                    RecordItem(
                        key.dataset_id,
                        RECORD_SORT_PREFIX + record.record_id,
                        record_id=record.record_id,
                        data_json=json.dumps(dict(record.data), separators=(",", ":"), default=str),
                        content_hash=digest,
                        upstream_updated_at=record.updated_at,
                        seen_generation=generation,
                        synced_at=now,
                    )
                )

    def delete_records(self, key: DatasetKey, record_ids: Iterable[str]) -> None:
        with DatasetItem.batch_write() as batch:
            for rid in record_ids:
                batch.delete(RecordItem(key.dataset_id, RECORD_SORT_PREFIX + rid))

    def sweep_unseen_records(self, key: DatasetKey, generation: str) -> tuple[int, int]:
        """After a complete full pass: delete records the pass did not see.

        Returns (deleted, remaining); the pass reads every key anyway, so the
        remaining count is exact and corrects any drift from interrupted runs.
        """
        stale: list[DatasetItem] = []
        remaining = 0
        for item in DatasetItem.query(
            key.dataset_id,
            DatasetItem.sk.startswith(RECORD_SORT_PREFIX),
            attributes_to_get=["pk", "sk", "kind", "seen_generation"],
        ):
            if isinstance(item, RecordItem) and item.seen_generation == generation:
                remaining += 1
            else:
                stale.append(item)
        with DatasetItem.batch_write() as batch:
            for item in stale:
                batch.delete(item)
        return len(stale), remaining

    # --- runs ----------------------------------------------------------------

    def put_run(self, run: SyncRun, retention_seconds: float) -> None:
        _run_item(run, retention_seconds).save()

    def delete_run(self, key: DatasetKey, run_id: str) -> None:
        with contextlib.suppress(DeleteError):
            RunItem(key.dataset_id, run_id).delete()

    def mark_run(self, key: DatasetKey, run_id: str, status: RunStatus, *, only_if: RunStatus) -> None:
        _update_if(RunItem(key.dataset_id, run_id), [RunItem.status.set(status.value)], RunItem.status == only_if.value)

    def list_runs(self, key: DatasetKey, limit: int, now: float) -> list[SyncRun]:
        """Newest first. Expired runs are skipped: TTL deletion is lazy (and moto never does it)."""
        items = RunItem.query(
            key.dataset_id,
            filter_condition=RunItem.expires_at > int(now),
            scan_index_forward=False,
            page_size=limit,
        )
        runs: list[SyncRun] = []
        for item in items:
            runs.append(_run_from_item(item, key))
            if len(runs) >= limit:
                break
        return runs

    def get_run(self, key: DatasetKey, run_id: str, now: float) -> SyncRun | None:
        try:
            item = RunItem.get(key.dataset_id, run_id)
        except RunItem.DoesNotExist:
            return None
        if item.expires_at <= now:
            return None
        return _run_from_item(item, key)

    # --- shared limits: buckets, breakers, slots, scheduler --------------------

    def update_shared(
        self,
        pk: str,
        decide: Callable[[LimitItem | None], tuple[T, list[Any] | None]],
        *,
        attempts: int = _SHARED_STATE_ATTEMPTS,
    ) -> T:
        return self.shared.update(pk, decide, attempts=attempts)

    def update_shared_json(
        self,
        pk: str,
        decide: Callable[[dict[str, Any] | None], tuple[T, dict[str, Any] | None]],
        *,
        attempts: int = _SHARED_STATE_ATTEMPTS,
    ) -> T:
        return self.shared.update_json(pk, decide, attempts=attempts)

    def get_shared_json(self, pk: str) -> dict[str, Any] | None:
        return self.shared.get_json(pk)

    def get_shared_many(self, pks: Sequence[str]) -> dict[str, LimitItem]:
        return self.shared.get_many(pks)

    def take_token(
        self, bucket_key: str, bucket: Bucket, now: float, *, attempts: int = _SHARED_STATE_ATTEMPTS
    ) -> float | None:
        """Take one token from a shared bucket; ``None`` when granted, else seconds until one is free."""

        def decide(item: LimitItem | None) -> tuple[float | None, list[Any] | None]:
            result = take(bucket, item.tokens if item else None, item.updated_at if item else None, now)
            if not result.granted:
                return result.retry_after_seconds, None
            return None, [LimitItem.tokens.set(result.tokens_after), LimitItem.updated_at.set(now)]

        return self.update_shared(bucket_key, decide, attempts=attempts)

    # --- the schedule --------------------------------------------------------

    def due_datasets(self, shard: str, now: float, limit: int) -> list[DueDataset]:
        """Datasets on one shard of the schedule index whose ``next_sync_at`` has come, oldest first."""
        due: list[DueDataset] = []
        for item in DatasetItem.by_next_sync.query(shard, DatasetItem.next_sync_at <= now, limit=limit):
            if not isinstance(item, StateItem) or item.user_id is None or item.next_sync_at is None:
                continue
            due.append(
                DueDataset(
                    key=DatasetKey(item.user_id, item.connection_id, item.data_type),
                    provider=item.provider,
                    next_sync_at=float(item.next_sync_at),
                    lease_expires_at=item.lease_expires_at,
                    queued_job_id=item.queued_job_id,
                    queued_at=item.queued_at,
                )
            )
        return due

    def claim_due(self, claims: Sequence[tuple[DueDataset, str]], now: float, claim_ttl_seconds: float) -> list[str]:
        """Claim many due datasets for their scheduled jobs; returns the job ids whose claim was won.

        One TransactWriteItems per 100 datasets (the tick's cost is per hundred, not per
        dataset). Each update carries the same conditions as a reader's claim, plus "still
        due at the time the planner saw": a dataset that got synced, leased, claimed or
        deleted since the index was read is dropped from the transaction and the rest retried.
        """
        won: list[str] = []
        for chunk in _chunks(list(claims), _TRANSACTION_ITEMS):
            pending = list(chunk)
            for _ in range(_CLAIM_ATTEMPTS):
                if not pending:
                    break
                try:
                    with TransactWrite(connection=shared_connection()) as transaction:
                        for due, job_id in pending:
                            transaction.update(
                                _state_handle(due.key),
                                actions=[StateItem.queued_job_id.set(job_id), StateItem.queued_at.set(now)],
                                condition=_dataset_exists()
                                & _lease_free(now)
                                & _no_live_queue_claim(now, claim_ttl_seconds)
                                & _still_due_at(due.next_sync_at),
                            )
                    won += [job_id for _, job_id in pending]
                    break
                except TransactWriteError as exc:
                    reasons = exc.cancellation_reasons or []
                    if len(reasons) != len(pending):
                        raise
                    # Drop the datasets whose condition failed; retry the rest (conflicts, or innocent bystanders).
                    pending = [
                        claim
                        for claim, reason in zip(pending, reasons, strict=True)
                        if reason is None or reason.code != "ConditionalCheckFailed"
                    ]
        return won

    def set_schedule(self, keys: Iterable[DatasetKey], next_sync_at: float | None) -> None:
        """Put datasets on the schedule, due at ``next_sync_at``, or take them off it (``None``).

        Putting one on also drops any queued job's claim: that job (sent while the connection
        was paused or broken) is superseded, and the next tick sends a fresh one.
        """
        for key in keys:
            actions = _schedule_actions(key, next_sync_at)
            if next_sync_at is not None:
                actions += [StateItem.queued_job_id.remove(), StateItem.queued_at.remove()]
            _update_if(_state_handle(key), actions, _dataset_exists())

    # --- connection health -----------------------------------------------------

    def record_auth_failure(self, connection: Connection, *, threshold: int, reason: str, now: float) -> bool:
        """Count a provider 401/403 against the connection; ``True`` when this one made it NEEDS_REVIEW.

        Conditioned on the connection being the one the sync used (same ``updated_at``):
        a failure with credentials the user has since replaced does not count.
        """
        handle = ConnectionItem(connection.user_id, connection.connection_id)
        same_version = (ConnectionItem.updated_at == connection.updated_at) & (
            ConnectionItem.status == ConnectionStatus.ACTIVE.value
        )
        if not _update_if(handle, [ConnectionItem.auth_failures.add(1)], same_version):
            return False
        if int(handle.auth_failures or 0) < threshold:
            return False
        return _update_if(
            handle,
            [
                ConnectionItem.status.set(ConnectionStatus.NEEDS_REVIEW.value),
                ConnectionItem.status_reason.set(reason[:500]),
                ConnectionItem.updated_at.set(now),
            ],
            same_version,
        )

    def reset_auth_failures(self, connection: Connection) -> None:
        _update_if(
            ConnectionItem(connection.user_id, connection.connection_id),
            [ConnectionItem.auth_failures.set(0)],
            ConnectionItem.updated_at == connection.updated_at,
        )


__all__ = ["DatasetPage", "DynamoStore", "content_hash", "provider_user_key", "shared_json", "shared_json_write"]
