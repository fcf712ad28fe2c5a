"""Circuit-breaker transitions with an injected clock: `now` is a plain float, nothing sleeps."""

from __future__ import annotations

import json

import pytest

from chalicelib.domain.breaker import (
    Admission,
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    admit,
    after_failure,
    after_success,
    retry_at,
)

CONFIG = BreakerConfig(failure_threshold=3, cool_off_seconds=60.0, probe_ttl_seconds=120.0)
T0 = 1_000_000.0


def open_breaker(opened_at: float = T0, failures: int = 3) -> BreakerState:
    return BreakerState(
        status=BreakerStatus.OPEN,
        consecutive_failures=failures,
        opened_at=opened_at,
        last_failure="HTTP 503",
        last_failure_at=opened_at,
    )


def fail_times(count: int, *, start: float = T0, state: BreakerState | None = None) -> BreakerState:
    """`count` consecutive failures one second apart."""
    current = state or BreakerState()
    for index in range(count):
        current = after_failure(current, f"boom {index}", start + index, CONFIG)
    return current


def won_probe(owner: str = "worker-a", now: float = T0 + 60.0) -> Admission:
    """An open breaker whose cool-off just ended, admitted for `owner`."""
    return admit(open_breaker(), owner, now, CONFIG)


# --- closed ---------------------------------------------------------------------------------------


def test_a_new_breaker_is_closed_with_no_failures() -> None:
    state = BreakerState()
    assert state.status is BreakerStatus.CLOSED
    assert state.consecutive_failures == 0
    assert state.opened_at is None


def test_closed_breaker_admits_without_changing_state() -> None:
    # Given a closed breaker
    state = BreakerState(consecutive_failures=1)
    # When a caller asks
    admission = admit(state, "worker-a", T0, CONFIG)
    # Then it is let through, not as a probe, and nothing needs storing
    assert admission.allowed is True
    assert admission.probe is False
    assert admission.retry_after_seconds == 0.0
    assert admission.state_after is state


@pytest.mark.parametrize("failures", [1, 2])
def test_failures_below_the_threshold_stay_closed(failures: int) -> None:
    # Given fewer consecutive failures than the threshold (3)
    state = fail_times(failures)
    # Then the breaker is still closed, counts them and still admits callers
    assert state.status is BreakerStatus.CLOSED
    assert state.consecutive_failures == failures
    assert state.opened_at is None
    assert admit(state, "worker-a", T0 + 10, CONFIG).allowed is True


def test_failure_records_the_error_and_when() -> None:
    state = after_failure(BreakerState(), "HTTP 502 from upstream", T0 + 5, CONFIG)
    assert state.last_failure == "HTTP 502 from upstream"
    assert state.last_failure_at == T0 + 5


def test_a_long_error_is_truncated_to_300_characters() -> None:
    state = after_failure(BreakerState(), "x" * 1_000, T0, CONFIG)
    assert state.last_failure == "x" * 300


def test_the_nth_consecutive_failure_opens_the_breaker_at_now() -> None:
    # Given two failures (threshold 3)
    state = fail_times(2)
    # When the third fails at T0 + 30
    opened = after_failure(state, "HTTP 500", T0 + 30, CONFIG)
    # Then the breaker opens at that moment
    assert opened.status is BreakerStatus.OPEN
    assert opened.opened_at == T0 + 30
    assert opened.consecutive_failures == 3
    assert opened.last_failure == "HTTP 500"
    assert opened.last_failure_at == T0 + 30


def test_a_threshold_of_one_opens_on_the_first_failure() -> None:
    config = BreakerConfig(failure_threshold=1, cool_off_seconds=10.0, probe_ttl_seconds=20.0)
    state = after_failure(BreakerState(), "boom", T0, config)
    assert state.status is BreakerStatus.OPEN
    assert state.opened_at == T0


def test_a_success_in_closed_state_resets_the_failure_count() -> None:
    # Given two failures in a row
    state = fail_times(2)
    # When a call succeeds
    healed = after_success(state)
    # Then the count starts again (another two failures do not open it)
    assert healed.status is BreakerStatus.CLOSED
    assert healed.consecutive_failures == 0
    assert fail_times(2, state=healed).status is BreakerStatus.CLOSED
    # And the last failure is kept for the status page
    assert healed.last_failure == "boom 1"
    assert healed.last_failure_at == T0 + 1


def test_a_success_on_a_clean_breaker_changes_nothing() -> None:
    state = BreakerState()
    assert after_success(state) is state


def test_failures_must_be_consecutive_to_open() -> None:
    # Given failure, failure, success, failure, failure (threshold 3)
    state = fail_times(2)
    state = after_success(state)
    state = fail_times(2, start=T0 + 10, state=state)
    # Then the breaker never opened
    assert state.status is BreakerStatus.CLOSED
    assert state.consecutive_failures == 2


