"""The dataset state item's conditions against moto (``chalicelib/store/conditions.py``), one behaviour per test:
``ensure_dataset``, the sync lease, the queue claim, the holder's fenced writes and the tick's ``claim_due``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chalicelib.domain.errors import (
    ClaimNotWonError,
    DatasetNotFoundError,
    JobNotClaimableError,
    LeaseLostError,
    SyncInProgressError,
)
from chalicelib.domain.model import (
    Checkpoint,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    SyncCounts,
    SyncRun,
    Trigger,
)
from chalicelib.domain.planner import DueDataset, schedule_shard
from chalicelib.store.datasets import FinishedRun
from chalicelib.store.dynamo import DynamoStore
from tests.integration.conftest import saved_connection

T0 = 1_767_225_600.0
TTL = 300.0
CLAIM_TTL = 900.0
COOLDOWN = 60.0
PROVIDER = "whoop"
KEY = DatasetKey("u1", "c1", "cycles")
OTHER = DatasetKey("u1", "c1", "sleep")


def _connect(store: DynamoStore) -> None:
    saved_connection(store, KEY, PROVIDER, T0)


@pytest.fixture
def dataset(store: DynamoStore) -> DynamoStore:
    """A connection with one dataset (``KEY``), never synced, due at ``T0`` on the schedule."""
    _connect(store)
    store.ensure_dataset(KEY, PROVIDER, next_sync_at=T0)
    return store


def _state(store: DynamoStore, key: DatasetKey = KEY) -> DatasetState:
    state = store.get_state(key)
    assert state is not None
    return state


def _lease(store: DynamoStore, owner: str, now: float, **kwargs: str | None) -> DatasetState:
    return store.acquire_lease(KEY, PROVIDER, owner, now, TTL, **kwargs)


def _claim(store: DynamoStore, job_id: str, now: float, *, require_past_cooldown: bool = True) -> None:
    store.claim_queue(
        KEY,
        PROVIDER,
        job_id,
        now,
        cooldown_seconds=COOLDOWN,
        claim_ttl_seconds=CLAIM_TTL,
        require_past_cooldown=require_past_cooldown,
    )


def _finish(store: DynamoStore, owner: str, now: float, run_id: str) -> None:
    run = SyncRun(KEY, run_id, Trigger.READ, RunStatus.SUCCEEDED, created_at=now, started_at=now, ended_at=now)
    store.finish_success(
        KEY,
        owner,
        now,
        run=FinishedRun(run, 86_400.0),
        counts=SyncCounts(),
        record_count=0,
        record_count_delta=0,
        watermark=None,
        next_sync_at=now + 3_600,
        full_pass=True,
    )


# ensure_dataset


def test_a_dataset_is_not_created_without_its_connection(store: DynamoStore) -> None:
    # Given no connection c1
    # When a dataset of it is ensured
    # Then it is refused and nothing is written
    with pytest.raises(DatasetNotFoundError):
        store.ensure_dataset(KEY, PROVIDER)
    assert store.get_state(KEY) is None


def test_a_dataset_is_not_created_once_its_connection_was_deleted(store: DynamoStore) -> None:
    # Given a connection that was deleted
    _connect(store)
    store.delete_connection(KEY.user_id, KEY.connection_id)
    # When a dataset of it is ensured (a read racing the DELETE)
    # Then it is refused and nothing is written
    with pytest.raises(DatasetNotFoundError):
        store.ensure_dataset(KEY, PROVIDER)
    assert store.get_state(KEY) is None


def test_ensuring_an_existing_dataset_never_overwrites_its_state(dataset: DynamoStore) -> None:
    # Given a dataset whose sync holds the lease
    _lease(dataset, "A", T0)
    before = _state(dataset)
    # When it is ensured again, with another schedule
    dataset.ensure_dataset(KEY, PROVIDER, next_sync_at=T0 + 999)
    # Then its state is exactly as it was
    assert _state(dataset) == before


# acquire_lease


def test_a_free_lease_is_won(dataset: DynamoStore) -> None:
    # Given a dataset nobody syncs
    # When a reader takes the lease
    won = _lease(dataset, "A", T0)
    # Then it holds it until now + ttl and the dataset is running
    assert (won.lease_owner, won.lease_expires_at, won.status) == ("A", T0 + TTL, DatasetStatus.RUNNING)
    assert _state(dataset).lease_owner == "A"


def test_a_held_lease_is_refused(dataset: DynamoStore) -> None:
    # Given a lease held by A
    _lease(dataset, "A", T0)
    # When B tries to take it one second before it expires
    # Then B is told a sync is in progress, and A still holds it
    with pytest.raises(SyncInProgressError):
        _lease(dataset, "B", T0 + TTL - 1)
    assert _state(dataset).lease_owner == "A"


def test_a_lease_is_free_at_the_instant_it_expires(dataset: DynamoStore) -> None:
    # Given a lease held by A until T0 + TTL
    _lease(dataset, "A", T0)
    # When B takes it at exactly T0 + TTL (``policy.lease_is_held`` says free there too)
    _lease(dataset, "B", T0 + TTL)
    # Then B holds it
    assert (_state(dataset).lease_owner, _state(dataset).lease_expires_at) == ("B", T0 + 2 * TTL)


def test_a_reader_cannot_take_the_lease_after_a_run_finished_since_it_looked(dataset: DynamoStore) -> None:
    # Given a reader saw the dataset after run R0, and then R1 finished
    _lease(dataset, "A", T0)
    _finish(dataset, "A", T0 + 1, "R0")
    _lease(dataset, "B", T0 + 2, expected_last_run_id="R0")
    _finish(dataset, "B", T0 + 3, "R1")
    # When the reader tries to sync on what it saw (R0)
    # Then it is refused: R1's result is what it wanted
    with pytest.raises(SyncInProgressError):
        _lease(dataset, "C", T0 + 4, expected_last_run_id="R0")
    assert (_state(dataset).lease_owner, _state(dataset).last_run_id) == (None, "R1")


def test_a_reader_that_saw_no_run_cannot_take_the_lease_after_one_finished(dataset: DynamoStore) -> None:
    # Given a reader saw the dataset with no run, and then R1 finished
    _lease(dataset, "A", T0)
    _finish(dataset, "A", T0 + 1, "R1")
    # When the reader tries to sync on what it saw
    # Then it is refused
    with pytest.raises(SyncInProgressError):
        _lease(dataset, "C", T0 + 2, expected_last_run_id=None)


def test_a_reader_that_saw_the_last_run_takes_the_free_lease(dataset: DynamoStore) -> None:
    # Given R1 finished and a reader saw it
    _lease(dataset, "A", T0)
    _finish(dataset, "A", T0 + 1, "R1")
    # When the reader takes the lease
    _lease(dataset, "C", T0 + 2, expected_last_run_id="R1")
    # Then it holds it
    assert _state(dataset).lease_owner == "C"


def test_a_readers_sync_clears_the_queued_claim(dataset: DynamoStore) -> None:
    # Given a queued job's claim
    _claim(dataset, "job-1", T0)
    # When a reader takes the lease
    _lease(dataset, "A", T0 + 1)
    # Then the claim is gone: the reader's sync satisfies the job
    assert (_state(dataset).queued_job_id, _state(dataset).queued_at) == (None, None)


def test_a_worker_takes_the_lease_for_the_queued_job_and_keeps_its_claim(dataset: DynamoStore) -> None:
    # Given job-1 is queued
    _claim(dataset, "job-1", T0)
    # When its worker takes the lease with its id
    _lease(dataset, "W", T0 + 1, job_id="job-1")
    # Then it holds the lease and the claim stays (a redelivery after a crash can resume it)
    assert (_state(dataset).lease_owner, _state(dataset).queued_job_id) == ("W", "job-1")


def test_a_worker_for_a_job_that_is_not_queued_is_refused(dataset: DynamoStore) -> None:
    # Given job-2 is the queued job
    _claim(dataset, "job-2", T0)
    # When a worker for job-1 (superseded, or redelivered) tries to take the lease
    # Then it is told its job is not claimable, and nothing changes
    with pytest.raises(JobNotClaimableError):
        _lease(dataset, "W", T0 + 1, job_id="job-1")
    assert (_state(dataset).lease_owner, _state(dataset).queued_job_id) == (None, "job-2")


def test_a_worker_for_the_queued_job_is_refused_while_the_lease_is_held(dataset: DynamoStore) -> None:
    # Given job-1 is queued and A holds the lease
    _claim(dataset, "job-1", T0)
    _lease(dataset, "A", T0 + 1, job_id="job-1")
    # When a second worker for job-1 (a redelivery) tries to take it
    # Then it is told a sync is in progress
    with pytest.raises(SyncInProgressError):
        _lease(dataset, "W", T0 + 2, job_id="job-1")


def test_the_lease_of_a_deleted_dataset_is_refused_and_the_dataset_stays_deleted(dataset: DynamoStore) -> None:
    # Given the dataset was deleted
    dataset.delete_dataset(KEY)
    # When a reader tries to take its lease
    # Then it is told the dataset is gone, and no state item comes back
    with pytest.raises(DatasetNotFoundError):
        _lease(dataset, "A", T0)
    assert dataset.get_state(KEY) is None


# claim_queue


def test_a_queue_claim_is_won_once_while_it_is_live(dataset: DynamoStore) -> None:
    # Given job-1 claimed the queue
    _claim(dataset, "job-1", T0)
    # When job-2 tries to claim it before the claim's TTL ends
    # Then it is refused and job-1 keeps it
    with pytest.raises(ClaimNotWonError):
        _claim(dataset, "job-2", T0 + CLAIM_TTL - 1)
    assert (_state(dataset).queued_job_id, _state(dataset).queued_at) == ("job-1", T0)


def test_a_queue_claim_can_be_won_again_after_its_ttl(dataset: DynamoStore) -> None:
    # Given job-1 claimed the queue and its message was lost
    _claim(dataset, "job-1", T0)
    # When job-2 claims it after the claim's TTL
    _claim(dataset, "job-2", T0 + CLAIM_TTL + 1)
    # Then job-2 holds the claim
    assert (_state(dataset).queued_job_id, _state(dataset).queued_at) == ("job-2", T0 + CLAIM_TTL + 1)


def test_a_queue_claim_is_free_at_the_instant_its_ttl_ends(dataset: DynamoStore) -> None:
    # Given job-1 claimed the queue at T0
    _claim(dataset, "job-1", T0)
    # When job-2 claims it at exactly T0 + CLAIM_TTL, where the planner sees the claim as expired
    _claim(dataset, "job-2", T0 + CLAIM_TTL)
    # Then job-2 holds the claim
    assert _state(dataset).queued_job_id == "job-2"


def test_a_queue_claim_is_refused_inside_the_cooldown(dataset: DynamoStore) -> None:
    # Given a sync succeeded at T0 (a reader may have read the dataset before it)
    _lease(dataset, "A", T0 - 1)
    _finish(dataset, "A", T0, "R1")
    # When a claim is made just inside the cooldown
    # Then it is refused
    with pytest.raises(ClaimNotWonError):
        _claim(dataset, "job-1", T0 + COOLDOWN - 1)
    assert _state(dataset).queued_job_id is None


def test_a_queue_claim_is_won_at_the_end_of_the_cooldown(dataset: DynamoStore) -> None:
    # Given a sync succeeded at T0
    _lease(dataset, "A", T0 - 1)
    _finish(dataset, "A", T0, "R1")
    # When a claim is made at exactly T0 + COOLDOWN
    _claim(dataset, "job-1", T0 + COOLDOWN)
    # Then it is won
    assert _state(dataset).queued_job_id == "job-1"


def test_a_queue_claim_inside_the_cooldown_is_won_when_the_cooldown_is_waived(dataset: DynamoStore) -> None:
    # Given a sync succeeded at T0
    _lease(dataset, "A", T0 - 1)
    _finish(dataset, "A", T0, "R1")
    # When a claim that does not require the cooldown (a forced sync) is made right after
    _claim(dataset, "job-1", T0 + 1, require_past_cooldown=False)
    # Then it is won
    assert _state(dataset).queued_job_id == "job-1"


def test_a_queue_claim_is_refused_while_the_lease_is_held(dataset: DynamoStore) -> None:
    # Given A holds the lease
    _lease(dataset, "A", T0)
    # When a job tries to claim the queue
    # Then it is refused
    with pytest.raises(ClaimNotWonError):
        _claim(dataset, "job-1", T0 + 1, require_past_cooldown=False)
    assert _state(dataset).queued_job_id is None


def test_a_queue_claim_on_a_deleted_dataset_is_refused_and_the_dataset_stays_deleted(dataset: DynamoStore) -> None:
    # Given the dataset was deleted
    dataset.delete_dataset(KEY)
    # When a job tries to claim its queue
    # Then it is told the dataset is gone, and no state item comes back
    with pytest.raises(DatasetNotFoundError):
        _claim(dataset, "job-1", T0)
    assert dataset.get_state(KEY) is None


# the holder's fenced writes

_CHECKPOINT = Checkpoint(generation="R1", page_token="p2", since=None, pages_done=1)
_HOLDER_WRITES: dict[str, Callable[[DynamoStore, str, float], None]] = {
    "renew_lease": lambda store, owner, now: store.renew_lease(KEY, owner, now, TTL),
    "save_checkpoint": lambda store, owner, now: store.save_checkpoint(KEY, owner, now, TTL, _CHECKPOINT),
    "hand_off": lambda store, owner, now: store.hand_off(KEY, owner, now, "job-9"),
    "release_lease": lambda store, owner, now: store.release_lease(
        KEY, owner, drop_claim=True, status=DatasetStatus.IDLE
    ),
}


@pytest.mark.parametrize("write", sorted(_HOLDER_WRITES))
def test_a_non_owner_loses_the_lease_and_changes_nothing(dataset: DynamoStore, write: str) -> None:
    # Given A holds the lease
    _lease(dataset, "A", T0)
    before = _state(dataset)
    # When B makes a holder's write
    # Then B is told it lost the lease and the state is unchanged
    with pytest.raises(LeaseLostError):
        _HOLDER_WRITES[write](dataset, "B", T0 + 1)
    assert _state(dataset) == before


@pytest.mark.parametrize("write", sorted(_HOLDER_WRITES))
def test_a_holder_whose_lease_was_taken_over_loses_it(dataset: DynamoStore, write: str) -> None:
    # Given A's lease expired and B took it over
    _lease(dataset, "A", T0)
    _lease(dataset, "B", T0 + TTL)
    before = _state(dataset)
    # When A, unaware, makes a holder's write
    # Then A is told it lost the lease and B's state is unchanged
    with pytest.raises(LeaseLostError):
        _HOLDER_WRITES[write](dataset, "A", T0 + TTL + 1)
    assert _state(dataset) == before


@pytest.mark.parametrize("write", sorted(_HOLDER_WRITES))
def test_a_holder_of_a_deleted_dataset_loses_the_lease_and_does_not_bring_it_back(
    dataset: DynamoStore, write: str
) -> None:
    # Given A holds the lease and the dataset is deleted
    _lease(dataset, "A", T0)
    dataset.delete_dataset(KEY)
    # When A makes a holder's write
    # Then A is told it lost the lease, and no state item comes back
    with pytest.raises(LeaseLostError):
        _HOLDER_WRITES[write](dataset, "A", T0 + 1)
    assert dataset.get_state(KEY) is None


def test_a_hand_off_turns_the_lease_into_a_queued_job(dataset: DynamoStore) -> None:
    # Given A holds the lease
    _lease(dataset, "A", T0)
    # When A hands the rest of its sync off to job-9
    dataset.hand_off(KEY, "A", T0 + 1, "job-9")
    # Then the lease is free and job-9 holds the claim, so only its worker may start next
    state = _state(dataset)
    assert (state.lease_owner, state.status, state.queued_job_id, state.queued_at) == (
        None,
        DatasetStatus.IDLE,
        "job-9",
        T0 + 1,
    )
    with pytest.raises(JobNotClaimableError):
        _lease(dataset, "W", T0 + 2, job_id="job-1")


# release_queue_claim


def test_releasing_another_jobs_claim_changes_nothing(dataset: DynamoStore) -> None:
    # Given job-2 holds the claim
    _claim(dataset, "job-2", T0)
    before = _state(dataset)
    # When job-1's claim is released, taking the dataset off the schedule
    dataset.release_queue_claim(KEY, "job-1", unschedule=True)
    # Then job-2 keeps its claim and the dataset stays on the schedule
    assert _state(dataset) == before


def test_releasing_a_jobs_own_claim_drops_it(dataset: DynamoStore) -> None:
    # Given job-1 holds the claim
    _claim(dataset, "job-1", T0)
    # When job-1's claim is released, taking the dataset off the schedule
    dataset.release_queue_claim(KEY, "job-1", unschedule=True)
    # Then the claim is gone and the dataset is off the schedule
    state = _state(dataset)
    assert (state.queued_job_id, state.queued_at, state.next_sync_at) == (None, None, None)


def test_releasing_a_claim_of_a_deleted_dataset_does_not_bring_it_back(dataset: DynamoStore) -> None:
    # Given job-1 held the claim and the dataset was deleted
    _claim(dataset, "job-1", T0)
    dataset.delete_dataset(KEY)
    # When job-1's claim is released
    dataset.release_queue_claim(KEY, "job-1")
    # Then no state item comes back
    assert dataset.get_state(KEY) is None


# claim_due (the tick)


def _due(store: DynamoStore, key: DatasetKey, now: float) -> DueDataset:
    """The dataset as the tick reads it from the schedule index."""
    [due] = [d for d in store.due_datasets(schedule_shard(key.dataset_id), now, 100) if d.key == key]
    return due


def test_the_tick_claims_a_due_dataset(dataset: DynamoStore) -> None:
    # Given a dataset due at T0, as the tick read it
    due = _due(dataset, KEY, T0)
    # When the tick claims it for job-1
    won = dataset.claim_due([(due, "job-1")], T0, CLAIM_TTL)
    # Then job-1 holds the claim
    assert won == ["job-1"]
    assert (_state(dataset).queued_job_id, _state(dataset).queued_at) == ("job-1", T0)


def test_the_tick_skips_a_dataset_synced_since_it_read_the_schedule_and_claims_the_rest(dataset: DynamoStore) -> None:
    # Given the tick read two due datasets, and one was synced (rescheduled) right after
    dataset.ensure_dataset(OTHER, PROVIDER, next_sync_at=T0)
    due, other = _due(dataset, KEY, T0), _due(dataset, OTHER, T0)
    _lease(dataset, "A", T0)
    _finish(dataset, "A", T0, "R1")
    # When the tick claims both
    won = dataset.claim_due([(due, "job-1"), (other, "job-2")], T0 + 1, CLAIM_TTL)
    # Then only the one still due at the time read is claimed
    assert won == ["job-2"]
    assert (_state(dataset).queued_job_id, _state(dataset, OTHER).queued_job_id) == (None, "job-2")


def test_the_tick_skips_a_dataset_whose_lease_is_held(dataset: DynamoStore) -> None:
    # Given a due dataset the tick read, whose lease A took since
    due = _due(dataset, KEY, T0)
    _lease(dataset, "A", T0)
    # When the tick claims it
    won = dataset.claim_due([(due, "job-1")], T0 + 1, CLAIM_TTL)
    # Then nothing is claimed
    assert won == []
    assert _state(dataset).queued_job_id is None


def test_the_tick_skips_a_dataset_with_a_live_claim(dataset: DynamoStore) -> None:
    # Given a due dataset the tick read, which a reader's job-0 claimed since
    due = _due(dataset, KEY, T0)
    _claim(dataset, "job-0", T0)
    # When the tick claims it before job-0's claim expires
    won = dataset.claim_due([(due, "job-1")], T0 + CLAIM_TTL - 1, CLAIM_TTL)
    # Then job-0 keeps the claim
    assert won == []
    assert _state(dataset).queued_job_id == "job-0"


def test_the_tick_claims_a_dataset_whose_claim_expired(dataset: DynamoStore) -> None:
    # Given a due dataset whose job-0 claim was made long ago (its message was lost)
    _claim(dataset, "job-0", T0)
    due = _due(dataset, KEY, T0 + CLAIM_TTL + 1)
    # When the tick claims it after the claim's TTL
    won = dataset.claim_due([(due, "job-1")], T0 + CLAIM_TTL + 1, CLAIM_TTL)
    # Then job-1 holds the claim
    assert won == ["job-1"]
    assert _state(dataset).queued_job_id == "job-1"


def test_the_tick_skips_a_deleted_dataset_and_does_not_bring_it_back(dataset: DynamoStore) -> None:
    # Given a due dataset the tick read, deleted since
    due = _due(dataset, KEY, T0)
    dataset.delete_dataset(KEY)
    # When the tick claims it
    won = dataset.claim_due([(due, "job-1")], T0 + 1, CLAIM_TTL)
    # Then nothing is claimed and no state item comes back
    assert won == []
    assert dataset.get_state(KEY) is None
