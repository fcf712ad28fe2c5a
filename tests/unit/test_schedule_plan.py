"""The tick planner, provider quotas and the schedule shards: pure, no AWS, no clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest

from chalicelib.domain.limits import RateWindow
from chalicelib.domain.model import DatasetKey
from chalicelib.domain.planner import (
    SCHEDULE_SHARDS,
    DueDataset,
    ProviderGate,
    ProviderTick,
    SkipReason,
    TickPlan,
    all_shards,
    jobs_allowed,
    per_connection_jobs,
    plan_tick,
    quota_credit,
    quota_report,
    schedule_shard,
    stretch_factor,
    tick_quota,
)

NOW = 1_700_000_000.0
CLAIM_TTL = 900.0
OPEN = ProviderGate()
GATES: dict[str, ProviderGate] = {"whoop": OPEN, "demo": OPEN, "rest": OPEN}


def due(
    user: str = "u1",
    *,
    provider: str = "whoop",
    data_type: str = "recovery",
    connection: str | None = None,
    next_sync_at: float = NOW - 60,
    lease_expires_at: float | None = None,
    queued_job_id: str | None = None,
    queued_at: float | None = None,
) -> DueDataset:
    return DueDataset(
        key=DatasetKey(user_id=user, connection_id=connection or provider, data_type=data_type),
        provider=provider,
        next_sync_at=next_sync_at,
        lease_expires_at=lease_expires_at,
        queued_job_id=queued_job_id,
        queued_at=queued_at,
    )


def plan(
    candidates: list[DueDataset],
    *,
    paused: bool = False,
    gates: Mapping[str, ProviderGate] | None = None,
    on_demand: frozenset[tuple[str, str]] = frozenset(),
    now: float = NOW,
) -> TickPlan:
    return plan_tick(
        candidates,
        now,
        paused=paused,
        gates=GATES if gates is None else gates,
        on_demand=on_demand,
        claim_ttl_seconds=CLAIM_TTL,
    )


def users(result: TickPlan) -> list[str]:
    return [job.key.user_id for job in result.jobs]


# --- plan_tick ------------------------------------------------------------------------------------


def test_due_datasets_with_open_gates_all_become_jobs() -> None:
    # Given three due datasets of known providers, nothing running or queued
    candidates = [due("u1"), due("u2", provider="demo"), due("u3", provider="rest")]
    # When the tick plans
    result = plan(candidates)
    # Then each one is a job and nothing is skipped
    assert sorted(users(result)) == ["u1", "u2", "u3"]
    assert sum(result.skipped.values()) == 0


def test_no_candidates_plans_nothing() -> None:
    result = plan([])
    assert result.jobs == []
    assert sum(result.skipped.values()) == 0


def test_paused_service_plans_nothing_and_counts_every_candidate() -> None:
    # Given five candidates, all otherwise plannable
    candidates = [due(f"u{n}") for n in range(5)]
    # When the service is paused
    result = plan(candidates, paused=True)
    # Then no job is planned and all five are skipped as paused
    assert result.jobs == []
    assert result.skipped[SkipReason.PAUSED.value] == 5
    assert result.skipped["service_paused"] == 5
    assert sum(result.skipped.values()) == 5


def test_paused_counts_a_one_shot_iterable_too() -> None:
    result = plan_tick(
        (due(f"u{n}") for n in range(3)),
        NOW,
        paused=True,
        gates=GATES,
        on_demand=frozenset(),
        claim_ttl_seconds=CLAIM_TTL,
    )
    assert result.skipped["service_paused"] == 3


def test_not_yet_due_is_skipped() -> None:
    # Given one dataset due a second from now and one due a minute ago
    result = plan([due("later", next_sync_at=NOW + 1), due("now", next_sync_at=NOW - 60)])
    # Then only the due one is planned
    assert users(result) == ["now"]
    assert result.skipped == Counter({"not_due": 1})


def test_due_exactly_now_is_planned() -> None:
    assert users(plan([due("u1", next_sync_at=NOW)])) == ["u1"]


def test_running_sync_is_skipped() -> None:
    # Given a dataset whose lease is held for another 30 s
    result = plan([due("u1", lease_expires_at=NOW + 30)])
    # Then it is left alone
    assert result.jobs == []
    assert result.skipped == Counter({"running": 1})


@pytest.mark.parametrize("lease_expires_at", [NOW, NOW - 1, NOW - 86_400])
def test_expired_lease_is_planned(lease_expires_at: float) -> None:
    # Given a lease that has expired (its holder crashed)
    # Then the dataset is due like any other
    assert users(plan([due("u1", lease_expires_at=lease_expires_at)])) == ["u1"]


@pytest.mark.parametrize("age", [0.0, 1.0, CLAIM_TTL - 1, CLAIM_TTL - 0.001])
def test_live_queue_claim_is_skipped(age: float) -> None:
    # Given a job queued `age` seconds ago, within the claim TTL
    result = plan([due("u1", queued_job_id="run-1", queued_at=NOW - age)])
    # Then it is not queued twice
    assert result.jobs == []
    assert result.skipped == Counter({"already_queued": 1})


@pytest.mark.parametrize("age", [CLAIM_TTL, CLAIM_TTL + 1, 86_400.0])
def test_stale_queue_claim_is_planned(age: float) -> None:
    # Given a claim at least the TTL old (its message was lost)
    result = plan([due("u1", queued_job_id="run-1", queued_at=NOW - age)])
    # Then the dataset is queued again
    assert users(result) == ["u1"]
    assert sum(result.skipped.values()) == 0


def test_a_claim_time_without_a_job_id_is_not_a_claim() -> None:
    assert users(plan([due("u1", queued_job_id=None, queued_at=NOW - 1)])) == ["u1"]


def test_a_job_id_without_a_claim_time_is_not_a_claim() -> None:
    assert users(plan([due("u1", queued_job_id="run-1", queued_at=None)])) == ["u1"]


def test_on_demand_data_type_is_skipped() -> None:
    # Given whoop/sleep has no schedule in its policy (a left-over index entry)
    on_demand = frozenset({("whoop", "sleep")})
    candidates = [
        due("u1", data_type="sleep"),
        due("u2", data_type="recovery"),
        due("u3", provider="demo", data_type="sleep"),
    ]
    # When the tick plans
    result = plan(candidates, on_demand=on_demand)
    # Then only whoop/sleep is skipped: the pair is matched, not the data type alone
    assert sorted(users(result)) == ["u2", "u3"]
    assert result.skipped == Counter({"on_demand_only": 1})


def test_unknown_provider_is_skipped() -> None:
    # Given a dataset whose provider has no gate (removed from the registry)
    result = plan([due("u1", provider="retired"), due("u2")])
    # Then it is skipped and the known one goes on
    assert users(result) == ["u2"]
    assert result.skipped == Counter({"unknown_provider": 1})


def test_open_breaker_skips_its_provider_only() -> None:
    # Given whoop's breaker is open and demo's is closed
    gates = {"whoop": ProviderGate(breaker_open=True), "demo": OPEN}
    candidates = [due("w1"), due("w2"), due("d1", provider="demo"), due("d2", provider="demo")]
    # When the tick plans
    result = plan(candidates, gates=gates)
    # Then whoop's datasets are deferred as circuit-open and demo's are planned
    assert sorted(users(result)) == ["d1", "d2"]
    assert result.skipped == Counter({SkipReason.BREAKER_OPEN.value: 2})
    assert result.skipped["provider_circuit_open"] == 2


def test_open_breaker_wins_over_probe_only() -> None:
    gates = {"whoop": ProviderGate(breaker_open=True, probe_only=True)}
    result = plan([due("w1"), due("w2")], gates=gates)
    assert result.jobs == []
    assert result.skipped == Counter({"provider_circuit_open": 2})


def test_probe_only_lets_exactly_one_job_of_the_provider_through() -> None:
    # Given whoop's cool-off is over (one probe allowed) and four whoop datasets are due
    gates = {"whoop": ProviderGate(probe_only=True), "demo": OPEN}
    candidates = [due(f"w{n}", next_sync_at=NOW - 100 + n) for n in range(4)] + [
        due("d1", provider="demo"),
        due("d2", provider="demo"),
    ]
    # When the tick plans
    result = plan(candidates, gates=gates)
    # Then one whoop job goes (the oldest), the rest wait as circuit-open, demo is unaffected
    whoop_jobs = [job for job in result.jobs if job.provider == "whoop"]
    assert [job.key.user_id for job in whoop_jobs] == ["w0"]
    assert sorted(job.key.user_id for job in result.jobs if job.provider == "demo") == ["d1", "d2"]
    assert result.skipped == Counter({"provider_circuit_open": 3})


def test_probe_only_overrides_a_larger_quota() -> None:
    gates = {"whoop": ProviderGate(probe_only=True, max_jobs=50)}
    result = plan([due(f"w{n}") for n in range(5)], gates=gates)
    assert len(result.jobs) == 1


def test_probe_only_is_not_spent_on_a_running_dataset() -> None:
    # Given the oldest whoop dataset is already running
    gates = {"whoop": ProviderGate(probe_only=True)}
    candidates = [due("busy", next_sync_at=NOW - 500, lease_expires_at=NOW + 60), due("free", next_sync_at=NOW - 10)]
    # Then the probe goes to the next one
    result = plan(candidates, gates=gates)
    assert users(result) == ["free"]
    assert result.skipped == Counter({"running": 1})


def test_max_jobs_caps_each_provider_per_tick() -> None:
    # Given whoop may take 2 jobs this tick and demo 3; five of each are due
    gates = {"whoop": ProviderGate(max_jobs=2), "demo": ProviderGate(max_jobs=3)}
    candidates = [due(f"w{n}") for n in range(5)] + [due(f"d{n}", provider="demo") for n in range(5)]
    # When the tick plans
    result = plan(candidates, gates=gates)
    # Then each provider gets its quota and the rest wait for the next tick
    per_provider = Counter(job.provider for job in result.jobs)
    assert per_provider == Counter({"whoop": 2, "demo": 3})
    assert result.skipped == Counter({"provider_tick_quota": 5})


def test_max_jobs_keeps_the_oldest_due() -> None:
    gates = {"whoop": ProviderGate(max_jobs=2)}
    candidates = [
        due("newest", next_sync_at=NOW - 1),
        due("oldest", next_sync_at=NOW - 300),
        due("middle", next_sync_at=NOW - 100),
    ]
    assert users(plan(candidates, gates=gates)) == ["oldest", "middle"]


def test_skipped_datasets_do_not_use_up_the_quota() -> None:
    # Given a quota of 1 and an older dataset that is queued already
    gates = {"whoop": ProviderGate(max_jobs=1)}
    candidates = [
        due("queued", next_sync_at=NOW - 300, queued_job_id="run-1", queued_at=NOW - 5),
        due("waiting", next_sync_at=NOW - 100),
    ]
    # Then the quota goes to the next one
    result = plan(candidates, gates=gates)
    assert users(result) == ["waiting"]
    assert result.skipped == Counter({"already_queued": 1})


def test_max_jobs_zero_sends_nothing() -> None:
    result = plan([due("w1")], gates={"whoop": ProviderGate(max_jobs=0)})
    assert result.jobs == []
    assert result.skipped == Counter({"provider_tick_quota": 1})


def test_no_quota_means_no_limit() -> None:
    result = plan([due(f"w{n}") for n in range(200)], gates={"whoop": ProviderGate(max_jobs=None)})
    assert len(result.jobs) == 200


def test_jobs_are_ordered_oldest_next_sync_first() -> None:
    # Given candidates in no particular order
    candidates = [
        due("c", next_sync_at=NOW - 10),
        due("a", next_sync_at=NOW - 1_000),
        due("d", next_sync_at=NOW),
        due("b", next_sync_at=NOW - 500, provider="demo"),
    ]
    # When the tick plans
    result = plan(candidates)
    # Then the longest overdue comes first, across providers
    assert users(result) == ["a", "b", "c", "d"]


def test_equal_due_times_are_ordered_by_dataset_id() -> None:
    candidates = [due(name, next_sync_at=NOW - 5) for name in ["u3", "u1", "u2"]]
    assert users(plan(candidates)) == ["u1", "u2", "u3"]


def test_one_mixed_tick_counts_every_reason() -> None:
    # Given one candidate for every outcome
    gates = {
        "whoop": ProviderGate(max_jobs=1),
        "broken": ProviderGate(breaker_open=True),
        "demo": OPEN,
    }
    candidates = [
        due("planned", next_sync_at=NOW - 900),
        due("over-quota", next_sync_at=NOW - 800),
        due("future", next_sync_at=NOW + 60),
        due("running", provider="demo", lease_expires_at=NOW + 60),
        due("queued", provider="demo", queued_job_id="j", queued_at=NOW - 10),
        due("on-demand", provider="demo", data_type="sleep"),
        due("unknown", provider="gone"),
        due("open", provider="broken"),
        due("stale-claim", provider="demo", queued_job_id="j", queued_at=NOW - CLAIM_TTL - 1),
    ]
    # When the tick plans
    result = plan(candidates, gates=gates, on_demand=frozenset({("demo", "sleep")}))
    # Then exactly two jobs go and each other candidate is counted once under its reason
    assert users(result) == ["planned", "stale-claim"]
    assert result.skipped == Counter(
        {
            "provider_tick_quota": 1,
            "not_due": 1,
            "running": 1,
            "already_queued": 1,
            "on_demand_only": 1,
            "unknown_provider": 1,
            "provider_circuit_open": 1,
        }
    )
    assert len(result.jobs) + sum(result.skipped.values()) == len(candidates)


def test_planning_does_not_change_the_candidates() -> None:
    candidates = [due("b", next_sync_at=NOW - 1), due("a", next_sync_at=NOW - 2)]
    plan(candidates)
    assert [d.key.user_id for d in candidates] == ["b", "a"]


# --- what a tick saw of each provider ---------------------------------------------------------------


def test_the_plan_counts_per_provider_what_was_due_planned_and_deferred() -> None:
    # Given whoop may take 2 jobs, 5 whoop datasets are due (one running), and demo's breaker is open
    gates = {"whoop": ProviderGate(max_jobs=2), "demo": ProviderGate(breaker_open=True)}
    candidates = [due(f"w{n}", next_sync_at=NOW - 500 + n) for n in range(4)] + [
        due("busy", lease_expires_at=NOW + 30),
        due("d1", provider="demo", next_sync_at=NOW - 900),
    ]
    # When the tick plans
    result = plan(candidates, gates=gates)
    # Then whoop saw 4 due (the running one never reached its gate), 2 planned, 2 left for the quota,
    # and its oldest waiting dataset is the first one
    assert result.providers["whoop"] == ProviderTick(
        due=4, planned=2, deferred_by_quota=2, deferred_by_breaker=0, oldest_due_at=NOW - 500
    )
    assert result.providers["demo"] == ProviderTick(due=1, deferred_by_breaker=1)


def test_a_provider_with_nothing_due_has_no_entry() -> None:
    assert "demo" not in plan([due("u1")]).providers


def test_a_per_connection_quota_counts_each_connection_separately() -> None:
    # Given a provider whose limit is per connection: one job per connection and tick
    gates = {"binance": ProviderGate(max_jobs=1, per_connection=True)}
    candidates = [
        due("u1", provider="binance", connection="k1", data_type="balances", next_sync_at=NOW - 30),
        due("u1", provider="binance", connection="k1", data_type="trades", next_sync_at=NOW - 20),
        due("u2", provider="binance", connection="k2", data_type="balances", next_sync_at=NOW - 10),
    ]
    # When the tick plans
    result = plan(candidates, gates=gates)
    # Then each connection gets its one job; k1's second waits
    assert [(job.key.connection_id, job.key.data_type) for job in result.jobs] == [
        ("k1", "balances"),
        ("k2", "balances"),
    ]
    assert result.skipped == Counter({"provider_tick_quota": 1})


def test_a_probe_is_one_job_for_the_provider_even_when_its_quota_is_per_connection() -> None:
    gates = {"binance": ProviderGate(probe_only=True, per_connection=True)}
    candidates = [due(f"u{n}", provider="binance", connection=f"k{n}") for n in range(3)]
    assert len(plan(candidates, gates=gates).jobs) == 1


# --- provider quotas ----------------------------------------------------------------------------------

TICK = 60.0
WHOOP_WINDOWS = (
    RateWindow(requests=100, per_seconds=60, burst=10),
    RateWindow(requests=10_000, per_seconds=86_400, burst=1_000),
)


def test_a_daily_window_sets_the_quota_with_no_headroom() -> None:
    # Given WHOOP's 100/minute and 10,000/day (9,000 of which refill over the day)
    quota = tick_quota(WHOOP_WINDOWS, tick_interval_seconds=TICK, weight_per_sync=1)
    # Then the day window is the tighter one: 9,000 / 1,440 ticks = 6.25 syncs per tick
    assert quota.window == WHOOP_WINDOWS[1]
    assert quota.per_tick == pytest.approx(6.25)


def test_a_window_no_longer_than_the_tick_keeps_its_headroom() -> None:
    # Given the old single bucket: 2 per second
    quota = tick_quota((RateWindow.per_second(2.0, 2),), tick_interval_seconds=TICK, weight_per_sync=1)
    # Then the quota is what it was: 2 * 60 * 1.5
    assert quota.per_tick == pytest.approx(180.0)


def test_the_quota_counts_the_weight_of_a_sync() -> None:
    # Given syncs that make 4 calls each
    quota = tick_quota(WHOOP_WINDOWS, tick_interval_seconds=TICK, weight_per_sync=4)
    assert quota.per_tick == pytest.approx(6.25 / 4)


def test_a_sync_never_counts_as_less_than_one_call() -> None:
    quota = tick_quota(WHOOP_WINDOWS, tick_interval_seconds=TICK, weight_per_sync=0.2)
    assert quota.per_tick == pytest.approx(6.25) and quota.weight_per_sync == 1


def test_fractions_of_the_quota_carry_over_from_tick_to_tick() -> None:
    # Given 0.4 syncs per tick and a provider that always has more due
    credit, planned = None, []
    for _ in range(10):
        available = quota_credit(0.4, credit, 1.0)
        jobs = jobs_allowed(available)
        planned.append(jobs)
        credit = available - jobs
    # Then it starts as if idle (one tick plus one job), then plans one job every 2-3 ticks
    assert planned == [1, 0, 1, 0, 1, 0, 0, 1, 0, 1]


def test_a_tick_fired_twice_gets_no_second_quota() -> None:
    first = quota_credit(6.25, 0.5, 1.0)
    left = first - jobs_allowed(first)
    assert jobs_allowed(quota_credit(6.25, left, 0.0)) == 0


def test_an_idle_provider_does_not_save_up_more_than_one_tick_and_one_job() -> None:
    assert quota_credit(6.25, 7.0, 30.0) == pytest.approx(7.25)


def test_over_a_day_the_plan_never_exceeds_the_daily_window() -> None:
    # Given WHOOP's windows, syncs of 3 calls each, and a fleet that always has more due
    quota = tick_quota(WHOOP_WINDOWS, tick_interval_seconds=TICK, weight_per_sync=3)
    credit: float | None = None
    calls = 0
    for _ in range(1_440):
        available = quota_credit(quota.per_tick, credit, 1.0)
        jobs = jobs_allowed(available)
        credit = available - jobs
        calls += 3 * jobs
    # Then a day's planned calls stay within 10,000 (and use most of what refills)
    assert 8_900 <= calls <= 10_000


@pytest.mark.parametrize(("per_tick", "jobs"), [(0.1, 1), (1.0, 1), (2.25, 3), (9.0, 9)])
def test_a_per_connection_quota_is_at_least_one_job(per_tick: float, jobs: int) -> None:
    assert per_connection_jobs(per_tick) == jobs


# --- how much a quota stretches the schedule ---------------------------------------------------------


def test_a_quota_that_keeps_up_stretches_nothing() -> None:
    seen = ProviderTick(due=5, planned=5, oldest_due_at=NOW - 7200)
    factor = stretch_factor(
        seen, per_tick=6.25, now=NOW, tick_interval_seconds=TICK, schedule_every_seconds=3600, per_connection=False
    )
    assert factor == 1.0


def test_a_backlog_stretches_the_interval_by_how_many_intervals_it_takes_to_serve() -> None:
    # Given 1,000 hourly datasets due and 7 syncs per tick (420 an hour)
    seen = ProviderTick(due=1_000, planned=7, deferred_by_quota=993, oldest_due_at=NOW - 60)
    factor = stretch_factor(
        seen, per_tick=7, now=NOW, tick_interval_seconds=TICK, schedule_every_seconds=3600, per_connection=False
    )
    # Then each dataset comes round every 1 + 1000/420 hours
    assert factor == pytest.approx(1 + 1000 / 420)


def test_the_oldest_wait_shows_the_stretch_once_the_backlog_is_settled() -> None:
    # Given few due now, but the oldest has waited 2 intervals past its time
    seen = ProviderTick(due=10, planned=7, deferred_by_quota=3, oldest_due_at=NOW - 7200)
    factor = stretch_factor(
        seen, per_tick=7, now=NOW, tick_interval_seconds=TICK, schedule_every_seconds=3600, per_connection=False
    )
    assert factor == pytest.approx(3.0)


def test_the_report_says_in_one_sentence_that_syncs_are_spaced_out() -> None:
    # Given WHOOP's daily window and 1,000 hourly datasets due
    quota = tick_quota(WHOOP_WINDOWS, tick_interval_seconds=TICK, weight_per_sync=1)
    seen = ProviderTick(due=1_000, planned=6, deferred_by_quota=994, oldest_due_at=NOW - 120)
    # When the tick reports it
    report = quota_report(
        "whoop",
        seen,
        quota,
        now=NOW,
        tick_interval_seconds=TICK,
        schedule_every_seconds=3600,
        per_connection=False,
    )
    # Then the numbers and the sentence say what happens
    assert report["due"] == 1_000 and report["planned"] == 6 and report["deferred_by_quota"] == 994
    assert report["oldest_due_age_seconds"] == 120
    assert report["stretch_factor"] == pytest.approx(1 + 1000 / 375, abs=0.01)
    assert report["summary"] == (
        "whoop: 1,000 datasets due, 6.2 per tick allowed by 10,000 requests/day; "
        "scheduled syncs are spaced out evenly (about 3.7x their interval)"
    )


def test_the_report_names_the_weight_of_a_sync_and_a_per_connection_quota() -> None:
    quota = tick_quota(
        (RateWindow(requests=6_000, per_seconds=60, burst=600),), tick_interval_seconds=TICK, weight_per_sync=20
    )
    report = quota_report(
        "binance",
        ProviderTick(due=1, planned=1),
        quota,
        now=NOW,
        tick_interval_seconds=TICK,
        schedule_every_seconds=300,
        per_connection=True,
    )
    assert report["summary"] == (
        "binance: 1 dataset due, all within the 405 per tick per connection "
        "allowed by 6,000 requests/minute at about 20 per sync"
    )
    assert report["stretch_factor"] == 1.0


def test_the_report_of_a_provider_with_nothing_due() -> None:
    quota = tick_quota(WHOOP_WINDOWS, tick_interval_seconds=TICK, weight_per_sync=1)
    report = quota_report(
        "whoop", None, quota, now=NOW, tick_interval_seconds=TICK, schedule_every_seconds=None, per_connection=False
    )
    assert report["due"] == 0 and report["oldest_due_age_seconds"] is None
    assert report["summary"] == "whoop: nothing due (6.2 per tick allowed by 10,000 requests/day)"


# --- shards ---------------------------------------------------------------------------------------


def test_there_are_sixteen_distinct_shards() -> None:
    shards = all_shards()
    assert SCHEDULE_SHARDS == 16
    assert len(shards) == 16
    assert len(set(shards)) == 16
    assert shards[0] == "s00"
    assert shards[-1] == "s15"


@pytest.mark.parametrize(
    ("dataset_id", "shard"),
    [
        ("u1#c1#recovery", "s08"),
        ("u1#c1#sleep", "s00"),
        ("u1#c1#workouts", "s04"),
        ("u2#whoop#cycles", "s05"),
        ("alice#broker#transactions", "s06"),
    ],
)
def test_schedule_shard_is_stable_across_releases(dataset_id: str, shard: str) -> None:
    # Given ids whose shard is stored in DynamoDB today
    # Then the same ids map to the same shards (changing the hash would strand them)
    assert schedule_shard(dataset_id) == shard


def test_schedule_shard_is_deterministic() -> None:
    ids = [f"user-{n}#conn#recovery" for n in range(50)]
    assert [schedule_shard(i) for i in ids] == [schedule_shard(i) for i in ids]


def test_schedule_shard_only_returns_listed_shards() -> None:
    listed = set(all_shards())
    assert {schedule_shard(f"u{n}#c#t") for n in range(2_000)} <= listed


def test_schedule_shard_spreads_datasets_over_every_shard() -> None:
    # Given 1,000 dataset ids
    ids = [DatasetKey(f"user-{n}", "whoop", "recovery").dataset_id for n in range(1_000)]
    # When each gets its shard
    counts = Counter(schedule_shard(i) for i in ids)
    # Then every shard is used and none holds more than twice its fair share
    assert set(counts) == set(all_shards())
    fair_share = 1_000 / SCHEDULE_SHARDS
    assert max(counts.values()) <= 2 * fair_share
    assert min(counts.values()) >= fair_share / 2


def test_one_users_datasets_spread_over_several_shards() -> None:
    # Given one user with many datasets
    ids = [DatasetKey("u1", f"conn-{c}", data_type).dataset_id for c in range(10) for data_type in ("a", "b", "c", "d")]
    # Then they do not all land on one partition
    assert len({schedule_shard(i) for i in ids}) >= 8
