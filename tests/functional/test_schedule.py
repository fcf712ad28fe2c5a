"""The scheduled fan-out end to end: tick -> SQS jobs -> worker, pause and resume, operator routes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.model import DatasetKey
from chalicelib.store.items import STATE_SORT_KEY, StateItem
from tests.functional.conftest import Harness

SCHEDULED = ["cycle", "recovery", "sleep"]  # the demo's "workout" is on demand only (schedule_every_seconds null)


def body(response: Any) -> Any:
    return json.loads(response.body)


def jobs(bodies: list[str]) -> list[tuple[str, str, str]]:
    return sorted((j["connection_id"], j["data_type"], j["trigger"]) for j in map(json.loads, bodies))


def test_a_tick_queues_every_due_scheduled_dataset_and_the_worker_syncs_them(harness: Harness) -> None:
    # Given two new connections (their scheduled datasets are due at once)
    harness.put_connection(connection_id="c1")
    harness.put_connection(connection_id="c2")
    # When the schedule fires
    summary = harness.tick()
    # Then one job per scheduled data type was queued, none for the on-demand one
    queued = harness.queued_bodies()
    assert summary["due"] == 6 and summary["queued"] == 6
    assert jobs(queued) == sorted((c, dt, "schedule") for c in ("c1", "c2") for dt in SCHEDULED)
    # When the worker runs them
    assert harness.deliver(queued).payload == {"batchItemFailures": []}
    # Then each dataset is synced by the schedule and its next sync is an hour away
    runs = body(harness.read("/users/u1/connections/c1/runs"))["runs"]
    assert sorted((r["data_type"], r["trigger"], r["status"]) for r in runs) == [
        (dt, "schedule", "succeeded") for dt in SCHEDULED
    ]
    state = harness.container.store.get_state(DatasetKey("u1", "c1", "recovery"))
    assert state is not None and state.next_sync_at == pytest.approx(harness.clock.now() + 3600, abs=5)


def test_nothing_is_queued_again_until_the_schedule_comes_round(harness: Harness) -> None:
    # Given a connection whose datasets the schedule just synced
    harness.put_connection()
    harness.sync_everything_due()
    # When the schedule fires again a minute later
    harness.clock.advance(60)
    again = harness.tick()
    # Then nothing is due
    assert again["queued"] == 0 and harness.queued_bodies() == []
    # When the hour has passed
    harness.clock.advance(3600)
    later = harness.tick()
    # Then the three scheduled datasets are due again
    assert later["queued"] == 3
    assert len(harness.queued_bodies()) == 3


def test_a_second_tick_before_the_worker_ran_queues_nothing_twice(harness: Harness) -> None:
    # Given a tick whose jobs are still waiting in the queue
    harness.put_connection()
    first = harness.tick()
    # When the schedule fires again (or EventBridge delivers the same tick twice)
    second = harness.tick()
    # Then the queued datasets are skipped: each has one job, not two
    assert first["queued"] == 3
    assert second["queued"] == 0 and second["skipped"] == {"already_queued": 3}
    assert len(harness.queued_bodies()) == 3


def test_a_running_dataset_is_skipped_and_a_scheduled_job_never_overlaps_a_read(harness: Harness) -> None:
    # Given a dataset whose sync a reader is running right now (it holds the lease)
    harness.put_connection()
    key = DatasetKey("u1", "c1", "recovery")
    harness.container.store.acquire_lease(key, "demo", "reader:1", harness.clock.now(), 120)
    # When the schedule fires
    summary = harness.tick()
    # Then the running dataset is not queued, the others are
    assert summary["queued"] == 2 and summary["skipped"] == {"running": 1}
    assert ("c1", "recovery", "schedule") not in jobs(harness.queued_bodies())


def test_paused_and_needs_review_connections_and_on_demand_types_are_not_scheduled(harness: Harness) -> None:
    # Given an active, a paused and a broken connection
    harness.put_connection(connection_id="ok")
    harness.put_connection(connection_id="paused", status="PAUSED")
    harness.put_connection(connection_id="broken", settings={"invalid_credentials": True})
    harness.sync_everything_due()  # "broken" fails 3 times (once per data type) and needs review
    # When the schedule fires after every dataset is due again
    harness.clock.advance(7200)
    summary = harness.tick()
    # Then only the active connection's scheduled datasets are queued
    assert jobs(harness.queued_bodies()) == [("ok", dt, "schedule") for dt in SCHEDULED]
    assert summary["queued"] == 3


def test_pause_stops_the_fan_out_and_resume_starts_it_again(harness: Harness) -> None:
    # Given due datasets and a paused scheduler
    harness.put_connection()
    paused = harness.operator("POST", "/sync/pause")
    assert paused.status_code == 200 and body(paused)["status"] == "paused"
    # When the schedule fires
    summary = harness.tick()
    # Then nothing is queued, and a manual run is refused with a clear error
    assert summary["queued"] == 0 and harness.queued_bodies() == []
    refused = harness.operator("POST", "/sync/run")
    assert refused.status_code == 409 and body(refused)["error"]["code"] == "scheduler_paused"
    # When the operator resumes and runs the fan-out now
    resumed = harness.operator("POST", "/sync/resume")
    assert body(resumed)["status"] == "running"
    ran = harness.operator("POST", "/sync/run")
    # Then the due datasets are queued
    assert ran.status_code == 200 and body(ran)["tick"]["queued"] == 3
    assert len(harness.queued_bodies()) == 3


def test_a_scheduled_job_that_arrives_while_paused_is_dropped_and_stays_due(harness: Harness) -> None:
    # Given scheduled jobs in the queue, then a pause
    harness.put_connection()
    harness.tick()
    queued = harness.queued_bodies()
    harness.operator("POST", "/sync/pause")
    # When the worker receives them
    assert harness.deliver(queued).payload == {"batchItemFailures": []}
    # Then nothing was synced and, after resume, the next tick queues them again
    state = harness.container.store.get_state(DatasetKey("u1", "c1", "recovery"))
    assert state is not None and state.last_successful_at is None and state.queued_job_id is None
    harness.operator("POST", "/sync/resume")
    assert harness.tick()["queued"] == 3


def test_one_failing_job_never_fails_the_others_of_its_batch(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given ten queued jobs, one of which will crash the worker (its connection lookup blows up)
    for index in range(4):
        harness.put_connection(connection_id=f"c{index}")
    harness.tick()
    queued = harness.queued_bodies()[:10]
    assert len(queued) == 10
    doomed = json.loads(queued[3])["connection_id"]
    store = harness.container.store
    real_get_connection = store.get_connection

    def flaky_get_connection(user_id: str, connection_id: str) -> Any:
        if connection_id == doomed:
            raise RuntimeError("DynamoDB had a bad day")
        return real_get_connection(user_id, connection_id)

    monkeypatch.setattr(store, "get_connection", flaky_get_connection)
    # When the worker gets the batch
    result = harness.deliver(queued).payload
    # Then only that connection's messages are reported for redelivery; the other jobs synced
    failed_ids = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    expected = {f"msg-{i}" for i, b in enumerate(queued) if json.loads(b)["connection_id"] == doomed}
    assert failed_ids == expected and "msg-3" in failed_ids
    synced = [
        b
        for b in queued
        if (state := store.get_state(DatasetKey("u1", json.loads(b)["connection_id"], json.loads(b)["data_type"])))
        is not None
        and state.last_successful_at is not None
    ]
    assert len(synced) == 10 - len(expected)


def test_a_dataset_deleted_after_the_index_was_read_is_not_claimed(harness: Harness) -> None:
    # Given a due dataset whose state item vanishes between the query and the claim
    harness.put_connection()
    store = harness.container.store
    due = store.due_datasets("s00", harness.clock.now(), 100) + [
        d for shard in range(1, 16) for d in store.due_datasets(f"s{shard:02d}", harness.clock.now(), 100)
    ]
    assert len(due) == 3
    StateItem(due[0].key.dataset_id, STATE_SORT_KEY).delete()
    # When the tick claims all three in one transaction
    won = store.claim_due([(d, f"job-{i}") for i, d in enumerate(due)], harness.clock.now(), 2100)
    # Then the other two are claimed and the deleted one is not brought back
    assert won == ["job-1", "job-2"]
    assert store.get_state(due[0].key) is None


def test_operator_routes_need_an_operator_token(harness: Harness) -> None:
    # Given a user token and no token at all
    for method, path in (
        ("POST", "/sync/run"),
        ("POST", "/sync/pause"),
        ("POST", "/sync/resume"),
        ("GET", "/sync/status"),
    ):
        call = getattr(harness.client.http, method.lower())
        # Then a user gets 403 and an anonymous caller 401, both as JSON errors
        as_user = call(path, headers=harness.headers("u1"))
        assert as_user.status_code == 403 and body(as_user)["error"]["code"] == "forbidden"
        anonymous = call(path)
        assert anonymous.status_code == 401 and body(anonymous)["error"]["code"] == "unauthorized"
    # And /health needs nothing
    health = harness.client.http.get("/health")
    assert health.status_code == 200 and body(health) == {"status": "ok"}


def test_sync_status_reports_ticks_statistics_health_and_each_provider(harness: Harness) -> None:
    # Given one tick that synced three datasets
    harness.put_connection()
    harness.sync_everything_due()
    harness.clock.advance(10)
    # When the operator asks
    status = body(harness.operator("GET", "/sync/status"))
    # Then it shows the schedule, the statistics and the provider's limits
    assert status["status"] == "running" and status["is_running"] is True
    assert status["last_tick"]["queued"] == 3
    assert status["next_tick_in_seconds"] == 50
    stats = status["statistics"]
    assert (stats["total_syncs"], stats["successful_syncs"], stats["failed_syncs"]) == (3, 3, 0)
    assert stats["success_rate_percent"] == 100.0 and stats["health_status"] == "healthy"
    assert stats["average_sync_duration_seconds"] is not None
    demo = status["providers"]["demo"]
    assert demo["breaker"]["state"] == "closed"
    assert demo["bucket"]["capacity"] == 10 and demo["concurrency"]["running_syncs"] == 0
    assert demo["statistics"]["total_syncs"] == 3
    assert status["config"]["tick_interval_seconds"] == 60


def test_operator_posts_accept_what_plain_curl_sends(harness: Harness) -> None:
    # Given the operator's curl -d '' (form-encoded) and curl -X POST (no Content-Type)
    token = harness.headers("ops", operator=True)["Authorization"]
    form = harness.client.http.post(
        "/sync/pause", headers={"Authorization": token, "Content-Type": "application/x-www-form-urlencoded"}
    )
    bare = harness.client.http.post("/sync/resume", headers={"Authorization": token})
    # Then both work
    assert form.status_code == 200 and body(form)["status"] == "paused"
    assert bare.status_code == 200 and body(bare)["status"] == "running"


DAILY = {
    "demo": {
        "type": "demo",
        "policies": {data_type: {"schedule_every_seconds": 3600} for data_type in SCHEDULED},
        "limits": {"windows": [{"requests": 1000, "per_seconds": 86400}]},
    }
}


def test_a_daily_limit_spaces_the_schedule_out_and_the_status_says_so(make_harness: Any) -> None:
    # Given a provider allowing 1,000 calls a day (900 refill over the day: 0.625 syncs per one-minute tick)
    from chalicelib.providers import registry_from_config

    harness = make_harness(registry=registry_from_config(DAILY))
    for index in range(4):
        harness.put_connection(connection_id=f"c{index}")
    # When the schedule fires with 12 datasets due
    first = harness.tick()
    # Then it plans what the day allows (a fresh provider starts with one tick and one job), not all 12
    assert first["due"] == 12 and first["queued"] == 1
    assert first["skipped"] == {"provider_tick_quota": 11}
    # And the next tick a minute later plans the next one: a fraction carried over, oldest first
    harness.clock.advance(60)
    second = harness.tick()
    assert second["queued"] == 1 and second["skipped"] == {"already_queued": 1, "provider_tick_quota": 10}
    # When the operator asks
    status = body(harness.operator("GET", "/sync/status"))
    demo = status["providers"]["demo"]
    # Then the provider shows its window, its scope and what the tick saw against its quota
    assert demo["scope"] == "provider"
    assert [(w["limit"], w["capacity"], w["tokens"]) for w in demo["windows"]] == [("1,000 requests/day", 100, 100)]
    quota = demo["quota"]
    assert (quota["due"], quota["planned"], quota["deferred_by_quota"]) == (11, 1, 10)
    assert quota["per_tick"] == 0.625 and quota["limited_by"] == "1,000 requests/day"
    assert quota["oldest_due_age_seconds"] == 60
    assert quota["stretch_factor"] == pytest.approx(1 + 11 / (0.625 * 60), abs=0.01)
    assert quota["summary"] == (
        "demo: 11 datasets due, 0.6 per tick allowed by 1,000 requests/day; "
        "scheduled syncs are spaced out evenly (about 1.3x their interval)"
    )
    assert "credit" not in quota
    # And the health says the same, as a warning
    assert status["statistics"]["health_status"] == "warning"
    assert quota["summary"] in status["statistics"]["health_reasons"]