# --- open -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("elapsed", [0.0, 1.0, 30.0, 59.0, 59.999])
def test_open_breaker_refuses_during_cool_off_with_the_time_left(elapsed: float) -> None:
    # Given a breaker opened at T0 with a 60 s cool-off
    state = open_breaker()
    # When a caller asks `elapsed` seconds later
    admission = admit(state, "worker-a", T0 + elapsed, CONFIG)
    # Then it is refused and told to come back when the cool-off ends
    assert admission.allowed is False
    assert admission.probe is False
    assert admission.retry_after_seconds == pytest.approx(60.0 - elapsed)
    assert admission.state_after is state


def test_a_failure_reported_while_open_does_not_extend_the_cool_off() -> None:
    # Given an open breaker (a call admitted before it opened reports its failure late)
    state = open_breaker()
    # When that failure arrives 20 s later
    after = after_failure(state, "late 500", T0 + 20, CONFIG)
    # Then the breaker stays open from the original moment
    assert after.status is BreakerStatus.OPEN
    assert after.opened_at == T0
    assert after.consecutive_failures == 4
    assert admit(after, "worker-a", T0 + 60, CONFIG).allowed is True


@pytest.mark.parametrize("elapsed", [60.0, 61.0, 3_600.0])
def test_after_cool_off_the_first_caller_wins_the_probe(elapsed: float) -> None:
    # Given a breaker whose cool-off has passed
    state = open_breaker()
    now = T0 + elapsed
    # When a caller asks
    admission = admit(state, "worker-a", now, CONFIG)
    # Then it is admitted as the probe, and the state to store names it as the owner
    assert admission.allowed is True
    assert admission.probe is True
    assert admission.retry_after_seconds == 0.0
    assert admission.state_after.status is BreakerStatus.HALF_OPEN
    assert admission.state_after.probe_owner == "worker-a"
    assert admission.state_after.probe_expires_at == pytest.approx(now + 120.0)
    # And the failure history is kept
    assert admission.state_after.consecutive_failures == 3
    assert admission.state_after.opened_at == T0


def test_exactly_one_caller_wins_the_probe() -> None:
    # Given the stored state after worker-a won the probe
    stored = won_probe("worker-a", now=T0 + 60).state_after
    # When five other callers read it and ask
    admissions = [admit(stored, f"worker-{n}", T0 + 61, CONFIG) for n in range(5)]
    # Then none of them is admitted
    assert [a.allowed for a in admissions] == [False] * 5
    assert all(a.state_after is stored for a in admissions)


# --- half-open ------------------------------------------------------------------------------------


def test_a_second_caller_is_refused_while_the_probe_is_live() -> None:
    # Given a probe won at T0 + 60 (expires at T0 + 180)
    stored = won_probe("worker-a", now=T0 + 60).state_after
    # When worker-b asks at T0 + 100
    admission = admit(stored, "worker-b", T0 + 100, CONFIG)
    # Then it is refused until the probe would expire
    assert admission.allowed is False
    assert admission.probe is False
    assert admission.retry_after_seconds == pytest.approx(80.0)
    assert admission.state_after is stored


def test_the_probe_owner_is_admitted_again() -> None:
    # Given worker-a holds the probe
    stored = won_probe("worker-a", now=T0 + 60).state_after
    # When worker-a asks again (a second page of the same sync)
    admission = admit(stored, "worker-a", T0 + 100, CONFIG)
    # Then it is let through, still as the probe, and nothing changes
    assert admission.allowed is True
    assert admission.probe is True
    assert admission.state_after is stored


def test_an_expired_probe_lets_another_caller_probe() -> None:
    # Given worker-a won the probe at T0 + 60 and never reported (its Lambda died)
    stored = won_probe("worker-a", now=T0 + 60).state_after
    assert stored.probe_expires_at == pytest.approx(T0 + 180)
    # When worker-b asks after the probe expired
    admission = admit(stored, "worker-b", T0 + 180, CONFIG)
    # Then worker-b takes over the probe with a fresh expiry
    assert admission.allowed is True
    assert admission.probe is True
    assert admission.state_after.status is BreakerStatus.HALF_OPEN
    assert admission.state_after.probe_owner == "worker-b"
    assert admission.state_after.probe_expires_at == pytest.approx(T0 + 300)


def test_a_half_open_state_without_a_probe_expiry_can_be_taken() -> None:
    state = BreakerState(status=BreakerStatus.HALF_OPEN, consecutive_failures=3, opened_at=T0, probe_owner="gone")
    admission = admit(state, "worker-b", T0 + 500, CONFIG)
    assert admission.allowed is True
    assert admission.state_after.probe_owner == "worker-b"


