"""What a reader that waited for someone else's sync reports: decided by that run's own status."""

from __future__ import annotations

from chalicelib.domain.model import DatasetKey, DatasetState, DatasetStatus, RunStatus, SyncCounts
from chalicelib.sync.coordinator import outcome_from_state
from chalicelib.sync.engine import OutcomeKind

KEY = DatasetKey("u1", "c1", "recovery")


def test_a_finished_successful_run_is_a_success_with_its_counts() -> None:
    state = DatasetState(
        KEY,
        "demo",
        status=DatasetStatus.IDLE,
        last_successful_at=10.0,
        last_run_id="R1",
        last_run_status=RunStatus.SUCCEEDED,
        last_counts=SyncCounts(inserted=3, pages=1, upstream_calls=1),
    )
    outcome = outcome_from_state(state)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.run_id == "R1"
    assert outcome.counts.inserted == 3
    assert outcome.joined is True


def test_a_failed_run_stays_a_failure_even_if_a_later_attempt_changed_the_status() -> None:
    # Given R1 failed, and a later attempt took the lease and died (status RUNNING, lease expired)
    state = DatasetState(
        KEY,
        "demo",
        status=DatasetStatus.RUNNING,
        last_successful_at=5.0,
        last_run_id="R1",
        last_run_status=RunStatus.FAILED,
        last_error="upstream 503",
    )
    # Then the joiner of R1 reports R1's failure, not the older success
    outcome = outcome_from_state(state)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == "upstream 503"
