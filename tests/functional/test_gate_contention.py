"""A burst of syncs of one provider all writing its gate item at once: losers back off, none fails."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from chalicelib.domain.errors import StoreBusyError
from chalicelib.domain.model import DatasetKey
from chalicelib.sync.pacing import ProviderGuard
from tests.functional.conftest import Harness

DATA = "/users/u1/connections/c1/data/recovery"


def _losing(times: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make the gate's start lose its write race ``times`` times (as when many workers start at once)."""
    real = ProviderGuard.start
    attempts: list[float] = []

    def start(guard: ProviderGuard, provider: str, owner: str, now: float, **kwargs: Any) -> Any:
        attempts.append(now)
        if len(attempts) <= times:
            raise StoreBusyError("too many concurrent writers on the same shared limit; try again")
        return real(guard, provider, owner, now, **kwargs)

    monkeypatch.setattr(ProviderGuard, "start", start)
    return attempts


def test_a_sync_that_loses_the_gate_race_tries_again_after_a_short_jittered_pause(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a connection, and a gate whose first two writes are won by other workers
    harness.put_connection()
    attempts = _losing(2, monkeypatch)
    # When a read syncs the dataset
    answer = harness.read(DATA)
    # Then the sync starts on the third try, after pauses of at most a third of a second, and answers with data
    assert answer.status_code == 200 and json.loads(answer.body)["metadata"]["source"] == "upstream"
    assert len(attempts) == 3
    assert all(0.0 < later - earlier <= 0.3 + 1e-9 for earlier, later in itertools.pairwise(attempts))


def test_a_background_job_that_never_wins_the_gate_is_put_back_not_failed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a queued background job, and a gate that other workers keep winning
    harness.put_connection()
    harness.client.http.post(
        "/users/u1/connections/c1/sync", headers=harness.headers(), body=json.dumps({"data_type": "recovery"})
    )
    (job,) = harness.queued_bodies()
    _losing(10_000, monkeypatch)
    # When the worker runs it
    outcome = harness.container.worker.handle(job, None)
    # Then the job is put back on the queue for later (the lease given back, nothing failed), not dropped
    assert outcome == "deferred_provider_busy"
    delayed = harness.sqs.get_queue_attributes(
        QueueUrl=harness.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert delayed == "1"
    state = harness.container.store.get_state(DatasetKey("u1", "c1", "recovery"))
    assert state is not None and state.lease_owner is None and state.last_error is None
