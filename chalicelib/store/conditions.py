"""Named condition fragments of every conditional write, with the timelines they guard.

A failed condition is ``False`` from ``update_if``, never a raw ``UpdateError``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.models import Model

from chalicelib.domain.model import (
    DatasetKey,
)
from chalicelib.domain.planner import schedule_shard
from chalicelib.store.items import (
    STATE_SORT_KEY,
    ConnectionItem,
    StateItem,
)

CONDITION_FAILED = "ConditionalCheckFailedException"


def condition_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == CONDITION_FAILED


def in_transaction(exc: Exception) -> bool:
    """A plain write met the item inside a transaction: for a state item, a lease holder storing a page
    or ending its sync (``RecordStore.write_records``, ``DatasetStore.finish_success``), so the lease is held."""
    return getattr(exc, "cause_response_code", None) == "TransactionConflictException"


def update_if(handle: Model, actions: list[Any], condition: Condition) -> bool:
    """One conditional UpdateItem; ``False`` when its condition failed (any other error raises)."""
    try:
        handle.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if condition_failed(exc):
            return False
        raise
    return True


def dataset_exists() -> Condition:
    """Only ``ensure_dataset`` creates a state item, so a deleted dataset stays deleted."""
    return cast(Condition, StateItem.pk.exists())


def lease_free(now: float) -> Condition:
    # Free at the instant it expires: the same boundary as ``policy.lease_is_held``.
    return cast(Condition, StateItem.lease_owner.does_not_exist() | (StateItem.lease_expires_at <= now))


def lease_owned_by(owner: str) -> Condition:
    return cast(Condition, StateItem.lease_owner == owner)


def lease_released() -> list[Any]:
    """Every way a holder lets the lease go: its run id goes with it (one left behind names a dead run)."""
    return [StateItem.lease_owner.remove(), StateItem.lease_expires_at.remove(), StateItem.lease_run_id.remove()]


def claim_cleared() -> list[Any]:
    """The queued job's claim and its delivery count."""
    return [StateItem.queued_job_id.remove(), StateItem.queued_at.remove(), StateItem.job_attempts.remove()]


def job_is_queued(job_id: str) -> Condition:
    return cast(Condition, StateItem.queued_job_id == job_id)


def no_run_finished_since(expected_last_run_id: str | None) -> Condition:
    if expected_last_run_id is None:
        return StateItem.last_run_id.does_not_exist()
    return cast(Condition, StateItem.last_run_id == expected_last_run_id)


def no_live_queue_claim(now: float, claim_ttl_seconds: float) -> Condition:
    # Free at the instant its TTL ends: the same boundary as ``policy.queue_claim_is_live``.
    return cast(Condition, StateItem.queued_job_id.does_not_exist() | (StateItem.queued_at <= now - claim_ttl_seconds))


def still_due_at(next_sync_at: float) -> Condition:
    """The schedule decided on this due time; a sync since then moved it, and the claim is moot."""
    return cast(Condition, StateItem.next_sync_at == next_sync_at)


def past_cooldown(now: float, cooldown_seconds: float) -> Condition:
    """Guards against a claim made from a stale read of a dataset someone just synced."""
    condition = StateItem.last_successful_at.does_not_exist() | (StateItem.last_successful_at <= now - cooldown_seconds)
    return cast(Condition, condition)


def connection_exists() -> Condition:
    return cast(Condition, ConnectionItem.user_id.exists())


def connection_absent() -> Condition:
    return cast(Condition, ConnectionItem.user_id.does_not_exist())


def credentials_version_is(version: int) -> Condition:
    same = ConnectionItem.credentials_version == version
    if version == 0:  # items written before versions existed have none
        same = same | ConnectionItem.credentials_version.does_not_exist()
    return cast(Condition, connection_exists() & same)


def refresh_lease_free(now: float) -> Condition:
    # Free at the instant it expires, like a dataset's sync lease.
    return cast(Condition, ConnectionItem.refresh_owner.does_not_exist() | (ConnectionItem.refresh_expires_at <= now))


def refresh_lease_owned_by(owner: str) -> Condition:
    return cast(Condition, ConnectionItem.refresh_owner == owner)


def refresh_lease_cleared() -> list[Any]:
    return [ConnectionItem.refresh_owner.remove(), ConnectionItem.refresh_expires_at.remove()]


def credentials_actions(sealed: str, version: int) -> list[Any]:
    """A credentials write: the blob (or none), the next version, and no refresh lease left behind."""
    return [
        ConnectionItem.credentials_sealed.set(sealed) if sealed else ConnectionItem.credentials_sealed.remove(),
        ConnectionItem.credentials_version.set(version),
        *refresh_lease_cleared(),
    ]


def state_handle(key: DatasetKey) -> StateItem:
    return StateItem(key.dataset_id, STATE_SORT_KEY)


def identity_actions(key: DatasetKey, provider: str) -> list[Any]:
    """Written on every lease/claim write so the first one also creates a well-formed item."""
    return [
        StateItem.kind.set(StateItem),
        StateItem.user_id.set(key.user_id),
        StateItem.dataset_key.set(key.dataset_key),
        StateItem.connection_id.set(key.connection_id),
        StateItem.data_type.set(key.data_type),
        StateItem.provider.set(provider),
    ]


def schedule_actions(key: DatasetKey, next_sync_at: float | None) -> list[Any]:
    """Due at ``next_sync_at`` on the schedule index (the shard is written too: items from before the
    index existed join it at their next sync), or off it."""
    if next_sync_at is None:
        return [StateItem.next_sync_at.remove()]
    return [StateItem.next_sync_at.set(next_sync_at), StateItem.schedule_shard.set(schedule_shard(key.dataset_id))]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
