"""The schedule: datasets due on each shard of the ``by_next_sync`` index, claimed in transactions
for the tick's jobs, and moved on or off the schedule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.domain.model import (
    DatasetKey,
)
from chalicelib.domain.planner import DueDataset
from chalicelib.store.conditions import (
    chunks,
    dataset_exists,
    lease_free,
    no_live_queue_claim,
    schedule_actions,
    state_handle,
    still_due_at,
    update_if,
)
from chalicelib.store.items import (
    DatasetItem,
    StateItem,
    shared_connection,
)

_CLAIM_ATTEMPTS = 3


_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems


class ScheduleIndex:
    """The schedule: datasets due on each shard, claimed for the tick's jobs."""

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
        for chunk in chunks(list(claims), _TRANSACTION_ITEMS):
            pending = list(chunk)
            for _ in range(_CLAIM_ATTEMPTS):
                if not pending:
                    break
                try:
                    with TransactWrite(connection=shared_connection()) as transaction:
                        for due, job_id in pending:
                            transaction.update(
                                state_handle(due.key),
                                actions=[StateItem.queued_job_id.set(job_id), StateItem.queued_at.set(now)],
                                condition=dataset_exists()
                                & lease_free(now)
                                & no_live_queue_claim(now, claim_ttl_seconds)
                                & still_due_at(due.next_sync_at),
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
            actions = schedule_actions(key, next_sync_at)
            if next_sync_at is not None:
                actions += [StateItem.queued_job_id.remove(), StateItem.queued_at.remove()]
            update_if(state_handle(key), actions, dataset_exists())