def test_a_successful_probe_closes_the_breaker_and_resets_failures() -> None:
    # Given worker-a is probing
    probing = won_probe("worker-a").state_after
    # When the probe succeeds
    closed = after_success(probing)
    # Then the breaker is closed and clean
    assert closed.status is BreakerStatus.CLOSED
    assert closed.consecutive_failures == 0
    assert closed.opened_at is None
    assert closed.probe_owner is None
    assert closed.probe_expires_at is None
    # And it keeps the last failure for the status page
    assert closed.last_failure == "HTTP 503"
    # And everyone is admitted again
    assert admit(closed, "worker-b", T0 + 61, CONFIG) == Admission(True, closed)


def test_a_failed_probe_reopens_with_a_fresh_cool_off() -> None:
    # Given worker-a won the probe at T0 + 60
    probing = won_probe("worker-a", now=T0 + 60).state_after
    # When the probe fails at T0 + 75
    reopened = after_failure(probing, "still 503", T0 + 75, CONFIG)
    # Then the breaker is open again from T0 + 75 and the probe is released
    assert reopened.status is BreakerStatus.OPEN
    assert reopened.opened_at == T0 + 75
    assert reopened.probe_owner is None
    assert reopened.probe_expires_at is None
    assert reopened.consecutive_failures == 4
    assert reopened.last_failure == "still 503"
    # And callers wait a full cool-off from then
    refused = admit(reopened, "worker-b", T0 + 80, CONFIG)
    assert refused.allowed is False
    assert refused.retry_after_seconds == pytest.approx(55.0)
    assert admit(reopened, "worker-b", T0 + 135, CONFIG).probe is True


def test_a_single_probe_failure_reopens_even_below_the_threshold() -> None:
    # Given a generous threshold, a half-open breaker with just one failure on record
    config = BreakerConfig(failure_threshold=10, cool_off_seconds=60.0, probe_ttl_seconds=120.0)
    probing = BreakerState(
        status=BreakerStatus.HALF_OPEN, consecutive_failures=1, opened_at=T0, probe_owner="a", probe_expires_at=T0 + 200
    )
    # Then one more failure reopens it
    assert after_failure(probing, "nope", T0 + 70, config).status is BreakerStatus.OPEN


def test_full_cycle_closed_open_half_open_closed() -> None:
    # Given three failures open the breaker at T0 + 2
    state = fail_times(3)
    assert state.status is BreakerStatus.OPEN
    assert state.opened_at == T0 + 2
    # When the cool-off passes, a probe is won and succeeds
    probe = admit(state, "worker-a", T0 + 62, CONFIG)
    assert probe.probe is True
    state = after_success(probe.state_after)
    # Then the breaker is closed again
    assert state.status is BreakerStatus.CLOSED
    assert state.consecutive_failures == 0


# --- retry_at -------------------------------------------------------------------------------------


def test_retry_at_is_none_when_closed() -> None:
    assert retry_at(fail_times(2), T0 + 10, CONFIG) is None


def test_retry_at_is_the_end_of_the_cool_off_when_open() -> None:
    assert retry_at(open_breaker(), T0 + 10, CONFIG) == pytest.approx(T0 + 60)


def test_retry_at_is_none_when_a_probe_may_be_taken() -> None:
    assert retry_at(open_breaker(), T0 + 60, CONFIG) is None


def test_retry_at_is_the_probe_expiry_while_someone_else_probes() -> None:
    probing = won_probe("worker-a", now=T0 + 60).state_after
    assert retry_at(probing, T0 + 70, CONFIG) == pytest.approx(T0 + 180)


# --- storage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        BreakerState(),
        fail_times(2),
        open_breaker(),
        won_probe("worker-a").state_after,
    ],
    ids=["closed", "closed-with-failures", "open", "half-open"],
)
def test_to_dict_from_dict_round_trip(state: BreakerState) -> None:
    # Given a state stored as plain JSON (as it is in DynamoDB)
    raw = json.loads(json.dumps(state.to_dict()))
    # Then it reads back as the same state
    restored = BreakerState.from_dict(raw)
    assert restored == state
    assert restored.status is state.status


def test_to_dict_stores_the_status_as_a_plain_string() -> None:
    raw = open_breaker().to_dict()
    assert raw["status"] == "open"
    assert type(raw["status"]) is str
    assert raw["opened_at"] == T0
    assert raw["consecutive_failures"] == 3


@pytest.mark.parametrize("raw", [None, {}])
def test_a_missing_state_reads_as_closed(raw: dict[str, object] | None) -> None:
    assert BreakerState.from_dict(raw) == BreakerState()


def test_from_dict_without_a_status_reads_as_closed() -> None:
    state = BreakerState.from_dict({"consecutive_failures": 2})
    assert state.status is BreakerStatus.CLOSED
    assert state.consecutive_failures == 2
