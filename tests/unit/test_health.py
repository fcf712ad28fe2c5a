"""Service health for the status page: a pure function of counters, breakers and tick times."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.domain.planner import TICK_INTERVAL_SECONDS, Health, HealthInputs, health_status

NOW = 1_700_000_000.0
INTERVAL = 60.0
LATE = 5 * INTERVAL  # the schedule is late after 5 missed ticks

HEALTHY = HealthInputs(
    total_syncs=100,
    succeeded_syncs=100,
    consecutive_failures=0,
    open_breakers=[],
    paused=False,
    last_tick_at=NOW - 30,
    started_at=NOW - 86_400,
    failure_threshold=5,
)


def health(inputs: HealthInputs, now: float = NOW) -> tuple[Health, list[str]]:
    return health_status(inputs, now, INTERVAL)


# --- healthy --------------------------------------------------------------------------------------


def test_all_good_is_healthy_with_no_reasons() -> None:
    assert health(HEALTHY) == (Health.HEALTHY, [])


def test_a_fresh_service_with_too_few_syncs_ignores_the_rate() -> None:
    # Given 9 syncs, 4 of them failed (44 %), but fewer than 10 syncs in total
    inputs = replace(HEALTHY, total_syncs=9, succeeded_syncs=5)
    # Then the rate is not judged yet
    assert health(inputs) == (Health.HEALTHY, [])


def test_no_syncs_at_all_is_healthy() -> None:
    assert health(replace(HEALTHY, total_syncs=0, succeeded_syncs=0)) == (Health.HEALTHY, [])


def test_success_rate_of_95_percent_is_healthy() -> None:
    assert health(replace(HEALTHY, total_syncs=100, succeeded_syncs=95)) == (Health.HEALTHY, [])


def test_a_tick_exactly_five_intervals_ago_is_not_late() -> None:
    assert health(replace(HEALTHY, last_tick_at=NOW - LATE))[0] is Health.HEALTHY


def test_lateness_is_measured_in_tick_intervals() -> None:
    # Given the last tick was just over five real tick intervals ago
    inputs = replace(HEALTHY, last_tick_at=NOW - 5 * TICK_INTERVAL_SECONDS - 1)
    # Then it is late with the real interval, and not with an interval twice as long
    assert health_status(inputs, NOW, TICK_INTERVAL_SECONDS)[0] is Health.UNHEALTHY
    assert health_status(inputs, NOW, 2 * TICK_INTERVAL_SECONDS) == (Health.HEALTHY, [])


# --- warning --------------------------------------------------------------------------------------


def test_one_consecutive_failure_is_a_warning() -> None:
    level, reasons = health(replace(HEALTHY, consecutive_failures=1))
    assert level is Health.WARNING
    assert reasons == ["1 sync(s) failed in a row"]


def test_failures_just_below_the_threshold_are_a_warning() -> None:
    level, reasons = health(replace(HEALTHY, consecutive_failures=4))
    assert level is Health.WARNING
    assert reasons == ["4 sync(s) failed in a row"]


def test_a_service_that_has_not_ticked_yet_is_a_warning() -> None:
    # Given a deployment started a minute ago that has not ticked yet
    inputs = replace(HEALTHY, last_tick_at=None, started_at=NOW - 60)
    # Then it is a warning, not an alarm
    level, reasons = health(inputs)
    assert level is Health.WARNING
    assert reasons == ["the schedule has not ticked yet"]


def test_a_service_with_no_scheduler_state_at_all_is_a_warning() -> None:
    level, reasons = health(replace(HEALTHY, last_tick_at=None, started_at=None))
    assert level is Health.WARNING
    assert reasons == ["the schedule has not ticked yet"]


def test_success_rate_below_95_percent_is_a_warning() -> None:
    level, reasons = health(replace(HEALTHY, total_syncs=100, succeeded_syncs=90))
    assert level is Health.WARNING
    assert reasons == ["success rate 90.0% is below 95%"]


def test_several_warnings_are_all_reported() -> None:
    inputs = replace(HEALTHY, consecutive_failures=2, succeeded_syncs=94, last_tick_at=None, started_at=NOW - 10)
    level, reasons = health(inputs)
    assert level is Health.WARNING
    assert reasons == [
        "2 sync(s) failed in a row",
        "success rate 94.0% is below 95%",
        "the schedule has not ticked yet",
    ]


STRETCHED = (
    "whoop: 1,000 datasets due, 6.2 per tick allowed by 10,000 requests/day; "
    "scheduled syncs are spaced out evenly (about 3.7x their interval)"
)


def test_a_schedule_spaced_out_by_a_provider_quota_is_a_warning_that_says_so() -> None:
    # Given the last tick found more WHOOP datasets due than its daily limit can serve
    level, reasons = health(replace(HEALTHY, stretched_schedules=(STRETCHED,)))
    # Then the service is healthy enough but warns, in the tick's own words
    assert level is Health.WARNING
    assert reasons == [STRETCHED]


def test_a_stretched_schedule_does_not_hide_a_worse_problem() -> None:
    level, reasons = health(replace(HEALTHY, stretched_schedules=(STRETCHED,), open_breakers=["whoop"]))
    assert level is Health.DEGRADED
    assert reasons == ["circuit open for whoop"]


# --- degraded -------------------------------------------------------------------------------------


def test_an_open_breaker_is_degraded() -> None:
    level, reasons = health(replace(HEALTHY, open_breakers=["whoop"]))
    assert level is Health.DEGRADED
    assert reasons == ["circuit open for whoop"]


def test_open_breakers_are_listed_in_name_order() -> None:
    level, reasons = health(replace(HEALTHY, open_breakers=["whoop", "demo", "rest"]))
    assert level is Health.DEGRADED
    assert reasons == ["circuit open for demo, rest, whoop"]


@pytest.mark.parametrize("failures", [5, 6, 50])
def test_failures_at_or_above_the_threshold_are_degraded(failures: int) -> None:
    level, reasons = health(replace(HEALTHY, consecutive_failures=failures))
    assert level is Health.DEGRADED
    assert reasons == [f"{failures} syncs failed in a row"]


@pytest.mark.parametrize(("total", "succeeded"), [(10, 7), (100, 79), (100, 50)])
def test_success_rate_below_80_percent_with_enough_syncs_is_degraded(total: int, succeeded: int) -> None:
    level, reasons = health(replace(HEALTHY, total_syncs=total, succeeded_syncs=succeeded))
    assert level is Health.DEGRADED
    assert reasons == [f"success rate {succeeded / total * 100:.1f}% is below 80%"]


def test_success_rate_of_exactly_80_percent_is_only_a_warning() -> None:
    assert health(replace(HEALTHY, total_syncs=10, succeeded_syncs=8))[0] is Health.WARNING


def test_degraded_reports_only_its_own_reasons() -> None:
    # Given an open breaker and a warning-level failure streak
    level, reasons = health(replace(HEALTHY, open_breakers=["whoop"], consecutive_failures=1))
    # Then the worst level is reported with its reasons only
    assert level is Health.DEGRADED
    assert reasons == ["circuit open for whoop"]


# --- unhealthy ------------------------------------------------------------------------------------


def test_a_schedule_late_by_more_than_five_intervals_is_unhealthy() -> None:
    # Given the last tick was 301 s ago (5 intervals of 60 s is 300 s)
    level, reasons = health(replace(HEALTHY, last_tick_at=NOW - 301))
    assert level is Health.UNHEALTHY
    assert reasons == ["the schedule has not ticked for 301s"]


def test_a_deployment_that_never_ticked_is_unhealthy_after_five_intervals() -> None:
    # Given a scheduler started 10 minutes ago that has never ticked
    level, reasons = health(replace(HEALTHY, last_tick_at=None, started_at=NOW - 600))
    # Then its start time is the reference, and it is late
    assert level is Health.UNHEALTHY
    assert reasons == ["the schedule has not ticked for 600s"]


@pytest.mark.parametrize(("total", "succeeded"), [(10, 4), (100, 49), (20, 0)])
def test_success_rate_below_50_percent_is_unhealthy(total: int, succeeded: int) -> None:
    level, reasons = health(replace(HEALTHY, total_syncs=total, succeeded_syncs=succeeded))
    assert level is Health.UNHEALTHY
    assert reasons == [f"success rate {succeeded / total * 100:.1f}% is below 50%"]


def test_success_rate_of_exactly_50_percent_is_degraded_not_unhealthy() -> None:
    assert health(replace(HEALTHY, total_syncs=10, succeeded_syncs=5))[0] is Health.DEGRADED


def test_unhealthy_wins_over_degraded_and_reports_only_its_reasons() -> None:
    # Given a late schedule, a failing rate and an open breaker
    inputs = replace(HEALTHY, last_tick_at=NOW - 1_000, total_syncs=10, succeeded_syncs=2, open_breakers=["whoop"])
    level, reasons = health(inputs)
    assert level is Health.UNHEALTHY
    assert reasons == ["the schedule has not ticked for 1000s", "success rate 20.0% is below 50%"]


# --- paused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_tick_at", "started_at"), [(NOW - 86_400, NOW - 90_000), (None, NOW - 86_400), (None, None)]
)
def test_a_paused_service_is_never_late(last_tick_at: float | None, started_at: float | None) -> None:
    # Given the operator paused the schedule long ago
    inputs = replace(HEALTHY, paused=True, last_tick_at=last_tick_at, started_at=started_at)
    # Then not ticking is expected: neither late nor "not ticked yet"
    level, reasons = health(inputs)
    assert level is Health.HEALTHY
    assert reasons == []


def test_a_paused_service_still_reports_its_other_problems() -> None:
    inputs = replace(HEALTHY, paused=True, last_tick_at=NOW - 86_400, total_syncs=10, succeeded_syncs=1)
    level, reasons = health(inputs)
    assert level is Health.UNHEALTHY
    assert reasons == ["success rate 10.0% is below 50%"]
