"""Each dataset's state item: the single-flight lease, the queue claim, checkpoints, and the one
transaction that ends a sync (state, run record, the provider gate's slot and statistics)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from chalicelib.domain.errors import (
    ClaimNotWonError,
    DatasetNotFoundError,
    JobNotClaimableError,
    LeaseLostError,
    StoreBusyError,
    SyncInProgressError,
)
from chalicelib.domain.model import (
    Checkpoint,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    RunTally,
    SyncCounts,
    SyncRun,
)
from chalicelib.store.conditions import (
    claim_cleared,
    condition_failed,
    dataset_exists,
    identity_actions,
    in_transaction,
    job_is_queued,
    lease_free,
    lease_owned_by,
    lease_released,
    no_live_queue_claim,
    no_run_finished_since,
    past_cooldown,
    schedule_actions,
    state_handle,
    update_if,
)
from chalicelib.store.convert import (
    get_state_item,
    new_state_item,
    run_item,
    state_from_item,
)
from chalicelib.store.items import (
    ConnectionItem,
    DatasetItem,
    LimitItem,
    StateItem,
    shared_connection,
)
from chalicelib.store.shared import SharedUpdate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinishedRun:
    """A run's final record, written with the dataset's state when a sync ends; ``gate`` is the
    provider gate's unguarded update (the sync's slot back, its statistics) that rides along."""

    run: SyncRun
    retention_seconds: float
    gate: SharedUpdate | None = None


_ENSURE_ATTEMPTS = 3


_FINISH_ATTEMPTS = 3


_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems


_STATE_AT = 1
"""Where the state update stands in a sync's final transaction (PynamoDB sends puts, then updates)."""
_GATE_AT = 2


def _gate_path_invalid(failed: TransactWriteError, codes: list[str | None]) -> bool:
    """The gate update's path does not exist: a per-item ``ValidationError`` (DynamoDB), or a whole-request
    ``ValidationException`` without reasons (moto, which the tests and the local run use)."""
    if codes[_GATE_AT : _GATE_AT + 1] == ["ValidationError"]:
        return True
    return not codes and failed.cause_response_code == "ValidationException"


