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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pynamodb.exceptions import DeleteError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.domain import (
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
from chalicelib.errors import (
    ClaimNotWonError,
    DatasetNotFoundError,
    JobNotClaimableError,
    LeaseLostError,
    StoreBusyError,
    SyncInProgressError,
    ValidationError,
)
from chalicelib.limits import Bucket, take
from chalicelib.models import (
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
from chalicelib.providers.base import UpstreamRecord

_CONDITION_FAILED = "ConditionalCheckFailedException"
_ENSURE_ATTEMPTS = 3
_TOKEN_ATTEMPTS = 5


def content_hash(data: Any) -> str:
    """Stable hash of a record's content, for inserted / updated / unchanged detection."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _condition_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == _CONDITION_FAILED


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
        credentials=json.loads(item.credentials_json or "{}"),
        settings=json.loads(item.settings_json or "{}"),
        status=ConnectionStatus(item.status),
        status_reason=item.status_reason,
        created_at=float(item.created_at),
        updated_at=float(item.updated_at),
    )


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
        ),
        error=item.error,
        resumed=item.resumed,
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


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DynamoStore:
    """The one storage implementation; tests run it against moto."""

    # --- connections -------------------------------------------------------

    def put_connection(self, connection: Connection) -> None:
        ConnectionItem(
            connection.user_id,
            connection.connection_id,
            provider=connection.provider,
            credentials_json=json.dumps(dict(connection.credentials)),
            settings_json=json.dumps(dict(connection.settings)),
            status=connection.status.value,
            status_reason=connection.status_reason,
            created_at=connection.created_at,
            updated_at=connection.updated_at,
        ).save()

    def get_connection(self, user_id: str, connection_id: str) -> Connection | None:
        try:
            return _connection_from_item(ConnectionItem.get(user_id, connection_id))
        except ConnectionItem.DoesNotExist:
            return None

    def list_connections(self, user_id: str) -> list[Connection]:
        return [_connection_from_item(item) for item in ConnectionItem.query(user_id)]

    def delete_connection(self, user_id: str, connection_id: str) -> None:
        with contextlib.suppress(DeleteError):
            ConnectionItem(user_id, connection_id).delete()

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

    def release_queue_claim(self, key: DatasetKey, job_id: str) -> None:
        """Undo a claim whose message could not be sent, so the next reader may try again."""
        try:
            _state_handle(key).update(
                actions=[StateItem.queued_job_id.remove(), StateItem.queued_at.remove()],
                condition=_job_is_queued(job_id),
            )
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise

    def ensure_dataset(self, key: DatasetKey, provider: str) -> None:
        """Create the dataset's state item, but only while its connection exists.

        One transaction: a ConditionCheck on the connection item and a put that
        never overwrites. Everything else requires the state item to exist, so a
        sync racing a DELETE cannot bring the dataset back.
        """
        state = StateItem(
            key.dataset_id,
            STATE_SORT_KEY,
            user_id=key.user_id,
            dataset_key=key.dataset_key,
            connection_id=key.connection_id,
            data_type=key.data_type,
            provider=provider,
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
        run_id: str,
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
            StateItem.last_run_id.set(run_id),
            StateItem.last_run_status.set(RunStatus.SUCCEEDED.value),
            StateItem.last_counts_json.set(json.dumps(counts.as_dict())),
        ]
        actions.append(StateItem.watermark.set(watermark) if watermark else StateItem.watermark.remove())
        if full_pass:
            actions.append(StateItem.last_full_sync_at.set(now))
        actions.append(
            StateItem.next_sync_at.set(next_sync_at) if next_sync_at is not None else StateItem.next_sync_at.remove()
        )
        self._update_as_owner(key, owner, actions)

    def finish_failure(self, key: DatasetKey, owner: str, now: float, *, run_id: str, error: str) -> None:
        """Keep the checkpoint: the next attempt resumes where this one stopped."""
        self._update_as_owner(
            key,
            owner,
            [
                StateItem.lease_owner.remove(),
                StateItem.lease_expires_at.remove(),
                StateItem.queued_job_id.remove(),
                StateItem.queued_at.remove(),
                StateItem.status.set(DatasetStatus.FAILED.value),
                StateItem.last_error.set(error[:1000]),
                StateItem.consecutive_failures.add(1),
                StateItem.last_run_id.set(run_id),
                StateItem.last_run_status.set(RunStatus.FAILED.value),
            ],
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
        RunItem(
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
            error=run.error,
            resumed=run.resumed,
            expires_at=int(run.created_at + retention_seconds),
        ).save()

    def delete_run(self, key: DatasetKey, run_id: str) -> None:
        with contextlib.suppress(DeleteError):
            RunItem(key.dataset_id, run_id).delete()

    def mark_run(self, key: DatasetKey, run_id: str, status: RunStatus, *, only_if: RunStatus) -> None:
        try:
            RunItem(key.dataset_id, run_id).update(
                actions=[RunItem.status.set(status.value)],
                condition=RunItem.status == only_if.value,
            )
        except UpdateError as exc:
            if not _condition_failed(exc):
                raise

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

    # --- manual refresh throttle ---------------------------------------------

    def take_token(self, bucket_key: str, bucket: Bucket, now: float) -> float | None:
        """Take one token from a shared bucket; ``None`` when granted, else seconds until one is free.

        Optimistic concurrency: the write is conditioned on the ``version`` that was read,
        so two Lambdas cannot both spend the same token; the loser re-reads and retries.
        """
        handle = LimitItem(bucket_key)
        for _ in range(_TOKEN_ATTEMPTS):
            tokens: float | None = None
            updated_at: float | None = None
            version: int | None = None
            with contextlib.suppress(LimitItem.DoesNotExist):
                current = LimitItem.get(bucket_key, consistent_read=True)
                tokens, updated_at = current.tokens, current.updated_at
                version = None if current.version is None else int(current.version)
            result = take(bucket, tokens, updated_at, now)
            if not result.granted:
                return result.retry_after_seconds
            unchanged = LimitItem.version.does_not_exist() if version is None else LimitItem.version == version
            try:
                handle.update(
                    actions=[
                        LimitItem.tokens.set(result.tokens_after),
                        LimitItem.updated_at.set(now),
                        LimitItem.version.set((version or 0) + 1),
                    ],
                    condition=unchanged,
                )
                return None
            except UpdateError as exc:
                if not _condition_failed(exc):
                    raise
        raise StoreBusyError("too many concurrent requests for the same limit; try again")


__all__ = ["DatasetPage", "DynamoStore", "content_hash"]
