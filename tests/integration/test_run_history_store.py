"""What the state item remembers for a truthful run history (``DatasetStore.acquire_lease`` and the writes that
let the lease go): the run that died holding the lease, a job's attempts, the running tally; and run records'
``attempt`` and multi-status ``mark_run``."""

from __future__ import annotations

import pytest

from chalicelib.domain.model import (
    Checkpoint,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    RunTally,
    SyncCounts,
    SyncRun,
    Trigger,
)
from chalicelib.store.datasets import FinishedRun
from chalicelib.store.dynamo import DynamoStore
from tests.integration.conftest import saved_connection

T0 = 1_767_225_600.0
TTL = 300.0
CLAIM_TTL = 900.0
PROVIDER = "whoop"
KEY = DatasetKey("u1", "c1", "cycles")
RETENTION = 86_400.0


@pytest.fixture
def dataset(store: DynamoStore) -> DynamoStore:
    saved_connection(store, KEY, PROVIDER, T0)
    store.ensure_dataset(KEY, PROVIDER)
    return store


def _claim(store: DynamoStore, job_id: str, now: float) -> None:
    store.claim_queue(KEY, PROVIDER, job_id, now, cooldown_seconds=0, claim_ttl_seconds=CLAIM_TTL)


def _state(store: DynamoStore) -> DatasetState:
    state = store.get_state(KEY)
    assert state is not None
    return state


def test_the_next_holder_learns_the_run_whose_process_died_holding_the_lease(dataset: DynamoStore) -> None:
    # Given run-a took the lease and its process died (the lease was never let go)
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL, run_id="run-a")
    # When run-b takes the expired lease
    state = dataset.acquire_lease(KEY, PROVIDER, "B", T0 + TTL + 1, TTL, run_id="run-b")
    # Then the lease write itself names run-a
    assert state.prior_run_id == "run-a"


def test_a_lease_let_go_properly_names_no_dead_run(dataset: DynamoStore) -> None:
    # Given run-a took the lease and gave it back (a deferred start)
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL, run_id="run-a")
    dataset.release_lease(KEY, "A", drop_claim=False, status=DatasetStatus.IDLE)
    # When run-b takes it
    state = dataset.acquire_lease(KEY, PROVIDER, "B", T0 + 1, TTL, run_id="run-b")
    # Then no run is named as dead
    assert state.prior_run_id is None


def test_a_job_counts_its_deliveries_and_a_deferred_one_gives_its_attempt_back(dataset: DynamoStore) -> None:
    # Given a queued job taken once by a worker whose process died
    _claim(dataset, "job-1", T0)
    first = dataset.acquire_lease(KEY, PROVIDER, "W1", T0, TTL, job_id="job-1", run_id="job-1")
    assert first.job_attempts == 1
    # When SQS redelivers it after the lease expired, that delivery is deferred, and a third one runs
    second = dataset.acquire_lease(KEY, PROVIDER, "W2", T0 + TTL + 1, TTL, job_id="job-1", run_id="job-1")
    dataset.release_lease(KEY, "W2", drop_claim=False, status=DatasetStatus.IDLE, undo_attempt=True)
    third = dataset.acquire_lease(KEY, PROVIDER, "W3", T0 + TTL + 2, TTL, job_id="job-1", run_id="job-1")
    # Then the second counted as attempt 2 until it was deferred, and the third is attempt 2
    assert second.job_attempts == 2
    assert third.job_attempts == 2
    # And the redelivered run is its own predecessor, not a dead run of another
    assert second.prior_run_id == "job-1"


def test_a_new_claim_starts_the_attempts_again(dataset: DynamoStore) -> None:
    # Given a job that ran to its end after two deliveries
    _claim(dataset, "job-1", T0)
    dataset.acquire_lease(KEY, PROVIDER, "W1", T0, TTL, job_id="job-1", run_id="job-1")
    dataset.acquire_lease(KEY, PROVIDER, "W2", T0 + TTL + 1, TTL, job_id="job-1", run_id="job-1")
    run = SyncRun(KEY, "job-1", Trigger.BACKGROUND, RunStatus.SUCCEEDED, created_at=T0, started_at=T0, ended_at=T0)
    dataset.finish_success(
        KEY,
        "W2",
        T0 + TTL + 2,
        run=FinishedRun(run, RETENTION),
        counts=SyncCounts(),
        record_count=None,
        record_count_delta=0,
        watermark=None,
        next_sync_at=None,
        full_pass=False,
    )
    # When the next job is claimed and taken
    _claim(dataset, "job-2", T0 + TTL + 3)
    state = dataset.acquire_lease(KEY, PROVIDER, "W3", T0 + TTL + 3, TTL, job_id="job-2", run_id="job-2")
    # Then it is its first attempt, and nobody died holding the lease before it
    assert state.job_attempts == 1
    assert state.prior_run_id is None


def test_the_tally_rides_on_checkpoints_and_ends_with_the_run(dataset: DynamoStore) -> None:
    # Given a holder that saved a checkpoint with its run's counts
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL, run_id="run-a")
    tally = RunTally("run-a", SyncCounts(inserted=10, pages=1, upstream_calls=1))
    dataset.save_checkpoint(KEY, "A", T0 + 1, TTL, Checkpoint("run-a", "10", None, pages_done=1), tally)
    assert _state(dataset).run_tally == tally
    # When the holder hands the rest off
    dataset.hand_off(KEY, "A", T0 + 2, "job-2")
    # Then the tally (and the lease's run) are gone with the lease
    state = _state(dataset)
    assert state.run_tally is None
    assert state.lease_owner is None


def test_a_run_record_keeps_its_attempt_and_marks_move_only_from_the_named_statuses(dataset: DynamoStore) -> None:
    # Given a running run recorded as its second attempt, and a succeeded one
    running = SyncRun(KEY, "run-a", Trigger.BACKGROUND, RunStatus.RUNNING, created_at=T0, attempt=2)
    done = SyncRun(KEY, "run-b", Trigger.READ, RunStatus.SUCCEEDED, created_at=T0)
    dataset.put_run(running, RETENTION)
    dataset.put_run(done, RETENTION)
    # When both are marked abandoned if queued or running, and a missing run too
    for run_id in ("run-a", "run-b", "run-missing"):
        dataset.mark_run(KEY, run_id, RunStatus.ABANDONED, only_if=(RunStatus.QUEUED, RunStatus.RUNNING))
    # Then only the running one moved, it kept its attempt, and no record was made up
    a = dataset.get_run(KEY, "run-a", T0)
    b = dataset.get_run(KEY, "run-b", T0)
    assert a is not None and b is not None
    assert (a.status, a.attempt) == (RunStatus.ABANDONED, 2)
    assert b.status is RunStatus.SUCCEEDED
    assert dataset.get_run(KEY, "run-missing", T0) is None