class DatasetStore:
    """Each dataset's state item: the single-flight lease, the queue claim, checkpoints, the end of a sync."""

    def get_state(self, key: DatasetKey, consistent: bool = True) -> DatasetState | None:
        item = get_state_item(key, consistent)
        return state_from_item(item) if item is not None else None

    def list_states(self, user_id: str) -> list[DatasetState]:
        return [state_from_item(item) for item in DatasetItem.by_user.query(user_id) if isinstance(item, StateItem)]

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
        run_id: str | None = None,
    ) -> DatasetState:
        """Win the dataset's single-flight lease, or raise.

        The lease names its ``run_id``; a run id still there when the lease is taken (a holder that
        died never let it go) comes back as ``prior_run_id``, so the new holder can mark that run
        abandoned. A worker's take counts as one more attempt of its job (``job_attempts``).

        A direct caller (a read) may take a free lease only if no run has finished since
        it looked (``expected_last_run_id``): otherwise that run's result is what it
        wanted. Its sync satisfies any queued job, so it clears the claim. A worker must
        also present the queued job id, so a redelivered or superseded job never runs a
        second sync.
        """
        actions = [
            *identity_actions(key, provider),
            # Read before the set below: DynamoDB evaluates every operand against the item as it was.
            StateItem.prior_run_id.set(StateItem.lease_run_id | ""),
            StateItem.lease_run_id.set(run_id) if run_id is not None else StateItem.lease_run_id.remove(),
            StateItem.lease_owner.set(owner),
            StateItem.lease_expires_at.set(now + ttl_seconds),
            StateItem.status.set(DatasetStatus.RUNNING.value),
            StateItem.last_attempted_at.set(now),
        ]
        condition = dataset_exists() & lease_free(now)
        if job_id is not None:
            # The claim stays until the job finishes, so a redelivery after a crash can resume it.
            condition = condition & job_is_queued(job_id)
            actions.append(StateItem.job_attempts.add(1))
        else:
            condition = condition & no_run_finished_since(expected_last_run_id)
            actions += claim_cleared()
        handle = state_handle(key)
        try:
            handle.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if in_transaction(exc):
                raise SyncInProgressError() from exc
            if not condition_failed(exc):
                raise
            current = self._existing_state(key, exc)
            if job_id is not None and current.queued_job_id != job_id:
                raise JobNotClaimableError(f"job {job_id} is no longer queued for {key.describe()}") from exc
            raise SyncInProgressError() from exc
        return state_from_item(handle)

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
        condition = dataset_exists() & lease_free(now) & no_live_queue_claim(now, claim_ttl_seconds)
        if require_past_cooldown:
            condition = condition & past_cooldown(now, cooldown_seconds)
        try:
            state_handle(key).update(
                actions=[
                    *identity_actions(key, provider),
                    StateItem.queued_job_id.set(job_id),
                    StateItem.queued_at.set(now),
                    StateItem.job_attempts.remove(),
                ],
                condition=condition,
            )
        except UpdateError as exc:
            if in_transaction(exc):
                raise ClaimNotWonError() from exc  # the lease is held: no claim either way
            if not condition_failed(exc):
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
        actions = claim_cleared()
        if unschedule:
            actions.append(StateItem.next_sync_at.remove())
        update_if(state_handle(key), actions, job_is_queued(job_id))

    def ensure_dataset(self, key: DatasetKey, provider: str, next_sync_at: float | None = None) -> None:
        """Create the dataset's state item, but only while its connection exists.

        One transaction: a ConditionCheck on the connection item and a put that
        never overwrites. Everything else requires the state item to exist, so a
        sync racing a DELETE cannot bring the dataset back. ``next_sync_at`` puts a
        scheduled data type on the schedule (``None``: on demand only).
        """
        state = new_state_item(key, provider, next_sync_at)
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
                if get_state_item(key, consistent=True) is not None:
                    return
        raise StoreBusyError(f"could not create the state of {key.describe()}; try again")

    def renew_lease(self, key: DatasetKey, owner: str, now: float, ttl_seconds: float) -> None:
        """Fence: called right before a holder writes records, so a holder that lost the lease writes nothing."""
        self._update_as_owner(key, owner, [StateItem.lease_expires_at.set(now + ttl_seconds)])

    def save_checkpoint(
        self,
        key: DatasetKey,
        owner: str,
        now: float,
        ttl_seconds: float,
        checkpoint: Checkpoint,
        tally: RunTally | None = None,
    ) -> None:
        """Record progress (and the run's counts so far) and renew the lease in one write; only the owner may."""
        actions = [
            StateItem.checkpoint_json.set(checkpoint.to_json()),
            StateItem.lease_expires_at.set(now + ttl_seconds),
        ]
        if tally is not None:
            actions.append(StateItem.run_tally_json.set(tally.to_json()))
        self._update_as_owner(key, owner, actions)

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
        """``record_count`` set exact (a sweep counted it) or moved by ``record_count_delta``: records stored
        outside ``RecordStore.write_records``, which counts its own (the engine passes 0)."""
        actions: list[Any] = [
            *lease_released(),
            *claim_cleared(),
            StateItem.run_tally_json.remove(),
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
        actions += schedule_actions(key, next_sync_at)
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
                *schedule_actions(key, next_sync_at),
                *lease_released(),
                *claim_cleared(),
                StateItem.run_tally_json.remove(),
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
                *lease_released(),
                StateItem.run_tally_json.remove(),
                StateItem.status.set(DatasetStatus.IDLE.value),
                StateItem.queued_job_id.set(job_id),
                StateItem.queued_at.set(now),
                StateItem.job_attempts.remove(),
            ],
        )

    def release_lease(
        self, key: DatasetKey, owner: str, *, drop_claim: bool, status: DatasetStatus, undo_attempt: bool = False
    ) -> None:
        """Give the lease back without a run (a deferred start), restoring the dataset's ``status``.

        The job's claim stays (the job comes back later) unless ``drop_claim``.
        """
        actions: list[Any] = [*lease_released(), StateItem.status.set(status.value)]
        if drop_claim:
            actions += claim_cleared()
        elif undo_attempt:
            actions.append(StateItem.job_attempts.add(-1))  # the job comes back: a deferred take is no attempt
        self._update_as_owner(key, owner, actions)

    def _finish_as_owner(self, key: DatasetKey, owner: str, actions: list[Any], run: FinishedRun) -> None:
        """The end of a sync: the dataset's state (only its lease holder may) and the run's record, in
        one transaction, so a run is never recorded finished by a holder that had lost the lease."""
        gate = run.gate
        for attempt in range(_FINISH_ATTEMPTS):
            try:
                with TransactWrite(connection=shared_connection()) as transaction:
                    transaction.update(state_handle(key), actions=actions, condition=lease_owned_by(owner))
                    transaction.save(run_item(run.run, run.retention_seconds))
                    if gate is not None:
                        transaction.update(LimitItem(gate.pk), actions=list(gate.actions))
                return
            except TransactWriteError as exc:
                # PynamoDB sends puts before updates: the reasons come as [run record, state, gate].
                codes = [reason.code if reason is not None else None for reason in exc.cancellation_reasons or []]
                if codes[_STATE_AT : _STATE_AT + 1] == ["ConditionalCheckFailed"]:
                    raise LeaseLostError(
                        f"lost the lease on {key.describe()} (taken over, or the dataset was deleted)"
                    ) from exc
                if gate is not None and _gate_path_invalid(exc, codes):
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
            state_handle(key).update(actions=actions, condition=lease_owned_by(owner))
        except UpdateError as exc:
            if condition_failed(exc):
                raise LeaseLostError(
                    f"lost the lease on {key.describe()} (taken over, or the dataset was deleted)"
                ) from exc
            raise
